"""Running an artifact on a target: the reference interpreter, Lava or Triton."""
from __future__ import annotations

import numpy as np

from sbcompile.artifact import Artifact
from sbcompile.errors import SbcError
from sbcompile.runtime import reference

TARGETS = ("reference", "lava", "triton")


def run_target(art: Artifact, feeds: dict[str, np.ndarray], target: str = "reference",
               use_float: bool = False, interpret: bool = False) -> dict[str, np.ndarray]:
    """Graph outputs of the compiled (or, with ``use_float``, the baseline) graph; Lava and
    Triton run the programs stored in the artifact (lowered again if it has none).
    ``interpret`` runs Triton's kernels on the CPU interpreter."""
    graph = art.baseline if use_float else art.graph
    if target == "reference":
        return reference.run(graph, feeds)
    if use_float:
        raise SbcError(f"--float runs on the reference target only, not '{target}'")
    if target == "lava":
        from sbcompile.backends.lava import run_lava

        result = run_lava(art, feeds)
    elif target == "triton":
        from sbcompile.backends.triton import run_triton

        result = run_triton(art, feeds, interpret=interpret)
    else:
        raise SbcError(f"unknown target '{target}' (known: {', '.join(TARGETS)})")
    return {k: result[k] for k in graph.outputs}
