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
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

from sbcompile.errors import SbcError
from sbcompile.runtime.lava import child
from sbcompile.runtime.lava.failure import read_failure
from sbcompile.runtime.lava.group import POLL_S, end_group, group_processes, mapped_segments, \
    new_run_dir, record_segments, sweep_orphans
from sbcompile.memory import available_bytes
from sbcompile.runtime.lava.memory import estimate_bytes, gb, oom_kills
from sbcompile.runtime.lava.program import LavaProgram
from sbcompile.runtime.lava.shapes import infer_shapes
from sbcompile.runtime.lava.topology import FORMS
from sbcompile.runtime.reference import check_feeds


class LavaRun(dict):
    """Graph outputs plus the counts and acc of every spike layer, keyed by IR value name.
    ``op_counts``: per spike layer, the counts measured from the simulated spikes (see
    ``opcounts``); ``compute_flops``: per compute node (embedded-processor work), estimated
    float operations; ``steps``: simulated time steps; ``timing_s``: build, run and collect
    (results gathered and written) seconds;
    ``memory_estimate_bytes``: the pre-flight estimate of the simulation's memory."""

    def __init__(self, arrays: dict[str, np.ndarray], info: dict) -> None:
        super().__init__(arrays)
        self.op_counts: dict = info["layers"]
        self.compute_flops: dict = info["compute_flops"]
        self.steps: int = info["steps"]
        self.timing_s: dict = info.get("timing_s", {})
        self.memory_estimate_bytes: int = info.get("memory_estimate_bytes", 0)


def simulate(program: LavaProgram, feeds: dict[str, np.ndarray], form: str = "fused",
             timeout: float = 120.0, progress: Callable[[int], None] | None = None,
             bands: int | None = None) -> LavaRun:
    """Run ``program`` on ``feeds`` (a batch runs as one simulation, its samples side by side) in
    a supervised child; raise SbcError on failure or timeout, and before starting when the
    estimated memory exceeds what the machine has available. ``bands``: processes of the fused
    form (default: the CPUs)."""
    if form not in FORMS:
        raise SbcError(f"unknown Lava graph form '{form}' (known: {', '.join(FORMS)})")
    feeds = check_feeds(program.interface(), feeds)
    shapes = {name: p.shape for name, p in program.params().items()}
    shapes.update(infer_shapes(program.plan, program.params(), feeds))
    estimate = estimate_bytes(program.plan, shapes, form, bands)
    available = available_bytes()
    if available is not None and estimate > available:
        raise SbcError(f"the Lava simulation needs about {gb(estimate)} (estimate) and "
                       f"{gb(available)} is available: run fewer samples at once")
    sweep_orphans()
    run = new_run_dir()
    try:
        for member, data in program.to_members().items():
            (run / child.PROGRAM_FILES[member]).write_bytes(data)
        with open(run / child.FEEDS_FILE, "wb") as f:
            np.savez(f, **feeds)
        (run / child.OPTIONS_FILE).write_text(json.dumps({"form": form, "bands": bands}))
        (run / child.TMP_DIR).mkdir()
        samples = len(next(iter(feeds.values()))) if feeds else 1
        with _terminal_progress(progress, samples) as report:
            outcome, status = _supervise(run, timeout, report)
        if outcome != "done":
            raise SbcError(_failure_message(run, outcome, status, timeout, estimate))
        with np.load(run / child.RESULT_ARRAYS, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        info = json.loads((run / child.RESULT_INFO).read_text())
    except OSError as e:  # the temp folder itself failed (a full or read-only disk)
        raise SbcError(f"Lava run folder {run}: {e.strerror or e}") from None
    finally:
        shutil.rmtree(run, ignore_errors=True)
    info["memory_estimate_bytes"] = estimate
    return LavaRun(arrays, info)


@contextlib.contextmanager
def _terminal_progress(progress: Callable[[int], None] | None, samples: int):
    """The caller's progress callback (steps done), else a status line on a terminal (steps
    done, spike layers finished of all, samples), else none."""
    if progress is not None or not sys.stderr.isatty():
        yield progress and (lambda state: progress(state["steps"]))
        return
    from rich.console import Console

    plural = "s" if samples != 1 else ""
    with Console(stderr=True).status("simulating on Lava (starting)") as status:
        yield lambda state: status.update(
            f"simulating on Lava: {state['steps']} steps, {state['finished']}/{state['layers']} "
            f"spike layers done, {samples} sample{plural} side by side")


def _supervise(run: Path, timeout: float,
               progress: Callable[[dict], None] | None) -> tuple[str, int | None]:
    """Start the child and wait; returns (done | failed | exited | oom | timeout, the child's
    exit status if it ended). The child's group is gone and its segments removed when this
    returns, however it returns (an exception, or a signal the CLI turned into one). The child
    holds the read end of a pipe whose write end only this process has: when this process dies,
    even by SIGKILL, the child sees end-of-file and ends the group itself
    (``child.watch_parent``). A member of the group that vanishes while the kernel's
    out-of-memory count rises ends the run at once (its peers would wait for it forever)."""
    lifeline_r, lifeline_w = os.pipe()
    # TMPDIR: multiprocessing's pymp-* folders; one BLAS thread per Lava process, as the fused
    # form already runs a process per CPU (more threads only contend for the same cores)
    env = {**os.environ, "TMPDIR": str(run / child.TMP_DIR), "OPENBLAS_NUM_THREADS": "1",
           "OMP_NUM_THREADS": "1"}
    oom_before = oom_kills()
    with open(run / "child.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "sbcompile.runtime.lava.child", str(run),
                                 str(lifeline_r)], stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                pass_fds=(lifeline_r,), env=env)
    os.close(lifeline_r)
    group = proc.pid
    segments: set[str] = set()
    members: set[int] = set()
    deadline = time.monotonic() + timeout
    reported: dict | None = None
    try:
        while True:
            alive = set(group_processes(group))
            seen = mapped_segments(alive)
            if not seen <= segments:
                segments |= seen
                record_segments(run, segments)
            if read_failure(run) is not None:
                return "failed", None
            if (run / child.RESULT_INFO).exists():  # written last, atomically
                return "done", None
            if proc.poll() is not None:
                return ("failed" if read_failure(run) is not None else "exited"), proc.returncode
            if members - alive and oom_kills() != oom_before:
                return "oom", None
            members |= alive
            if time.monotonic() > deadline:
                return "timeout", None
            reported = _report_progress(run, progress, reported)
            time.sleep(POLL_S)
    finally:
        end_group(group, segments)
        proc.wait()
        os.close(lifeline_w)


def _report_progress(run: Path, progress: Callable[[dict], None] | None,
                     reported: dict | None) -> dict | None:
    if progress is None:
        return reported
    state = _progress_state(run)
    if state is not None and state != reported:
        progress(state)
    return state


def _progress_state(run: Path) -> dict | None:
    """What the child last wrote: steps done, spike layers finished of all."""
    try:
        return json.loads((run / child.PROGRESS_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return None


def _failure_message(run: Path, outcome: str, status: int | None, timeout: float,
                     estimate: int) -> str:
    failure = read_failure(run)
    memory = f"estimated need {gb(estimate)}, {gb(available_bytes() or 0)} available now"
    if failure is not None:
        if failure.get("type") == "MemoryError":
            return f"Lava simulation ran out of memory in {failure['where']} ({memory})"
        return f"Lava simulation failed in {failure['where']}: {failure['error']}"
    if outcome == "timeout":
        state = _progress_state(run)
        return (f"Lava simulation exceeded its timeout of {timeout:g} s"
                + (f" after {state['steps']} steps" if state is not None else ""))
    if outcome == "oom":
        return f"Lava simulation ran out of memory: the kernel killed one of its processes " \
               f"({memory})"
    if status is not None and status < 0:
        name = signal.Signals(-status).name if -status in signal.valid_signals() else -status
        cause = "out of memory, most likely: " if -status == signal.SIGKILL else ""
        return f"Lava simulation ended by signal {name} ({cause}{memory})"
    detail = _last_log_line(run)
    return f"Lava simulation ended with exit code {status} ({memory}): {detail}"


def _last_log_line(run: Path) -> str:
    lines = [ln for ln in (run / "child.log").read_text(errors="replace").splitlines()
             if ln.strip()]
    return lines[-1].strip() if lines else "the child process exited silently"
