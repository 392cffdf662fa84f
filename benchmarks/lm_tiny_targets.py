"""Greedy generation with the tiny SpikingBrain-style LM (k = 3) on every target: the reference
interpreter, Triton (a GPU when present, else Triton's CPU interpreter) and the Lava simulation;
each must give the reference's tokens. Records seconds per token (each token re-runs the full
64-token context). The model is compiled in this process and the artifact run in a child
process, whose Triton mode is chosen before Triton is imported.
Writes benchmarks/results/lm_tiny_targets.json.

``--exact`` instead runs one held-out window (64 tokens) once on each target and compares every
integer value (each encoder's counts, each layer's accumulator, the attention's integer scores)
with the reference's bit for bit; writes benchmarks/results/lm_tiny_exact.json.

    python benchmarks/lm_tiny_targets.py [-n 8] [--targets reference,triton,lava] [--exact]
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


def run_exact(artifact: Path, targets: list[str]) -> None:
    import numpy as np

    from spiking import data

    from sbcompile.artifact import Artifact
    from sbcompile.runtime.targets import (run_lava, run_reference, run_triton,
                                           stored_program)

    art = Artifact.load(artifact)
    feeds = {"input_ids": data("heldout")["input_ids"][:1]}
    want = run_reference(art.graph, feeds)
    rows = []
    for target in [t for t in targets if t in ("triton", "lava")]:
        program = stored_program(art.programs, art.graph, target, art.report)
        start = time.perf_counter()
        got = run_triton(program, feeds) if target == "triton" else \
            run_lava(program, feeds, timeout=1200.0)
        seconds = time.perf_counter() - start
        for name, value in want.counts.items():
            np.testing.assert_array_equal(got.counts[name], value, err_msg=f"{target} {name}")
        diff = float(np.abs(got.outputs["logits"] - want.outputs["logits"]).max())
        scores = [n.outputs[0] for n in art.graph.nodes if n.op == "spike_scores"]
        rows.append({"target": target, "integer_values_equal": len(want.counts),
                     "scores_equal": len(scores), "max_abs_logit_diff": diff,
                     "seconds": seconds, "triton_interpreted": os.environ.get(
                         "TRITON_INTERPRET") == "1" if target == "triton" else None})
        print(f"{target:>7}: {len(want.counts)} integer values equal (of them {len(scores)} "
              f"integer attention scores), max |logit diff| {diff:.2e}, {seconds:.0f} s",
              flush=True)
    out = RESULT.with_name("lm_tiny_exact.json")
    out.write_text(json.dumps({"tokens": int(feeds["input_ids"].size), "rows": rows,
                               "machine": f"{platform.machine()}, {os.cpu_count()} CPUs"},
                              indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=8)
    parser.add_argument("--targets", default="reference,triton,lava")
    parser.add_argument("--exact", action="store_true",
                        help="compare every integer value of one window instead")
    parser.add_argument("--artifact", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    targets = ["reference"] + [t for t in args.targets.split(",") if t and t != "reference"]
    if args.artifact:
        if args.exact:
            run_exact(args.artifact, targets)
        else:
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
                        "--targets", ",".join(targets)] + ["--exact"] * args.exact, env=env,
                       check=True)


if __name__ == "__main__":
    main()
