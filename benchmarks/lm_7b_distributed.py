"""Layer-parallel compile of the SpikingBrain-7B-shaped stack (``lm_7b_stream``'s layers, preset
``spikingbrain``, no target programs) on a local Dask cluster against the serial streamed
compile, in one run and the same conditions: the first ``--layers`` layers serially in this
process, then on ``--workers`` single-threaded worker processes. Checks that every member of
every layer artifact has the same sha256 both ways, and estimates the full 28-layer stack's
time on W workers from the measured per-layer times: the chain of float forwards (build +
forward of each layer) is the critical path, the compiles (build + compile + write) spread over
the workers, so time(W) ~ max(chain of 28 + one compile, work of 28 / W).
``--kill-after S`` SIGKILLs, S seconds into the distributed run, the worker process running a
layer's compile task: the layer must be recomputed and every member still match.
Merges the run into ``benchmarks/results/lm_7b_distributed.json`` (keyed by layers and workers,
and ``kill`` for a run with a killed worker).

    nice python benchmarks/lm_7b_distributed.py --layers 4 --workers 2
    nice python benchmarks/lm_7b_distributed.py --layers 2 --workers 2 --kill-after 40
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import platform
import shutil
import signal
import tempfile
import threading
import time
import zipfile
from datetime import date, datetime, timezone
from pathlib import Path

import numpy as np

from sbcompile.config import make_config
from sbcompile.distributed import compile_stream_distributed, dask_client
from sbcompile.streaming import StackShape, compile_stream, decoder_layer, layer_path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "lm_7b_distributed.json"
FULL = 28


def member_digests(path: Path) -> dict[str, str]:
    with zipfile.ZipFile(path) as z:
        return {name: hashlib.sha256(z.read(name)).hexdigest() for name in z.namelist()}


def estimate(serial: list[dict], workers: int) -> dict:
    """28-layer time on ``workers`` workers from the serial run's per-layer means."""
    chain = float(np.mean([r["build_s"] + r["forward_s"] for r in serial]))
    task = float(np.mean([r["build_s"] + r["compile_s"] + r["write_s"] for r in serial]))
    serial_28 = float(np.mean([r["seconds"] for r in serial])) * FULL
    time_w = max(FULL * chain + task, FULL * (chain + task) / workers)
    return {"chain_s_per_layer": chain, "compile_task_s_per_layer": task,
            "serial_28_layers_s": serial_28, "workers": workers, "estimate_28_layers_s": time_w,
            "estimate_speedup": serial_28 / time_w}


def kill_a_compiling_worker(client, after: float, log: dict) -> threading.Thread:
    """In ``after`` seconds, SIGKILL the worker process of a running compile task (recorded in
    ``log``: the task, the pid, when)."""
    def kill() -> None:
        time.sleep(after)
        for address, keys in client.processing().items():
            compiling = [k for k in keys if str(k).startswith("compile-")]
            if compiling:
                pid = client.run(os.getpid, workers=[address])[address]
                os.kill(pid, signal.SIGKILL)
                log.update(task=str(compiling[0]), pid=pid, at_s=after)
                return
        log.update(task=None, note="no compile task was running")

    thread = threading.Thread(target=kill, daemon=True)
    thread.start()
    return thread


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--kill-after", type=float, default=None, metavar="S")
    args = ap.parse_args()
    shape = StackShape(layers=args.layers).check()
    calib = np.random.default_rng(0).standard_normal(
        (args.batch, args.tokens, shape.hidden)).astype(np.float32)
    config = make_config("spikingbrain", {"targets": ""})
    layers = [functools.partial(decoder_layer, shape, i, args.tokens) for i in range(args.layers)]
    work = Path(tempfile.mkdtemp(prefix="sbc-dist-"))
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    try:
        t0 = time.perf_counter()
        serial = compile_stream(layers, calib, config, work / "serial",
                                on_layer=lambda r: print(f"serial layer {r['layer']}: "
                                                         f"{r['seconds']:.1f} s", flush=True))
        serial_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        killed: dict = {}
        with dask_client(workers=args.workers) as client:
            up = time.perf_counter() - t0
            if args.kill_after is not None:
                kill_a_compiling_worker(client, args.kill_after, killed)
            dist = compile_stream_distributed(
                layers, calib, config, work / "dist", client,
                on_layer=lambda r: print(f"distributed layer {r['layer']} done at "
                                         f"{time.perf_counter() - t0:.1f} s", flush=True))
            dist_s = time.perf_counter() - t0
        same = [member_digests(layer_path(work / "serial", i)) ==
                member_digests(layer_path(work / "dist", i)) for i in range(args.layers)]
        members = sum(len(member_digests(layer_path(work / "dist", i)))
                      for i in range(args.layers))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "layers": args.layers, "workers": args.workers, "tokens": args.tokens,
        "batch": args.batch, "started_utc": started, "load_average_at_end": os.getloadavg(),
        "serial_s": serial_s, "distributed_s": dist_s, "cluster_start_s": up,
        "speedup": serial_s / dist_s, "members_compared": members, "killed_worker": killed,
        "bit_identical_layers": same, "all_members_bit_identical": all(same),
        "serial_peak_rss_mb": max(r["peak_rss_mb"] for r in serial),
        "worker_peak_rss_mb": max(r["peak_rss_mb"] for r in dist),
        "estimate": estimate(serial, args.workers),
        "estimates_28_layers": {w: estimate(serial, w)["estimate_28_layers_s"]
                                for w in (2, 4, 8, 14, 28)},
        "serial_per_layer": [{k: r[k] for k in ("layer", "build_s", "compile_s", "write_s",
                                                "forward_s", "seconds", "cpu_s")}
                             for r in serial],
        "distributed_per_layer": [{k: r[k] for k in ("layer", "build_s", "compile_s", "write_s",
                                                     "seconds", "cpu_s")} for r in dist],
        "date": str(date.today()),
        "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} CPUs, Python "
                   f"{platform.python_version()}, shared with other users' runs"}
    for key in ("serial_s", "distributed_s", "speedup", "all_members_bit_identical",
                "members_compared", "killed_worker", "estimate", "estimates_28_layers"):
        print(f"{key}: {result[key]}")
    runs = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    runs[f"{args.layers}x{args.workers}" + ("_kill" if args.kill_after is not None else "")] = \
        result
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(runs, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
