"""This process's resident memory, read from /proc (no extra dependency): the current and peak
resident set, and the peak inside one stage of work (``StagePeak``), sampled by a thread so that
the process's own high-water mark (what ``/usr/bin/time`` and benchmarks read) stays untouched."""
from __future__ import annotations

import os
import resource
import threading
from dataclasses import dataclass

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    """The resident set now (0 where /proc is not there)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:
        return 0


def _proc_field_bytes(path: str, field: str) -> int | None:
    """A ``field: N kB`` line of a /proc file, in bytes; None where it is not there."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def peak_rss_bytes() -> int:
    """The process's resident high-water mark so far."""
    peak = _proc_field_bytes("/proc/self/status", "VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def available_bytes() -> int | None:
    """Memory the machine can still give (MemAvailable), or None where it is unknown."""
    return _proc_field_bytes("/proc/meminfo", "MemAvailable")


@dataclass(frozen=True)
class StageRecord:
    """One stage's wall time and resident memory (bytes): at its start and its peak."""
    name: str
    seconds: float
    peak: int
    start: int


class StagePeak:
    """The largest resident set seen while the block runs (sampled every ``interval`` s, plus
    at its start and end), for a per-stage figure. Use as a context manager; ``peak`` and
    ``start`` are bytes."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.start = self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, rss_bytes())

    def __enter__(self) -> "StagePeak":
        self.start = self.peak = rss_bytes()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def mib(n: float) -> float:
    return n / 2 ** 20
