"""compile's default repair on one corpus model (benchmarks/fetch_models.py) under one preset:
the task agreement with the float model on held-out inputs (the real-model benchmark's task
measure), the worst output cosine, and what the repair did (untuned and repaired figures, the
layers kept float, its seconds and evaluations). Reference target only.

    python benchmarks/repair_models.py MODEL PRESET [n=N] [KEY=VALUE ...]   # --set style fields

Appends a row to benchmarks/results/repair_models.json and prints it.
"""
from __future__ import annotations

import json
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import real_models as rm  # noqa: E402
from fetch_models import cache_dir  # noqa: E402

from sbcompile.config import make_config  # noqa: E402
from sbcompile.pipeline import compile_graph, load_model  # noqa: E402
from sbcompile.runtime import reference  # noqa: E402
from sbcompile.tune import REPAIR_FLOOR, worst_cosine  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "repair_models.json"


def measure(name: str, preset: str, sets: dict[str, str]) -> dict:
    spec, cache = rm.SPECS[name], cache_dir()
    rng = np.random.default_rng(14)
    n = int(sets.pop("n", spec.n))
    calib, evals = spec.feeds(rng, n, cache), spec.feeds(rng, n, cache)
    graph = load_model(cache / f"{name}.onnx", spec.shapes, calib)
    floats = [reference.run(graph, f)[spec.output] for f in evals]
    began = time.perf_counter()
    art = compile_graph(graph, make_config(preset, {"targets": "",
                                                    "repair_floor": str(REPAIR_FLOOR), **sets}),
                        calib)
    row = {"model": name, "preset": preset, "sets": sets, "samples": n,
           "compile_s": round(time.perf_counter() - began, 1),
           "agreement": float(np.mean([spec.agree(f, reference.run(art.graph, e)[spec.output])
                                       for f, e in zip(floats, evals)])),
           "worst_cosine": worst_cosine(art.graph),
           "layers_spiked": len(art.graph.meta.get("layers", {}))}
    repair = art.report.get("tune")
    if repair:
        row["repair"] = {"seconds": round(repair["seconds"], 1),
                         "evaluations": repair["evaluations"], "metric": repair["metric"],
                         "untuned": repair["untuned"], "chosen": repair["chosen"],
                         "kept_float": sorted(k for k, v in repair["layers"].items()
                                              if v.get("float"))}
    return row


def main() -> int:
    name, preset, *rest = sys.argv[1:]
    row = measure(name, preset, dict(a.split("=", 1) for a in rest))
    previous = json.loads(RESULTS.read_text())["rows"] if RESULTS.is_file() else []
    RESULTS.write_text(json.dumps({"date": str(date.today()), "rows": previous + [row]},
                                  indent=1))
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
