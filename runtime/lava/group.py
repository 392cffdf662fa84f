"""The simulation's process group and what it leaves behind: its live processes, the
``/dev/shm/psm_*`` segments they map, ending it, and the start-up sweep of what an earlier run
could not clean (its supervisor was SIGKILLed together with its child).

Read through ``/proc`` only; Lava is never imported here.
"""
from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

SHM_DIR = Path("/dev/shm")
SHM_PREFIX = "psm_"
RUN_PREFIX = "sbc-lava-"  # run folders are sbc-lava-<supervisor pid>-<random>
POLL_S = 0.05
SEGMENTS_FILE = "segments"  # in a run folder: the segments its group mapped


def group_processes(group: int) -> list[int]:
    """Live processes of a process group (zombies excluded)."""
    pids = []
    for pid, fields in _proc_stats():
        if int(fields[2]) == group and fields[0] != "Z":
            pids.append(pid)
    return pids


def _proc_stats():
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            yield int(entry.name), (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, PermissionError, IndexError):
            continue


def mapped_segments(pids) -> set[str]:
    """Names of the /dev/shm/psm_* segments these processes have mapped."""
    found = set()
    for pid in pids:
        try:
            maps = Path(f"/proc/{pid}/maps").read_text()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        for line in maps.splitlines():
            path = line.rsplit(" ", 1)[-1]
            if path.startswith(f"{SHM_DIR}/{SHM_PREFIX}"):
                found.add(path.rsplit("/", 1)[1])
    return found


def group_segments(group: int) -> set[str]:
    return mapped_segments(group_processes(group))


def end_group(group: int, segments: set[str], spare: int | None = None) -> None:
    """Freeze the group, note its last segments, kill it (all but ``spare``, the caller when it
    is a member), wait until it is gone and unlink the segments."""
    members = [p for p in group_processes(group) if p != spare]
    _signal(members, signal.SIGSTOP)
    segments |= mapped_segments(group_processes(group))
    if spare is None:
        try:
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            pass
    else:
        _signal([p for p in group_processes(group) if p != spare], signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while [p for p in group_processes(group) if p != spare] and time.monotonic() < deadline:
        time.sleep(POLL_S)
    unlink_segments(segments)


def _signal(pids, sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def unlink_segments(names) -> None:
    for name in names:
        try:
            (SHM_DIR / name).unlink()
        except FileNotFoundError:
            pass


def new_run_dir() -> Path:
    """A private run folder named after this (the supervising) process."""
    return Path(tempfile.mkdtemp(prefix=f"{RUN_PREFIX}{os.getpid()}-"))


def sweep_orphans() -> dict[str, int]:
    """Remove what dead runs left: run folders whose supervisor is gone, and the segments their
    supervisor recorded in them (``SEGMENTS_FILE``); nobody else's segment is touched. Returns
    the counts removed."""
    removed = {"run_dirs": 0, "segments": 0}
    for folder in Path(tempfile.gettempdir()).glob(f"{RUN_PREFIX}*-*"):
        owner = folder.name[len(RUN_PREFIX):].split("-", 1)[0]
        if owner.isdigit() and not _alive(int(owner)):
            try:
                names = (folder / SEGMENTS_FILE).read_text().split()
            except OSError:
                names = []
            unlink_segments(n for n in names if n.startswith(SHM_PREFIX))
            shutil.rmtree(folder, ignore_errors=True)
            removed["run_dirs"] += 1
            removed["segments"] += len(names)
    return removed


def record_segments(run: Path, names: set[str]) -> None:
    """Note the run's segments in its folder, for the sweep of a later run."""
    (run / SEGMENTS_FILE).write_text("\n".join(sorted(names)))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
