"""Quantized ONNX in: a float model and the forms onnxruntime's quantization tools make of it
(quantize_static QDQ and QOperator, per channel; quantize_dynamic), each compiled under
`spikingbrain` and `loihi2` on the same 16 calibration inputs and compared with onnxruntime on
its own file (graph optimisations off) over 184 held-out inputs: does the quantized model's
spiked form agree with onnxruntime on the quantized model as well as the float model's spiked
form agrees with the float model? Also the float reference (the dequantized model) against
onnxruntime on the quantized file. The models are the test suite's (tests/test_onnx_quantized.py:
a 2-conv CNN, 5 classes, random weights).

    python benchmarks/quantized_models.py

Writes benchmarks/results/quantized_models.json and prints a markdown table.
"""
from __future__ import annotations

import json
import platform
import sys
import tempfile
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
RESULTS = ROOT / "benchmarks" / "results" / "quantized_models.json"

import test_onnx_quantized as q  # noqa: E402

from sbcompile.frontends.onnx_frontend import load_onnx  # noqa: E402
from sbcompile.pipeline import compile_model  # noqa: E402
from sbcompile.runtime.reference import run  # noqa: E402

FORMS = ("qdq", "qoperator", "dynamic")
PRESETS = ("spikingbrain", "loihi2")


def measure() -> list[dict]:
    x = np.random.default_rng(9).normal(0, 1, (200, 3, 12, 12)).astype(np.float32)
    calib, held = {"x": x[:16]}, {"x": x[16:]}
    rows = []
    for form in FORMS:
        fmodel, qmodel = q._quantized(Path(tempfile.mkdtemp()), form)
        want_q = q._ort(qmodel, held)
        reference = run(load_onnx(qmodel), held)["y"]
        row = {"form": form, "reference_vs_ort_max_abs": float(np.abs(reference - want_q).max()),
               "ort_quantized_vs_float_max_abs": float(np.abs(want_q - q._ort(fmodel, held)).max())}
        for preset in PRESETS:
            for name, model in (("float", fmodel), ("quantized", qmodel)):
                art = compile_model(model, preset, calib=calib, overrides={"targets": ""})
                out, want = run(art.graph, held)["y"], q._ort(model, held)
                row[f"{preset}_{name}"] = {"cosine": q._cosine(out, want),
                                           "argmax": float(np.mean(out.argmax(1)
                                                                   == want.argmax(1)))}
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| form | reference vs onnxruntime (max abs) | onnxruntime quantized vs float | "
             "spikingbrain: float / quantized cosine, argmax | loihi2: float / quantized cosine,"
             " argmax |", "|" + "---|" * 5]
    for r in rows:
        cells = []
        for p in PRESETS:
            f, qz = r[f"{p}_float"], r[f"{p}_quantized"]
            cells.append(f"{f['cosine']:.5f} / {qz['cosine']:.5f}, {100 * f['argmax']:.1f} % / "
                         f"{100 * qz['argmax']:.1f} %")
        lines.append(f"| {r['form']} | {r['reference_vs_ort_max_abs']:.1e} | "
                     f"{r['ort_quantized_vs_float_max_abs']:.3f} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def main() -> int:
    rows = measure()
    RESULTS.write_text(json.dumps({"machine": f"{platform.machine()}, {platform.system()}",
                                   "date": str(date.today()), "rows": rows}, indent=1))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
