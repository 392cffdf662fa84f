"""The simulation child: ``python -m sbcompile.runtime.lava.child RUN_DIR``.

Reads the program, feeds and options the runner left in RUN_DIR, simulates, and writes
``result.npz`` (arrays) and ``result.json`` (op counts, steps; written last), or a failure record.
It never stops Lava itself (``stop()`` is slow, and can hang after a model raised): the runner
kills the whole process group and removes its shared-memory segments once either file appears.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import NoReturn

import numpy as np

from sbcompile.artifact import write_atomic
from sbcompile.runtime.lava.failure import record_failure
from sbcompile.runtime.lava.program import ARRAYS_MEMBER, PLAN_MEMBER, LavaProgram

PROGRAM_FILES = {PLAN_MEMBER: "plan.json", ARRAYS_MEMBER: "arrays.safetensors"}
FEEDS_FILE, OPTIONS_FILE = "feeds.npz", "options.json"
RESULT_ARRAYS, RESULT_INFO, PROGRESS_FILE = "result.npz", "result.json", "progress"


def main(run_dir: str) -> NoReturn:
    run = Path(run_dir)
    try:
        from sbcompile.runtime.lava.network import LavaNetwork  # imports Lava (slow)

        options = json.loads((run / OPTIONS_FILE).read_text())
        program = LavaProgram.from_members({m: (run / f).read_bytes()
                                            for m, f in PROGRAM_FILES.items()})
        with np.load(run / FEEDS_FILE, allow_pickle=False) as data:
            feeds = {k: data[k] for k in data.files}
        started = time.perf_counter()
        network = LavaNetwork(program, feeds, options["form"], run_dir)
        built = time.perf_counter()
        network.run(progress=lambda steps: _write_progress(run, steps))
        ran = time.perf_counter()
        results, counts = network.collect()
    except BaseException as exc:
        record_failure(run, "the Lava simulation", exc)
        sys.stdout.flush()
        os._exit(3)
    counts["timing_s"] = {"build": built - started, "run": ran - built}
    write_atomic(run / RESULT_ARRAYS, lambda f: np.savez(f, **results))
    write_atomic(run / RESULT_INFO, lambda f: f.write(json.dumps(counts).encode()))
    os._exit(0)  # leave Lava's processes to the runner


def _write_progress(run: Path, steps: int) -> None:
    write_atomic(run / PROGRESS_FILE, lambda f: f.write(str(steps).encode()))


if __name__ == "__main__":
    main(sys.argv[1])
