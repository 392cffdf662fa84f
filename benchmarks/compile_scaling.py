"""Compile time and peak memory against model size (goal: linear growth; a 20M-parameter
transformer compiles in under 15 s on 2 cores), and on the real-model corpus (``--real``).

Models: stacks of Llama-style decoder blocks (RMSNorm, GQA attention with rotary embeddings and a
sliding window, SwiGLU), exported to ONNX with torch; random weights. Each compile runs in a fresh
process that never imports torch, so its peak RSS is the compiler's own. Calibration: 4 sequences
of 64 tokens. Prints a table and writes benchmarks/results/compile_scaling.json.

    python benchmarks/compile_scaling.py

Real models (``--real``): every model of the corpus (benchmarks/fetch_models.py) compiled from
its ONNX file at its natural input size (the dims benchmarks/real_models.py pins) with
``--samples`` task-like calibration inputs (benchmarks/real_model_inputs.py) in one array per
input (samples on the batch axis, streamed in batches of ``calib_batch``), per preset, each in a
fresh process: seconds, peak RSS, and each stage's seconds and peak (the driver's ``-v``
figures). ``--targets`` sets the programs lowered (default: every default target), so the share
of one target's lowering shows by leaving it out. Writes
benchmarks/results/compile_scaling_real.json.

    python benchmarks/compile_scaling.py --real [--only NAME ...] [--samples 32]
        [--presets spikingbrain loihi2] [--targets lava,triton] [--calib-batch N]
        [--baseline REV]

``--baseline REV`` also compiles each model with the sources of git revision REV, just before
the current code (rows marked ``code``), so before/after ratios share the machine's load.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIZES = [  # (label, hidden, layers, heads, kv_heads, intermediate)
    ("1M", 128, 6, 2, 1, 344),
    ("10M", 256, 14, 4, 2, 688),
    ("20M", 384, 12, 6, 2, 1032),
    ("50M", 512, 17, 8, 4, 1376),
]
TOKENS, SEQS = 64, 4

CHILD = r"""
import json, sys, time
import numpy as np
from sbcompile.memory import mib, peak_rss_bytes
from sbcompile.pipeline import compile_model

def high_water_mb():  # VmHWM: this process's own peak (ru_maxrss survives exec on Linux)
    return mib(peak_rss_bytes())
path, seqs, tokens, hidden = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
calib = {"hidden_states": np.random.default_rng(0).standard_normal(
    (seqs, tokens, hidden)).astype(np.float32)}
base = high_water_mb()
t0 = time.perf_counter()
art = compile_model(path, "spikingbrain", calib=calib)
seconds = time.perf_counter() - t0
peak = high_water_mb()
print(json.dumps({"seconds": seconds, "peak_rss_mb": peak,
                  "compile_rss_mb": peak - base,
                  "params": art.baseline.param_count(),
                  "layers_spiked": art.report["totals"]["layers_spiked"],
                  "cosine": art.report["outputs_fidelity"]["output"]["cosine"]}))
"""


def export(hidden, layers, heads, kv_heads, intermediate, path: Path) -> None:
    import torch

    sys.path.insert(0, str(ROOT / "tests"))
    from models import DecoderBlock

    torch.manual_seed(0)
    model = torch.nn.Sequential(*[DecoderBlock(hidden, heads, kv_heads, intermediate, window=16)
                                  for _ in range(layers)]).eval()
    x = torch.randn(1, TOKENS, hidden)
    torch.onnx.export(model, (x,), str(path), input_names=["hidden_states"],
                      output_names=["output"], dynamo=True, external_data=False,
                      dynamic_shapes={"input": {0: torch.export.Dim("batch", min=1, max=64)}})


REAL_CHILD = r"""
import json, logging, sys, time
import numpy as np
from sbcompile.config import make_config
from sbcompile.memory import peak_rss_bytes, rss_bytes
from sbcompile.pipeline import compile_graph, load_model

stages, estimate = [], {}
class Stages(logging.Handler):
    def emit(self, record):
        if hasattr(record, "estimate"):
            estimate["mb"] = round(record.estimate.total / 2**20)
        if hasattr(record, "stage"):
            s = record.stage
            stages.append({"stage": s.name, "seconds": round(s.seconds, 2),
                           "peak_mb": round(s.peak / 2**20), "start_mb": round(s.start / 2**20)})
log = logging.getLogger("sbcompile.pipeline")
log.setLevel(logging.INFO)
log.addHandler(Stages())
model, feeds_path, shapes, preset, overrides = sys.argv[1:6]
with np.load(feeds_path) as z:
    n = 1 + max(int(k.split("/")[0]) for k in z.files)
    feeds = [{k.split("/", 1)[1]: z[k] for k in z.files if k.split("/")[0] == str(i)}
             for i in range(n)]
t0 = time.perf_counter()
graph = load_model(model, json.loads(shapes) or None)
load_s = time.perf_counter() - t0
first = {graph.values[i].shape[0] if graph.values[i].shape else None for i in graph.inputs}
same = all(f[k].shape == feeds[0][k].shape for f in feeds for k in f)
calib = ({k: np.concatenate([f[k] for f in feeds]) for k in feeds[0]}
         if len(first) == 1 and None not in first and same else feeds)
base = rss_bytes()
t0 = time.perf_counter()
art = compile_graph(graph, make_config(preset, json.loads(overrides)), calib)
seconds = time.perf_counter() - t0
print("ROW " + json.dumps({
    "seconds": round(seconds, 2), "load_s": round(load_s, 2),
    "peak_rss_mb": round(peak_rss_bytes() / 2**20), "start_rss_mb": round(base / 2**20),
    "params": graph.param_count(),
    "param_bytes": int(sum(p.nbytes for p in graph.params.values())),
    "streamed": isinstance(calib, dict), "estimate_mb": estimate.get("mb"),
    "targets": {t: s.get("lowered") for t, s in art.report.get("targets", {}).items()},
    "stages": stages}))
"""

TREE_PRELUDE = r"""
import importlib.abc, importlib.util, sys, tomllib
from pathlib import Path
TREE = Path(sys.argv.pop(1))
DIRS = {"sbcompile": "sbcompile", **tomllib.loads((TREE / "pyproject.toml").read_text())
        ["tool"]["setuptools"]["package-dir"]}
class SourceTree(importlib.abc.MetaPathFinder):  # sbcompile's packages from TREE, not the venv's
    def find_spec(self, name, path=None, target=None):
        if name in DIRS:
            where = TREE / DIRS[name]
            return importlib.util.spec_from_file_location(
                name, where / "__init__.py", submodule_search_locations=[str(where)])
sys.meta_path.insert(0, SourceTree())
"""


def source_tree(rev: str, tmp: str) -> Path:
    """The sources of git revision ``rev``, exported under ``tmp``."""
    tree = Path(tmp) / "baseline"
    tree.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], capture_output=True,
                             check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def real_models(args) -> None:
    """The ``--real`` section: the corpus compiled per preset, one fresh process each."""
    import numpy as np

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from fetch_models import MODELS, cache_dir
    from real_models import SPECS

    cache = cache_dir(None)
    names = args.only or [m.name for m in MODELS]
    overrides = {"calib_batch": str(args.calib_batch)} if args.calib_batch else {}
    if args.targets is not None:
        overrides["targets"] = args.targets
    rows = []
    out_path = ROOT / "benchmarks" / "results" / (args.out or "compile_scaling_real.json")
    with tempfile.TemporaryDirectory() as tmp:
        codes = [("baseline", source_tree(args.baseline, tmp))] if args.baseline else []
        for name in names:
            spec = SPECS[name]
            feeds = spec.feeds(np.random.default_rng(14), args.samples, cache)
            npz = Path(tmp) / f"{name}.npz"
            np.savez(npz, **{f"{i}/{k}": v for i, f in enumerate(feeds) for k, v in f.items()})
            for preset, (code, tree) in itertools.product(args.presets,
                                                          codes + [("current", None)]):
                child = ["-c", REAL_CHILD] if tree is None else \
                    ["-c", TREE_PRELUDE + REAL_CHILD, str(tree)]
                cmd = [sys.executable, *child, str(cache / f"{name}.onnx"), str(npz),
                       json.dumps(spec.shapes or {}), preset, json.dumps(overrides)]
                t0 = time.perf_counter()
                try:
                    out = subprocess.run(cmd, capture_output=True, text=True,
                                         timeout=args.timeout)
                except subprocess.TimeoutExpired:
                    out = subprocess.CompletedProcess(cmd, -9, "", f"timed out after "
                                                                   f"{args.timeout:.0f} s")
                wall = time.perf_counter() - t0
                lines = [ln for ln in out.stdout.splitlines() if ln.startswith("ROW ")]
                row = {"model": name, "preset": preset, "samples": args.samples,
                       "wall_s": round(wall, 1), **({"code": code} if codes else {})}
                if lines:
                    row.update(json.loads(lines[-1][4:]))
                else:
                    row["error"] = (out.stderr.strip().splitlines() or ["?"])[-1][:300]
                rows.append(row)
                _print_real(row)
                result = {"date": date.today().isoformat(), "machine": platform.processor()
                          or platform.machine(), "cpus": os.cpu_count(),
                          "samples": args.samples, "overrides": overrides,
                          "baseline": args.baseline, "rows": rows}
                out_path.write_text(json.dumps(result, indent=1))  # after every row
    print(f"wrote {out_path}")


def _goal_mb(row: dict) -> float:
    """The memory goal of issue 19: 1.5 GB plus 3x the parameter bytes."""
    return 1536 + 3 * row["param_bytes"] / 2 ** 20


def real_table(rows: list[dict]) -> str:
    """The markdown table of a ``--real`` results file: per model and preset, seconds, peak RSS
    against the goal (1.5 GB + 3x parameter bytes), the estimate, the slowest stage and the
    Lava lowering's share."""
    lines = ["| model | params | preset | compile s | peak MB | goal MB | estimate MB | slowest "
             "stage | lower lava s / peak MB | targets lowered |", "|" + "---|" * 10]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | | {r['preset']} | error: {r['error'][:80]} "
                         "| | | | | | |")
            continue
        stages = {s["stage"]: s for s in r["stages"]}
        slow = max(r["stages"], key=lambda s: s["seconds"])
        lava = stages.get("lower lava")
        lava_cell = f"{lava['seconds']:.1f} / {lava['peak_mb']}" if lava else "-"
        lowered = ", ".join(t for t, ok in r["targets"].items() if ok) or "-"
        lines.append(
            f"| {r['model']} | {r['params'] / 1e6:.2f} M | {r['preset']} | {r['seconds']:.1f} "
            f"| {r['peak_rss_mb']} | {_goal_mb(r):.0f} "
            f"| {r.get('estimate_mb', '-')} | {slow['stage']} {slow['seconds']:.1f} s "
            f"| {lava_cell} | {lowered} |")
    return "\n".join(lines)


def _print_real(row: dict) -> None:
    if "error" in row:
        print(f"{row['model']:>16} {row['preset']:>12} {row.get('code', ''):>8}  "
              f"error: {row['error']}", flush=True)
        return
    budget = _goal_mb(row)
    worst = max(row["stages"], key=lambda s: s["peak_mb"], default=None)
    slowest = max(row["stages"], key=lambda s: s["seconds"], default=None)
    print(f"{row['model']:>16} {row['preset']:>12} {row.get('code', ''):>8} "
          f"{row['params'] / 1e6:6.2f}M "
          f"{row['seconds']:7.2f} s  peak {row['peak_rss_mb']:6d} MB (goal {budget:5.0f}, "
          f"estimate {row.get('estimate_mb')})  "
          f"peak at {worst and worst['stage']}, slowest {slowest and slowest['stage']} "
          f"{slowest and slowest['seconds']} s  lowered {row['targets']}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--real", action="store_true", help="the real-model section")
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--presets", nargs="*", default=["spikingbrain", "loihi2"])
    ap.add_argument("--targets", default=None, help="--set targets=... (default: the preset's)")
    ap.add_argument("--calib-batch", type=int, default=None)
    ap.add_argument("--out", default=None, help="results file name under benchmarks/results")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per compile")
    ap.add_argument("--baseline", default=None, help="git revision compiled too, just before "
                    "the current code, model by model (before/after on the same load)")
    ap.add_argument("--table", default=None, help="print the markdown table of a --real "
                    "results file under benchmarks/results")
    args = ap.parse_args()
    if args.table:
        print(real_table(json.loads((ROOT / "benchmarks" / "results" / args.table).read_text())
                         ["rows"]))
        return
    if args.real:
        real_models(args)
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, hidden, layers, heads, kv, inter in SIZES:
            path = Path(tmp) / f"{label}.onnx"
            export(hidden, layers, heads, kv, inter, path)
            out = subprocess.run([sys.executable, "-c", CHILD, str(path), str(SEQS), str(TOKENS),
                                  str(hidden)], capture_output=True, text=True, check=True)
            row = {"model": label, "hidden": hidden, "layers": layers,
                   **json.loads(out.stdout.strip().splitlines()[-1])}
            rows.append(row)
            print(f"{label:>4} {row['params'] / 1e6:6.1f}M params {layers:3d} layers "
                  f"{row['seconds']:7.2f} s  peak RSS {row['peak_rss_mb']:7.0f} MB "
                  f"(compile {row['compile_rss_mb']:6.0f} MB)  cosine {row['cosine']:.4f}",
                  flush=True)
    result = {"date": date.today().isoformat(), "machine": platform.processor() or
              platform.machine(), "cpus": __import__("os").cpu_count(), "rows": rows}
    out_path = ROOT / "benchmarks" / "results" / "compile_scaling.json"
    out_path.write_text(json.dumps(result, indent=1))
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
