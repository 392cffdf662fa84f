"""Energy and latency per inference on the SANA-FE chip model beside the op-count presets, and
the NeuroBench metrics, for the digits CNN (bundled) and MTCNN O-Net (corpus), with the Loihi
measurements from the literature beside them.

Per model: compile under `spikingbrain` (bitwise code) and `loihi2` (graded spikes) with the
calibration set (digits: its 256 images; O-Net: 32 photo crops), simulate the spike layers of
the first SAMPLES calibration inputs on SANA-FE's Loihi (sbcompile.chip), compute NeuroBench's
metrics on the PyTorch form on the same inputs, time each, and record the op-count presets'
energies (per inference, calibration average). Writes benchmarks/results/chip_model.json and
prints a markdown table.

    python benchmarks/fetch_models.py     # once: the corpus into the cache
    python benchmarks/chip_model.py [--samples 16] [--only digits]
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import real_model_inputs as inp  # noqa: E402
from fetch_models import model_path  # noqa: E402

from sbcompile.api import compile  # noqa: E402
from sbcompile.chip import chip_section  # noqa: E402
from sbcompile.demo import EXAMPLE  # noqa: E402
from sbcompile.neurobench_metrics import neurobench_metrics  # noqa: E402
from sbcompile.npz import load_npz  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "chip_model.json"
PRESETS = ("spikingbrain", "loihi2")
# Measured on Loihi silicon, and SANA-FE's own validation against it (docs/REPORT.md).
ANCHORS = {
    "pilotnet_loihi2": {"what": "PilotNet on Loihi 2, measured", "inferences_per_s": 409,
                        "energy_mJ_per_inference": 1.66},
    "matmul_free_lm_loihi2": {"what": "370M MatMul-free language model on Loihi 2, measured",
                              "vs_edge_gpu": "up to 3x throughput, 2x less energy"},
    "sanafe_accuracy": {"what": "SANA-FE vs Loihi silicon", "energy_error": "about 12 %",
                        "latency_error": "about 25 %"},
}


def _digits():
    return EXAMPLE / "model.onnx", load_npz(EXAMPLE / "calib.npz")


def _onet():
    crops = inp.photo_crops(np.random.default_rng(0), 32, 48, 48)
    return model_path("mtcnn_onet"), {"input_3": (crops.astype(np.float32) / 255.0 - 0.5) / 0.5}


MODELS = {"digits": ("digits CNN", _digits), "mtcnn_onet": ("MTCNN O-Net", _onet)}


def measure(name: str, samples: int) -> dict:
    title, build = MODELS[name]
    path, calib = build()
    first = {k: v[:samples] for k, v in calib.items()}
    out = {"model": title, "samples_simulated": samples, "presets": {}}
    for preset in PRESETS:
        t = time.perf_counter()
        model = compile(path, preset=preset, calib=calib,
                        overrides={"targets": ["lava", "torch"]})
        compile_s = time.perf_counter() - t
        t = time.perf_counter()
        chip = chip_section(model, "loihi", first)
        chip_s = time.perf_counter() - t
        t = time.perf_counter()
        nb = neurobench_metrics(model, first)
        nb_s = time.perf_counter() - t
        rep = model.report
        out["presets"][preset] = {
            "coding": rep["totals"]["sparsity"]["coding"], "T": rep["totals"]["sparsity"]["T"],
            "op_count_energy_uJ": {b: e["spiking_pJ"] / 1e6 for b, e in rep["energy"].items()},
            "dense_fp16_uJ": rep["energy"]["spikingbrain"]["dense_fp16_pJ"] / 1e6,
            "chip": chip, "neurobench": nb,
            "seconds": {"compile": compile_s, "sanafe": chip_s, "neurobench": nb_s}}
        print(f"{title} {preset}: SANA-FE {chip['sanafe']['energy_uJ']:.3f} uJ, "
              f"{chip['sanafe']['latency_ms']:.4f} ms per inference ({chip_s:.1f} s)",
              flush=True)
    out["peak_rss_MB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3
    return out


def table(results: dict) -> str:
    rows = ["| model | preset (coding, T) | spikingbrain uJ | horowitz45 uJ | loihi2018 uJ | "
            "SANA-FE loihi uJ | SANA-FE ms | steps | cores | NeuroBench eff. MACs / ACs / "
            "dense | act. sparsity |", "|" + "---|" * 11]
    for r in results["models"].values():
        for preset, p in r["presets"].items():
            e, s = p["op_count_energy_uJ"], p["chip"]["sanafe"]
            ops = p["neurobench"]["metrics"]["SynapticOperations"]
            rows.append(
                f"| {r['model']} | {preset} ({p['coding']}, {p['T'] or 1}) | {e['spikingbrain']:.4g} "
                f"| {e['horowitz45']:.4g} | {e['loihi2018']:.4g} | {s['energy_uJ']:.4g} | "
                f"{s['latency_ms']:.4g} | {s['steps']:g} | {s['cores']} | "
                f"{ops['Effective_MACs']:,.0f} / {ops['Effective_ACs']:,.0f} / "
                f"{ops['Dense']:,.0f} | "
                f"{p['neurobench']['metrics']['ActivationSparsity']:.3f} |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--only", nargs="*", choices=list(MODELS), default=list(MODELS))
    args = ap.parse_args()
    results = {"date": str(date.today()), "machine": f"{platform.machine()}, "
               f"{platform.processor() or 'cpu'}, 2 cores", "anchors": ANCHORS, "models": {}}
    if RESULTS.is_file():
        results["models"] = json.loads(RESULTS.read_text()).get("models", {})
    for name in args.only:
        results["models"][name] = measure(name, args.samples)
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(table(results))


if __name__ == "__main__":
    main()
