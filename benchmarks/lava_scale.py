"""Lava at real scale: a compiled model's Lava run against the reference interpreter, with wall
time and peak memory.

Runs ``simulate`` (the fused form, samples side by side) on the first N samples of an .npz, and
the reference interpreter on the same feeds; every integer value (encoder counts, synapse
accumulators) must be equal and the float outputs within the exactness contract's tolerance.
Peak memory is the largest sum over this process and all its descendants (the supervised child
and Lava's processes) of the proportional set size (PSS: shared pages divided among the
processes sharing them), sampled every 50 ms; the largest sum of resident set sizes (shared pages
counted in every process) is reported beside it. Also times the lowering (``lower``) and its peak
RSS growth.

    python benchmarks/lava_scale.py ART.sbc FEEDS.npz [--samples 1,8] [--timeout 900]
        [--label NAME] [--bands N] [--out benchmarks/results/lava_scale.json]
    python benchmarks/lava_scale.py --corpus NAME [--preset spikingbrain]

``--corpus`` compiles a model of the real-model corpus (``benchmarks/real_models.py``: its
calibration inputs, 4 samples, at its natural input size) with the Lava target and runs its
first evaluation input.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import threading
import time
from datetime import date
from pathlib import Path

import sys

import numpy as np

from sbcompile.artifact import Artifact
from sbcompile.backends.lava import lower
from sbcompile.npz import load_npz
from sbcompile.runtime.lava.runner import simulate
from sbcompile.runtime.reference import evaluate

sys.path.insert(0, str(Path(__file__).resolve().parent))
RESULTS = Path(__file__).resolve().parent / "results" / "lava_scale.json"


def _tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def _memory(pids: list[int]) -> tuple[int, int]:
    """(sum of PSS, sum of RSS) in bytes."""
    pss = rss = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss += int(line.split()[1]) * 1024
                elif line.startswith("Rss:"):
                    rss += int(line.split()[1]) * 1024
        except OSError:
            continue
    return pss, rss


class PeakMemory:
    """Samples the memory of this process tree in a thread until stopped."""

    def __enter__(self):
        self.peak_pss = self.peak_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.is_set():
            pss, rss = _memory(_tree(os.getpid()))
            self.peak_pss, self.peak_rss = max(self.peak_pss, pss), max(self.peak_rss, rss)
            time.sleep(0.05)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def compare(graph, program, feeds: dict, run) -> dict:
    """Integer values equal bit for bit, outputs within tolerance (raises AssertionError)."""
    integer = [e["counts"] for e in program.plan["encoders"]]
    integer += [s["acc"] for s in program.plan["synapses"]]
    ref = evaluate(graph, feeds, keep=integer)
    for name in integer:
        np.testing.assert_array_equal(run[name], ref[name], err_msg=name)
    worst = 0.0
    for name in graph.outputs:
        np.testing.assert_allclose(run[name], ref[name], rtol=1e-5, atol=1e-6, err_msg=name)
        worst = max(worst, float(np.abs(run[name] - ref[name]).max(initial=0)))
    return {"integer_values": len(integer),
            "integer_elements": int(sum(ref[n].size for n in integer)),
            "max_output_abs_diff": worst}


def corpus_model(name: str, preset: str):
    """(spiking graph, feeds of one evaluation input) of a corpus model compiled for Lava."""
    import real_models
    from fetch_models import cache_dir
    from sbcompile.config import make_config
    from sbcompile.pipeline import compile_graph, load_model

    spec = real_models.SPECS[name]
    rng = np.random.default_rng(14)
    cache = cache_dir(None)
    calib = spec.feeds(rng, 4, cache)
    graph = load_model(cache / f"{name}.onnx", spec.shapes)
    art = compile_graph(graph, make_config(preset, {"targets": "lava"}), calib)
    return art.graph, spec.feeds(rng, 1, cache)[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("artifact", nargs="?")
    ap.add_argument("feeds", nargs="?")
    ap.add_argument("--corpus", default=None, help="a corpus model, compiled here")
    ap.add_argument("--preset", default="spikingbrain")
    ap.add_argument("--samples", default="1,8")
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--label", default=None)
    ap.add_argument("--bands", type=int, default=None, help="fused processes (default: CPUs)")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    if args.corpus:
        graph, data = corpus_model(args.corpus, args.preset)
        args.samples, args.label = "1", args.label or args.corpus
    else:
        graph, data = Artifact.load(args.artifact).graph, load_npz(args.feeds)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    program = lower(graph)
    lower_s = time.perf_counter() - t0
    lower_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    members = program.to_members()
    row = {"model": args.label or Path(args.artifact).stem, "mode": program.mode,
           "lower_s": lower_s, "lower_peak_rss_growth_mb": lower_mb,
           "program_bytes": sum(len(v) for v in members.values()),
           "spike_layers": len(program.plan["synapses"]),
           "neuro_cores": program.plan["mapping"]["neuro_cores"],
           "chips": program.plan["mapping"]["chips"], "runs": []}
    print(f"{row['model']}: lower {lower_s:.2f} s (+{lower_mb:.0f} MB), program "
          f"{row['program_bytes'] / 1e6:.2f} MB, {row['spike_layers']} spike layers, "
          f"{row['neuro_cores']} neuro-cores on {row['chips']} chips ({program.mode})")
    for n in (int(s) for s in args.samples.split(",")):
        feeds = data if args.corpus else {k: v[:n] for k, v in data.items()}
        with PeakMemory() as peak:
            t0 = time.perf_counter()
            run = simulate(program, feeds, timeout=args.timeout, bands=args.bands)
            wall = time.perf_counter() - t0
        check = compare(graph, program, feeds, run)
        entry = {"samples": n, "bands": args.bands, "wall_s": wall,
                 "peak_pss_gb": peak.peak_pss / 2**30,
                 "peak_rss_sum_gb": peak.peak_rss / 2**30, "steps": run.steps,
                 "timing_s": run.timing_s,
                 "memory_estimate_gb": run.memory_estimate_bytes / 2**30, **check}
        row["runs"].append(entry)
        print(f"  {n} sample(s): {wall:.1f} s, peak PSS {entry['peak_pss_gb']:.2f} GB (RSS sum "
              f"{entry['peak_rss_sum_gb']:.2f} GB, estimate {entry['memory_estimate_gb']:.2f} "
              f"GB), {run.steps} steps; {check['integer_values']} integer values "
              f"({check['integer_elements']} elements) equal to the reference")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = json.loads(out.read_text())["models"] if out.exists() else []
    rows = [r for r in rows if r["model"] != row["model"]] + [row]
    out.write_text(json.dumps({"date": date.today().isoformat(),
                               "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
                                          f"Python {platform.python_version()}",
                               "models": rows}, indent=1))


if __name__ == "__main__":
    main()
