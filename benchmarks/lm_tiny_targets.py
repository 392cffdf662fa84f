"""Greedy generation with the tiny SpikingBrain-style LM (k = 3) on every target: the reference
interpreter, Triton (a GPU when present, else Triton's CPU interpreter) and the Lava simulation;
each must give the reference's tokens. Records seconds per token (each token re-runs the full
64-token context). The model is compiled in this process and the artifact run in a child
process, whose Triton mode is chosen before Triton is imported.
Writes benchmarks/results/lm_tiny_targets.json.

    python benchmarks/lm_tiny_targets.py [-n 8] [--targets reference,triton,lava]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "spikingbrain_tiny"))
RESULT = ROOT / "benchmarks" / "results" / "lm_tiny_targets.json"
PROMPT = "Return the "


def run_child(artifact: Path, n: int, targets: list[str]) -> None:
    from generate import complete

    from sbcompile.artifact import Artifact

    art = Artifact.load(artifact)
    rows = []
    for target in targets:
        start = time.perf_counter()
        text = complete(art, PROMPT, n, target)
        seconds = time.perf_counter() - start
        rows.append({"target": target, "text": text, "seconds": seconds,
                     "seconds_per_token": seconds / n,
                     "triton_interpreted": os.environ.get("TRITON_INTERPRET") == "1"
                     if target == "triton" else None})
        print(f"{target:>9}: {text!r}  {seconds / n:.2f} s/token", flush=True)
    reference = next(r["text"] for r in rows if r["target"] == "reference")
    for r in rows:
        r["same_as_reference"] = r["text"] == reference
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps({"prompt": PROMPT, "tokens": n, "k": 3.0, "rows": rows,
                                  "machine": f"{platform.machine()}, {os.cpu_count()} CPUs"},
                                 indent=1) + "\n")
    if not all(r["same_as_reference"] for r in rows):
        sys.exit("a target's tokens differ from the reference's")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=8)
    parser.add_argument("--targets", default="reference,triton,lava")
    parser.add_argument("--artifact", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    targets = ["reference"] + [t for t in args.targets.split(",") if t and t != "reference"]
    if args.artifact:
        run_child(args.artifact, args.n, targets)
        return
    import torch

    from spiking import compile_tiny, float_graph

    env = dict(os.environ)
    if not torch.cuda.is_available():
        env["TRITON_INTERPRET"] = "1"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tiny.sbc"
        compile_tiny(float_graph(), 3.0).save(path)
        subprocess.run([sys.executable, __file__, "--artifact", str(path), "-n", str(args.n),
                        "--targets", ",".join(targets)], env=env, check=True)


if __name__ == "__main__":
    main()
