"""Compile time and peak memory against model size (goal: linear growth; a 20M-parameter
transformer compiles in under 15 s on 2 cores).

Models: stacks of Llama-style decoder blocks (RMSNorm, GQA attention with rotary embeddings and a
sliding window, SwiGLU), exported to ONNX with torch; random weights. Each compile runs in a fresh
process that never imports torch, so its peak RSS is the compiler's own. Calibration: 4 sequences
of 64 tokens. Prints a table and writes benchmarks/results/compile_scaling.json.

    python benchmarks/compile_scaling.py
"""
from __future__ import annotations

import json
import platform
import subprocess
import sys
import tempfile
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
from sbcompile.pipeline import compile_model

def high_water_mb():  # VmHWM: this process's own peak (ru_maxrss survives exec on Linux)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
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


def main() -> None:
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
