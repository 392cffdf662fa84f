"""The supervised runner: simulate a Lava program in a child process group with a timeout.

The child (``python -m sbcompile.runtime.lava.child``) leads its own process group, which Lava's
processes inherit. The runner watches for a result, a failure record, the child's exit
or the timeout; whatever happens it then kills the group and removes the ``/dev/shm/psm_*``
shared-memory segments that the group had mapped (seen by polling ``/proc``), so no process and no
segment outlives the run. This is also how a successful run ends: Lava's own ``stop()`` is slow
and can hang, and the results are already on disk. Lava is never imported here.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from sbcompile.errors import SbcError
from sbcompile.runtime.lava import child
from sbcompile.runtime.lava.failure import read_failure
from sbcompile.runtime.lava.program import LavaProgram
from sbcompile.runtime.lava.topology import FORMS
from sbcompile.runtime.reference import check_feeds

SHM_DIR = Path("/dev/shm")
SHM_PREFIX = "psm_"
POLL_S = 0.05


class LavaRun(dict):
    """Graph outputs plus the counts and acc of every spike layer, keyed by IR value name.
    ``op_counts``: per spike layer, the counts measured from the simulated spikes (see
    ``opcounts``); ``compute_flops``: per compute node (embedded-processor work), estimated
    float operations; ``steps``: simulated time steps; ``timing_s``: build and run seconds."""

    def __init__(self, arrays: dict[str, np.ndarray], info: dict) -> None:
        super().__init__(arrays)
        self.op_counts: dict = info["layers"]
        self.compute_flops: dict = info["compute_flops"]
        self.steps: int = info["steps"]
        self.timing_s: dict = info.get("timing_s", {})


def simulate(program: LavaProgram, feeds: dict[str, np.ndarray], form: str = "fused",
             timeout: float = 120.0, progress: Callable[[int], None] | None = None) -> LavaRun:
    """Run ``program`` on ``feeds`` in a supervised child; raise SbcError on failure or timeout."""
    if form not in FORMS:
        raise SbcError(f"unknown Lava graph form '{form}' (known: {', '.join(FORMS)})")
    feeds = check_feeds(program.interface(), feeds)
    with tempfile.TemporaryDirectory(prefix="sbc-lava-") as tmp:
        run = Path(tmp)
        for member, data in program.to_members().items():
            (run / child.PROGRAM_FILES[member]).write_bytes(data)
        np.savez(run / child.FEEDS_FILE, **feeds)
        (run / child.OPTIONS_FILE).write_text(json.dumps({"form": form}))
        with _terminal_progress(progress) as report:
            outcome = _supervise(run, timeout, report)
        if outcome != "done":
            raise SbcError(_failure_message(run, outcome, timeout))
        with np.load(run / child.RESULT_ARRAYS, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        info = json.loads((run / child.RESULT_INFO).read_text())
    return LavaRun(arrays, info)


@contextlib.contextmanager
def _terminal_progress(progress: Callable[[int], None] | None):
    """The caller's progress callback, else a status line on a terminal, else none."""
    if progress is not None or not sys.stderr.isatty():
        yield progress
        return
    from rich.console import Console

    with Console(stderr=True).status("simulating on Lava (starting)") as status:
        yield lambda steps: status.update(f"simulating on Lava: {steps} steps")


def _supervise(run: Path, timeout: float, progress: Callable[[int], None] | None) -> str:
    """Start the child and wait; returns done | failed | exited | timeout. The child's group is
    gone and its segments removed when this returns."""
    log = open(run / "child.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "sbcompile.runtime.lava.child", str(run)],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    log.close()
    group = proc.pid
    segments: set[str] = set()
    deadline = time.monotonic() + timeout
    reported = -1
    try:
        while True:
            segments |= group_segments(group)
            if read_failure(run) is not None:
                return "failed"
            if (run / child.RESULT_INFO).exists():  # written last, atomically
                return "done"
            if proc.poll() is not None:
                return "failed" if read_failure(run) is not None else "exited"
            if time.monotonic() > deadline:
                return "timeout"
            reported = _report_progress(run, progress, reported)
            time.sleep(POLL_S)
    finally:
        _end_group(proc, group, segments)


def _report_progress(run: Path, progress: Callable[[int], None] | None, reported: int) -> int:
    if progress is None:
        return reported
    try:
        steps = int((run / child.PROGRESS_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return reported
    if steps != reported:
        progress(steps)
    return steps


def _end_group(proc: subprocess.Popen, group: int, segments: set[str]) -> None:
    """Freeze the group, note its last segments, kill it, reap the child, unlink the segments."""
    _signal_group(group, signal.SIGSTOP)
    segments |= group_segments(group)
    _signal_group(group, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 5.0
    while group_processes(group) and time.monotonic() < deadline:
        time.sleep(POLL_S)
    for name in segments:
        try:
            (SHM_DIR / name).unlink()
        except FileNotFoundError:
            pass


def _signal_group(group: int, sig: int) -> None:
    try:
        os.killpg(group, sig)
    except ProcessLookupError:
        pass


def group_processes(group: int) -> list[int]:
    """Live processes of a process group (zombies excluded)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


def group_segments(group: int) -> set[str]:
    """Names of the /dev/shm/psm_* segments the group's processes have mapped or open."""
    found = set()
    for pid in group_processes(group):
        try:
            maps = Path(f"/proc/{pid}/maps").read_text()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        for line in maps.splitlines():
            path = line.rsplit(" ", 1)[-1]
            if path.startswith(f"{SHM_DIR}/{SHM_PREFIX}"):
                found.add(path.rsplit("/", 1)[1])
    return found


def _failure_message(run: Path, outcome: str, timeout: float) -> str:
    failure = read_failure(run)
    if failure is not None:
        return f"Lava simulation failed in {failure['where']}: {failure['error']}"
    if outcome == "timeout":
        steps = _steps_done(run)
        return (f"Lava simulation exceeded its timeout of {timeout:g} s"
                + (f" after {steps} steps" if steps is not None else ""))
    return f"Lava simulation ended without a result: {_last_log_line(run)}"


def _steps_done(run: Path) -> int | None:
    try:
        return int((run / child.PROGRESS_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return None


def _last_log_line(run: Path) -> str:
    lines = [ln for ln in (run / "child.log").read_text(errors="replace").splitlines()
             if ln.strip()]
    return lines[-1].strip() if lines else "the child process exited silently"
