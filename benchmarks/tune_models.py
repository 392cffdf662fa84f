"""`tune` on three kinds of model, against the untuned preset: the floor met, the energy paid
(the report's spiking estimate plus the dense MACs of the layers kept float), the time the
search took, and the task metric on inputs the search never saw.

- digits_cnn: the bundled digits CNN (examples/digits); the floor is the task's accuracy against
  true labels (the first half of the held-out split is the tuning set, the second half scores);
- bert_encoder: the BERT-style encoder of the test zoo (tests/models.py, 2 layers, hidden 32);
  the floor is the end-to-end cosine of its worst output vs float;
- ppocr_rec: PaddleOCR's text-line recogniser from the real-model corpus (fetch_models.py),
  on rendered lines (real_model_inputs.py); the floor is CTC line agreement with the float model
  (a line counts when its greedy CTC string equals the float model's).

    python benchmarks/tune_models.py [--only NAME ...] [--max-time S]

Writes benchmarks/results/tune_models.json and prints a markdown table.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))
RESULTS = ROOT / "benchmarks" / "results" / "tune_models.json"

from sbcompile.config import make_config  # noqa: E402
from sbcompile.npz import load_npz  # noqa: E402
from sbcompile.pipeline import compile_graph, load_model  # noqa: E402
from sbcompile.runtime.reference import evaluate  # noqa: E402
from sbcompile.tune import tune  # noqa: E402
from sbcompile.tune_metrics import LabelledMetric  # noqa: E402


@dataclasses.dataclass
class Case:
    kind: str
    graph: object
    calib: object            # what tune and compile calibrate on
    held: list[dict]         # feeds the search never saw
    metric: str
    floor: float
    labels: dict | None = None
    held_labels: dict | None = None


def digits_cnn() -> Case:
    ex = ROOT / "examples" / "digits"
    held = load_npz(ex / "heldout.npz")
    half = len(held["label"]) // 2
    return Case("CNN (2 conv + 2 linear)", load_model(ex / "model.onnx"),
                {"image": held["image"][:half]}, [{"image": held["image"][half:]}],
                "accuracy", 0.98, {"logits": held["label"][:half]},
                {"logits": held["label"][half:]})


def bert_encoder() -> Case:
    from models import bert_inputs, build_bert

    from sbcompile.frontends.onnx_frontend import load_onnx

    zoo = build_bert()
    rng = np.random.default_rng(11)
    calib = bert_inputs(rng, list(rng.integers(4, 17, 32)), 16)
    held = [bert_inputs(rng, list(rng.integers(4, 17, 32)), 16)]
    return Case("transformer encoder (BERT-style, 2 layers)", load_onnx(zoo.onnx_bytes()),
                calib, held, "cosine", 0.995)


def ppocr_rec() -> Case:
    from fetch_models import cache_dir
    from real_models import _ocr_rec  # the corpus' own text-line inputs

    graph = load_model(cache_dir() / "ppocr_rec.onnx", {"x": [1, 3, 48, 320]})
    rng = np.random.default_rng(5)
    calib, held = _ocr_rec(rng, 8, None), _ocr_rec(rng, 8, None)
    out = graph.outputs[0]
    return Case("recogniser (PP-OCR text line, conv + SVTR mixer + CTC)", graph, calib, held,
                "ctc", 0.875, {out: _float_ctc_labels(graph, calib, out)},
                {out: _float_ctc_labels(graph, held, out)})


def _float_ctc_labels(graph, feeds: list[dict], out: str) -> np.ndarray:
    """The float model's greedy CTC strings (blank 0) as label rows padded with -1."""
    rows = []
    for f in feeds:
        ids = evaluate(graph, f, keep=[out])[out].argmax(-1)[0]
        keep = [int(c) for i, c in enumerate(ids) if c != 0 and (i == 0 or c != ids[i - 1])]
        rows.append(keep)
    width = max(len(r) for r in rows) + 1
    return np.array([r + [-1] * (width - len(r)) for r in rows], np.int64)


CASES = {"digits_cnn": digits_cnn, "bert_encoder": bert_encoder, "ppocr_rec": ppocr_rec}


def held_out(case: Case, art) -> dict:
    """The case's metric on the held-out feeds, spiking and float (reference interpreter)."""
    spiking = [evaluate(art.graph, f) for f in case.held]
    floats = [evaluate(art.float_graph or case.graph, f) for f in case.held]
    if case.metric == "cosine":
        from sbcompile.passes.metrics import Fidelity

        worst = 1.0
        for o in case.graph.outputs:
            fid = Fidelity()
            for s, f in zip(spiking, floats):
                fid.update(s[o], f[o])
            worst = min(worst, fid.result()["cosine"])
        return {"spiking": worst, "float": 1.0}
    samples = sum(len(next(iter(f.values()))) for f in case.held)
    metric = LabelledMetric(case.metric, case.held_labels, samples)
    for s, f in zip(spiking, floats):
        metric.observe(f, s)
    return {"spiking": metric.result(), "float": metric.result("float")}


def energy_paid(art, trial_energy: float) -> dict:
    return {"report_spiking_pJ": art.report["energy"]["spikingbrain"]["spiking_pJ"],
            "with_float_layers_pJ": trial_energy}


def run_case(name: str, preset: str, max_time: float) -> dict:
    case = CASES[name]()
    base = make_config(preset, {"targets": "", "repair_floor": "none"})  # the preset as is
    began = time.perf_counter()
    result = tune(case.graph, base, case.calib, case.metric, case.floor, labels=case.labels,
                  seconds=max_time)
    seconds = time.perf_counter() - began
    tuned = compile_graph(case.graph, result.config, case.calib)
    untuned = compile_graph(case.graph, base, case.calib)
    layers = result.config.layers
    row = {"model": name, "kind": case.kind, "preset": preset, "metric": case.metric,
           "floor": case.floor, "float_metric": result.float_metric,
           "search_seconds": seconds, "evaluations": len(result.trials),
           "stopped_early": result.stopped_early,
           "layers": len(layers), "kept_float": sum(bool(s.get("float")) for s in layers.values()),
           "tuned": {"metric": result.chosen.metric, "meets_floor": result.chosen.feasible,
                     "energy_pJ": result.chosen.energy_pJ, "sparsity": result.chosen.sparsity,
                     **energy_paid(tuned, result.chosen.energy_pJ),
                     "held_out": held_out(case, tuned)},
           "untuned": {"metric": result.untuned.metric,
                       "meets_floor": result.untuned.feasible,
                       "energy_pJ": result.untuned.energy_pJ,
                       "sparsity": result.untuned.sparsity,
                       **energy_paid(untuned, result.untuned.energy_pJ),
                       "held_out": held_out(case, untuned)},
           "settings": layers,
           "front": result.summary()["front"]}
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", nargs="*", default=list(CASES))
    ap.add_argument("--preset", default="spikingbrain")
    ap.add_argument("--max-time", type=float, default=600.0)
    args = ap.parse_args()
    fresh = {(name, args.preset): run_case(name, args.preset, args.max_time)
             for name in args.only}
    previous = json.loads(RESULTS.read_text())["rows"] if RESULTS.exists() else []
    rows = {(r["model"], r["preset"]): r for r in previous}  # other rows kept as measured
    rows.update(fresh)
    doc = {"machine": f"{os.cpu_count()}-core {platform.machine()}, Python "
                      f"{platform.python_version()}, numpy {np.__version__}",
           "date": date.today().isoformat(), "rows": list(rows.values())}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(doc, indent=1) + "\n")
    print("| model | metric >= floor | untuned: metric, nJ | tuned: metric, nJ | energy saved | "
          "held-out untuned / tuned / float | search s (evals) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows.values():
        u, t = r["untuned"], r["tuned"]
        print(f"| {r['model']} ({r['preset']}) | {r['metric']} >= {r['floor']} | "
              f"{u['metric']:.4f}, {u['energy_pJ'] / 1e3:,.2f} | "
              f"{t['metric']:.4f}, {t['energy_pJ'] / 1e3:,.2f} | "
              f"{1 - t['energy_pJ'] / u['energy_pJ']:.0%} | "
              f"{u['held_out']['spiking']:.4f} / {t['held_out']['spiking']:.4f} / "
              f"{t['held_out']['float']:.4f} | {r['search_seconds']:.0f} ({r['evaluations']}) |")


if __name__ == "__main__":
    main()
