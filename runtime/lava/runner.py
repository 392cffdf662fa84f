"""The supervised runner: simulate a Lava program in a child process group with a timeout.

The child (``python -m sbcompile.runtime.lava.child``) leads its own process group, which Lava's
processes inherit. The runner watches for a result, a failure record, the child's exit
or the timeout; whatever happens it then kills the group and removes the ``/dev/shm/psm_*``
shared-memory segments that the group had mapped (seen by polling ``/proc``), so no process and no
segment outlives the run. This is also how a successful run ends: Lava's own ``stop()`` is slow
and can hang, and the results are already on disk. If this process dies first (even by SIGKILL),
the child notices through a pipe and ends the group itself; the run folder (which also holds the
child's temp dir) is removed on every path, and each run starts by sweeping what a run killed
together with its child left (``group.sweep_orphans``). Lava is never imported here.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

from sbcompile.errors import SbcError
from sbcompile.runtime.lava import child
from sbcompile.runtime.lava.failure import read_failure
from sbcompile.runtime.lava.group import POLL_S, end_group, group_segments, new_run_dir, \
    record_segments, sweep_orphans
from sbcompile.runtime.lava.program import LavaProgram
from sbcompile.runtime.lava.topology import FORMS
from sbcompile.runtime.reference import check_feeds



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
    sweep_orphans()
    run = new_run_dir()
    try:
        for member, data in program.to_members().items():
            (run / child.PROGRAM_FILES[member]).write_bytes(data)
        with open(run / child.FEEDS_FILE, "wb") as f:
            np.savez(f, **feeds)
        (run / child.OPTIONS_FILE).write_text(json.dumps({"form": form}))
        (run / child.TMP_DIR).mkdir()
        with _terminal_progress(progress) as report:
            outcome = _supervise(run, timeout, report)
        if outcome != "done":
            raise SbcError(_failure_message(run, outcome, timeout))
        with np.load(run / child.RESULT_ARRAYS, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        info = json.loads((run / child.RESULT_INFO).read_text())
    except OSError as e:  # the temp folder itself failed (a full or read-only disk)
        raise SbcError(f"Lava run folder {run}: {e.strerror or e}") from None
    finally:
        shutil.rmtree(run, ignore_errors=True)
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
    gone and its segments removed when this returns, however it returns (an exception, or a
    signal the CLI turned into one). The child holds the read end of a pipe whose write end only
    this process has: when this process dies, even by SIGKILL, the child sees end-of-file and ends
    the group itself (``child.watch_parent``)."""
    lifeline_r, lifeline_w = os.pipe()
    env = {**os.environ, "TMPDIR": str(run / child.TMP_DIR)}  # multiprocessing's pymp-* folders
    with open(run / "child.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "sbcompile.runtime.lava.child", str(run),
                                 str(lifeline_r)], stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                pass_fds=(lifeline_r,), env=env)
    os.close(lifeline_r)
    group = proc.pid
    segments: set[str] = set()
    deadline = time.monotonic() + timeout
    reported = -1
    try:
        while True:
            seen = group_segments(group)
            if not seen <= segments:
                segments |= seen
                record_segments(run, segments)
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
        end_group(group, segments)
        proc.wait()
        os.close(lifeline_w)


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
