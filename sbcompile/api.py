"""The Python API, in onnxruntime's and torch's habits.

    import sbcompile
    model = sbcompile.compile("model.onnx", preset="spikingbrain", calib={"x": calib})
    result = model.run({"x": x}, target="reference")     # or "lava", "triton"
    result.outputs, result.counts, result.timings
    model.save("model.sbc"); model = sbcompile.load("model.sbc")

``compile`` takes an ONNX model (path, bytes, ModelProto), a ``.nir`` file, an IR graph, or a
PyTorch module with its example inputs. Every target returns the same ``RunResult``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sbcompile.artifact import Artifact
from sbcompile.config import CompileConfig
from sbcompile.errors import SbcError
from sbcompile.ir.graph import Graph
from sbcompile.runtime.targets import RunResult, TargetProgram, run_artifact, stored_program


class CompiledModel:
    """A compiled model: the spiking graph, its float baseline, the report and the programs the
    configured targets were lowered to (``artifact`` holds them as saved)."""

    def __init__(self, artifact: Artifact):
        self.artifact = artifact

    @property
    def graph(self) -> Graph:
        return self.artifact.graph

    @property
    def baseline(self) -> Graph:
        return self.artifact.baseline

    @property
    def report(self) -> dict:
        return self.artifact.report

    @property
    def config(self) -> CompileConfig:
        return CompileConfig.from_json(self.artifact.config)

    @property
    def input_names(self) -> list[str]:
        return list(self.graph.inputs)

    @property
    def output_names(self) -> list[str]:
        return list(self.graph.outputs)

    def program(self, target: str) -> TargetProgram:
        """The stored program of ``target`` (lava | triton)."""
        return stored_program(self.artifact.programs, self.graph, target, self.report)

    def save(self, path: str | Path) -> None:
        self.artifact.save(path)

    def run(self, inputs: dict[str, np.ndarray], target: str = "reference", *,
            use_float: bool = False, interpret: bool | None = None,
            timeout: float = 120.0) -> RunResult:
        """Run on ``target``: the reference interpreter, Lava (a supervised simulation bounded
        by ``timeout`` seconds) or Triton (``interpret``: the kernels on Triton's CPU
        interpreter; None follows ``TRITON_INTERPRET``). ``use_float`` runs the un-spiked
        baseline, on the reference target only."""
        return run_artifact(self.artifact, target, inputs, use_float=use_float,
                            interpret=interpret, timeout=timeout)


def compile(model: Any, example_inputs: tuple | None = None, *, preset: str = "spikingbrain",
            calib: dict[str, np.ndarray] | None = None, overrides: dict[str, Any] | None = None,
            exclude: list[str] | None = None, input_names: list[str] | None = None,
            dynamic_axes: dict | None = None) -> CompiledModel:
    """Compile a model under a preset (``overrides``: ``--set`` style fields, ``exclude``:
    layer name patterns kept float). A PyTorch module needs ``example_inputs``; its inputs are
    named ``input_names`` and axis 0 of each is left symbolic unless ``dynamic_axes`` says
    otherwise."""
    from sbcompile import pipeline

    if _is_torch_module(model):
        if example_inputs is None:
            raise SbcError("compiling a PyTorch module needs example_inputs")
        art = pipeline.compile_module(model, example_inputs, preset=preset, calib=calib,
                                      overrides=overrides, exclude=exclude,
                                      input_names=input_names, dynamic_axes=dynamic_axes)
    else:
        art = pipeline.compile_model(model, preset=preset, calib=calib, overrides=overrides,
                                     exclude=exclude)
    return CompiledModel(art)


def load(path: str | Path) -> CompiledModel:
    """A compiled model from an ``.sbc`` artifact (checksums and format version verified)."""
    return CompiledModel(Artifact.load(path))


def _is_torch_module(model: Any) -> bool:
    return any(c.__module__ == "torch.nn.modules.module" and c.__name__ == "Module"
               for c in type(model).__mro__)
