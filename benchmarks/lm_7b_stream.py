"""Layer-by-layer compile of a SpikingBrain-7B-shaped stack (28 layers, hidden 3584, 28/4 heads,
head dim 128, intermediate 18944; random weights made per layer, never stored) under preset
``spikingbrain``, with ``sbcompile.streaming``: time per layer and peak memory against the goal
"peak RSS < 1.5 x int8 weight bytes + 2 GiB" (of the whole 28-layer stack), time linear in
layers. Calibration: ``--batch`` sequences of ``--tokens`` tokens of random hidden states. Each
spiking layer is written to a temporary directory (removed at the end unless ``--keep``); no
target programs are stored in it (``targets=``), as the Lava and Triton programs of a layer
this size are a deployment step of their own.
Prints a table and merges the run into benchmarks/results/lm_7b_stream.json (keyed by layers).

    python benchmarks/lm_7b_stream.py --layers 2
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
from datetime import date
from pathlib import Path

import numpy as np

from sbcompile.config import make_config
from sbcompile.streaming import StackShape, compile_stream, decoder_layer

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "lm_7b_stream.json"
GIB = 2 ** 30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=28)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--keep", type=Path, help="keep the layer artifacts in this directory")
    args = parser.parse_args()
    shape = StackShape(layers=args.layers).check()
    calib = np.random.default_rng(0).standard_normal(
        (args.batch, args.tokens, shape.hidden)).astype(np.float32)
    out_dir = args.keep or Path(tempfile.mkdtemp(prefix="sbc-stream-"))
    print(f"{'layer':>5} {'kind':>4} {'params M':>9} {'int8 MB':>8} {'s':>6} {'rss MB':>7} "
          f"{'peak MB':>8} {'zero':>6} {'slot3':>6}")

    def show(r: dict) -> None:
        sp = r["totals"].get("sparsity", {})
        print(f"{r['layer']:>5} {('swa' if r['layer'] % 2 else 'gla'):>4} "
              f"{r['params'] / 1e6:>9.1f} {r['int8_weight_bytes'] / 1e6:>8.1f} "
              f"{r['seconds']:>6.1f} {r['rss_mb']:>7.0f} {r['peak_rss_mb']:>8.0f} "
              f"{sp.get('count_zero', 0):>6.3f} {sp.get('spike_slot_window3', 0):>6.3f}",
              flush=True)

    try:
        config = make_config("spikingbrain", {"targets": ""})
        records = compile_stream((lambda i=i: decoder_layer(shape, i, args.tokens)
                                  for i in range(args.layers)), calib, config, out_dir,
                                 on_layer=show)
        disk = sum(p.stat().st_size for p in out_dir.glob("layer*.sbc"))
    finally:
        if args.keep is None:
            shutil.rmtree(out_dir, ignore_errors=True)
    result = summarise(records, shape, disk)
    result.update({"tokens": args.tokens, "batch": args.batch, "date": str(date.today()),
                   "machine": f"{platform.machine()}, {_cpus()} CPUs, {platform.python_version()}"})
    for key, value in result.items():
        if key != "per_layer":
            print(f"{key}: {value}")
    runs = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    runs[str(args.layers)] = result
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(runs, indent=1, sort_keys=True) + "\n")


def summarise(records: list[dict], shape: StackShape, disk: int) -> dict:
    """Totals, the memory goal for this depth and for the full 28 layers (int8 bytes of a GLA
    and an SWA layer repeat), and the per-layer records."""
    int8 = sum(r["int8_weight_bytes"] for r in records)
    by_kind = {r["layer"] % 2: r["int8_weight_bytes"] for r in records}
    full_int8 = sum(by_kind.get(i % 2, 0) for i in range(28)) if len(by_kind) == 2 else None
    peak = max(r["peak_rss_mb"] for r in records) * 2 ** 20
    seconds = [r["seconds"] for r in records]
    return {
        "layers": len(records), "shape": shape.__dict__, "seconds_total": sum(seconds),
        "seconds_per_layer": float(np.mean(seconds)),
        "seconds_28_layers_extrapolated": float(np.mean(seconds)) * 28,
        "int8_weight_bytes": int8, "artifact_bytes_on_disk": disk,
        "peak_rss_bytes": int(peak),
        "goal_bytes": int(1.5 * int8 + 2 * GIB),
        "goal_bytes_28_layers": int(1.5 * full_int8 + 2 * GIB) if full_int8 else None,
        "per_layer": [{k: v for k, v in r.items() if k != "totals"}
                      | {"sparsity": r["totals"].get("sparsity", {}),
                         "fidelity": r["totals"].get("fidelity", {})} for r in records]}


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    main()
