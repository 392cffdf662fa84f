"""The target registry: every target's name and what it is made of, in one list that config,
the CLI, the compile driver, the artifact checks and the runtime all read.

Names only (modules as strings): the core imports no stage. ``runtime/targets.py`` runs a
target; ``sbcompile.pipeline`` imports a target's ``backend`` to lower it at compile time.
"""
from __future__ import annotations

from dataclasses import dataclass

from sbcompile.errors import SbcError


@dataclass(frozen=True)
class TargetSpec:
    """One target. ``backend``: the module whose ``lower(graph, config)`` builds its program at
    compile time (None: it runs the graph itself); ``program``: ``module:Class`` of the program
    (``TargetProgram``) stored as artifact members ``<name>/...``; ``extra``: the pip extra it
    needs; ``devices``: the devices it can run on (the first is the default)."""
    name: str
    backend: str | None = None
    program: str | None = None
    extra: str | None = None
    devices: tuple[str, ...] = ("cpu",)


SPECS: dict[str, TargetSpec] = {s.name: s for s in (
    TargetSpec("reference"),
    TargetSpec("lava", "sbcompile.backends.lava", "sbcompile.runtime.lava.program:LavaProgram",
               "lava"),
    TargetSpec("triton", "sbcompile.backends.triton",
               "sbcompile.runtime.triton.program:TritonProgram", "gpu", ("cuda", "cpu")),
    TargetSpec("torch", "sbcompile.backends.torch",
               "sbcompile.runtime.torch.program:TorchProgram", "gpu", ("auto", "cuda", "cpu")),
    TargetSpec("onnxruntime", "sbcompile.backends.onnxruntime",
               "sbcompile.runtime.onnxruntime_target:OnnxruntimeProgram", "onnxruntime"),
)}
TARGETS = tuple(SPECS)  # every name a run accepts
PROGRAM_TARGETS = tuple(n for n, s in SPECS.items() if s.program)  # names config may store
DEFAULT_TARGETS = ["lava", "triton", "torch"]


def target_spec(name: str, stored: bool = False) -> TargetSpec:
    """The spec of ``name``; SbcError listing the known names (``stored``: those that store a
    program) when there is none."""
    known = PROGRAM_TARGETS if stored else TARGETS
    if name not in known:
        raise SbcError(f"unknown target '{name}' (known: {', '.join(known)})")
    return SPECS[name]
