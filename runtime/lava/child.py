"""The simulation child: ``python -m sbcompile.runtime.lava.child RUN_DIR LIFELINE_FD``.

Reads the program, feeds and options the runner left in RUN_DIR, simulates, and writes
``result.npz`` (arrays) and ``result.json`` (op counts, steps; written last), or a failure record;
``progress`` holds the steps done and how many of the spike layers have finished their windows.
It never stops Lava itself (``stop()`` is slow, and can hang after a model raised): the runner
kills the whole process group and removes its shared-memory segments once either file appears.
Until then the child watches LIFELINE_FD, the read end of a pipe only the runner can write: end of
file means the runner died without cleaning up, and the child ends its group, unlinks the
group's segments and removes RUN_DIR itself.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import NoReturn

import numpy as np

from sbcompile.output_path import write_atomic
from sbcompile.runtime.lava.failure import record_failure
from sbcompile.runtime.lava.group import end_group, group_segments
from sbcompile.runtime.lava.program import ARRAYS_MEMBER, PLAN_MEMBER, LavaProgram
from sbcompile.runtime.lava.tensors import finished

PROGRAM_FILES = {PLAN_MEMBER: "plan.json", ARRAYS_MEMBER: "arrays.safetensors"}
FEEDS_FILE, OPTIONS_FILE = "feeds.npz", "options.json"
RESULT_ARRAYS, RESULT_INFO, PROGRESS_FILE = "result.npz", "result.json", "progress"
TMP_DIR = "tmp"  # the child's TMPDIR (multiprocessing's pymp-* folders land here)
ORPHANED_EXIT = 4


def main(run_dir: str, lifeline_fd: int) -> NoReturn:
    run = Path(run_dir)
    watcher = threading.Thread(target=watch_parent, args=(run, lifeline_fd), daemon=True)
    watcher.start()
    try:
        from sbcompile.runtime.lava.network import LavaNetwork  # imports Lava (slow)

        options = json.loads((run / OPTIONS_FILE).read_text())
        program = LavaProgram.from_members({m: (run / f).read_bytes()
                                            for m, f in PROGRAM_FILES.items()})
        with np.load(run / FEEDS_FILE, allow_pickle=False) as data:
            feeds = {k: data[k] for k in data.files}
        started = time.perf_counter()
        network = LavaNetwork(program, feeds, options["form"], run_dir, options.get("bands"))
        built = time.perf_counter()
        layers = len(program.plan["encoders"])
        network.run(progress=lambda steps: _write_progress(run, steps, layers))
        ran = time.perf_counter()
        results, counts = network.collect()
        write_atomic(run / RESULT_ARRAYS, lambda f: np.savez(f, **results))
        counts["timing_s"] = {"build": built - started, "run": ran - built,
                              "collect": time.perf_counter() - ran}
        write_atomic(run / RESULT_INFO, lambda f: f.write(json.dumps(counts).encode()))
    except BaseException as exc:
        record_failure(run, "the Lava simulation", exc)
    sys.stdout.flush()
    watcher.join()  # the runner ends the group (and this process) once it has read the result
    os._exit(ORPHANED_EXIT)


def watch_parent(run: Path, lifeline_fd: int) -> None:
    """Block until the runner's end of the lifeline closes; then, if the runner did not end the
    group first, end it (every member but this process), unlink its segments, remove the run
    folder and exit."""
    while True:
        try:
            if not os.read(lifeline_fd, 1):
                break
        except InterruptedError:
            continue
        except OSError:
            break
    group = os.getpgrp()
    end_group(group, group_segments(group), spare=os.getpid())
    shutil.rmtree(run, ignore_errors=True)
    os._exit(ORPHANED_EXIT)


def _write_progress(run: Path, steps: int, layers: int) -> None:
    state = {"steps": steps, "finished": finished(run), "layers": layers}
    write_atomic(run / PROGRESS_FILE, lambda f: f.write(json.dumps(state).encode()))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
