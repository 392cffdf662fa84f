"""Greedy generation with the tiny model, compiled under ``spikingbrain``, on a chosen target.

    python examples/spikingbrain_tiny/generate.py --prompt "Return the " -n 40
    python examples/spikingbrain_tiny/generate.py --save tiny.sbc            # compile once
    TRITON_INTERPRET=1 python examples/spikingbrain_tiny/generate.py --artifact tiny.sbc \\
        --target triton

``float`` runs the un-spiked graph; ``reference`` the spiking graph on the numpy interpreter;
``triton`` the spiking graph on the Triton runtime (on a GPU, else on Triton's CPU interpreter,
whose mode must be chosen before anything imports Triton: the ONNX export does, and it crawls
under the interpreter, so compile in one process and run the saved artifact in another);
``lava`` on the Lava simulation. Every spiking target gives the reference's tokens.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from data import decode, encode
from sbcompile.artifact import Artifact
from sbcompile.lm import RunFn, generate
from sbcompile.runtime import reference
from sbcompile.runtime.targets import run_lava, run_triton, stored_program

TARGETS = ("reference", "float", "triton", "lava")


def runner(target: str, art: Artifact) -> RunFn:
    """A ``run(graph, feeds)`` for ``target``, its program the one ``art`` stores."""
    if target in ("reference", "float"):
        return reference.run
    if target == "triton":
        import torch

        program = stored_program(art.programs, art.graph, "triton", art.report)
        return lambda graph, feeds: run_triton(program, feeds,
                                               interpret=not torch.cuda.is_available(),
                                               keep_integers=False).outputs
    if target == "lava":
        program = stored_program(art.programs, art.graph, "lava", art.report)
        return lambda graph, feeds: run_lava(program, feeds, timeout=1200.0).outputs
    raise ValueError(f"unknown target '{target}' (known: {', '.join(TARGETS)})")


def complete(art: Artifact, prompt: str, n_tokens: int, target: str = "reference") -> str:
    """The ``n_tokens`` characters the model greedily writes after ``prompt`` on ``target``."""
    graph = art.baseline if target == "float" else art.graph
    return decode(generate(runner(target, art), graph, encode(prompt), n_tokens))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt", default="Return the ")
    parser.add_argument("-n", type=int, default=40)
    parser.add_argument("--target", choices=TARGETS, default="reference")
    parser.add_argument("--k", type=float, default=3.0)
    parser.add_argument("--artifact", type=Path, help="run this compiled artifact")
    parser.add_argument("--save", type=Path, help="compile, save the artifact here and stop")
    args = parser.parse_args()
    if args.artifact:
        art = Artifact.load(args.artifact)
    else:
        from spiking import compile_tiny, float_graph
        art = compile_tiny(float_graph(), args.k)
    if args.save:
        art.save(args.save)
        return
    print(repr(args.prompt + complete(art, args.prompt, args.n, args.target)))


if __name__ == "__main__":
    main()
