"""The Python API, in onnxruntime's and torch's habits.

    import sbcompile
    model = sbcompile.compile("model.onnx", preset="spikingbrain", calib={"x": calib})
    result = model.run({"x": x}, target="reference")     # or "lava", "torch", ...
    module = model.to_torch("cuda")                      # a torch.nn.Module
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
from sbcompile.runtime.targets import (PROGRAM_TARGETS, RunResult, TargetProgram, run_artifact,
                                       stored_program)


class CompiledModel:
    """A compiled model: the spiking graph, its float baseline, the report and the programs the
    configured targets were lowered to (``artifact`` holds them as saved)."""

    def __init__(self, artifact: Artifact):
        self.artifact = artifact
        self._specialised: dict[tuple, Artifact] = {}  # (target, input shapes) -> artifact

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
        """The stored program of ``target`` (lava | torch | triton | onnxruntime)."""
        return stored_program(self.artifact.programs, self.graph, target, self.report)

    def save(self, path: str | Path) -> None:
        self.artifact.save(path)

    def to_torch(self, device: str = "cpu", *, wide: bool | None = None):
        """The compiled model as a PyTorch module (``torch.nn.Module`` over a
        ``torch.fx.GraphModule``) on ``device``: float ops in PyTorch, spiked layers as
        ``torch.ops.sbcompile`` custom operators. Called with tensors it returns the outputs;
        ``module.with_integers(...)`` also returns the counts and accumulators. ``wide`` (None:
        on the CPU) makes the float ops follow the reference's float64 order. Needs the torch
        program (``--set targets=torch``, stored by default)."""
        from sbcompile.runtime.targets import resolve_device

        return self.program("torch").module(resolve_device(device), wide=wide)

    def run(self, inputs: dict[str, np.ndarray], target: str = "reference", *,
            use_float: bool = False, interpret: bool | None = None,
            timeout: float = 120.0, device: str | None = None) -> RunResult:
        """Run on ``target``: the reference interpreter, Lava (a supervised simulation bounded
        by ``timeout`` seconds) or Triton (``interpret``: the kernels on Triton's CPU
        interpreter; None follows ``TRITON_INTERPRET``). ``use_float`` runs the un-spiked
        baseline, on the reference target only. A model whose dynamic dims kept Lava or
        Triton from lowering at compile time is specialised to the shapes of ``inputs`` (and
        lowered once per shape). ``target="torch"`` runs the PyTorch program on ``device``
        (auto: the GPU when there is one)."""
        art = self.artifact
        if target in PROGRAM_TARGETS and not use_float and _needs_specialising(art, target):
            art = self._for_shapes(target, inputs)
        return run_artifact(art, target, inputs, use_float=use_float, interpret=interpret,
                            timeout=timeout, device=device)

    def _for_shapes(self, target: str, inputs: dict[str, np.ndarray]) -> Artifact:
        from sbcompile.pipeline import specialised_artifact

        missing = [n for n in self.graph.inputs if n not in inputs]
        if missing:
            raise SbcError(f"input '{missing[0]}' is missing (the model's inputs: "
                           f"{', '.join(self.graph.inputs)})")
        shapes = {n: tuple(np.shape(inputs[n])) for n in self.graph.inputs}
        key = (target, tuple(sorted(shapes.items())))
        if key not in self._specialised:
            self._specialised[key] = specialised_artifact(self.artifact, target, shapes)
        return self._specialised[key]


def _needs_specialising(art: Artifact, target: str) -> bool:
    """No stored program for ``target`` although the config asked for one, and dims that
    inputs would pin."""
    stored = any(k.startswith(f"{target}/") for k in art.programs)
    wanted = target in art.config.get("targets", [])
    symbolic = any(not isinstance(d, int) for v in art.graph.values.values() for d in v.shape)
    return wanted and not stored and symbolic


def compile(model: Any, example_inputs: tuple | None = None, *, preset: str = "spikingbrain",
            calib: dict[str, np.ndarray] | None = None, overrides: dict[str, Any] | None = None,
            exclude: list[str] | None = None, input_names: list[str] | None = None,
            dynamic_axes: dict | None = None,
            input_shapes: dict[str, list] | None = None,
            config: CompileConfig | str | Path | None = None) -> CompiledModel:
    """Compile a model under a preset (``overrides``: ``--set`` style fields, ``exclude``:
    layer name patterns kept float), or under ``config`` (a CompileConfig or a config file such
    as ``tune`` writes; overrides and exclude apply over it). A PyTorch module needs
    ``example_inputs``; its inputs are named ``input_names`` and axis 0 of each is left
    symbolic unless ``dynamic_axes`` says otherwise. ``input_shapes`` pins an ONNX model's input dims ({name: [dims]}; a string keeps
    a dim dynamic), as ``--input-shape`` does."""
    from sbcompile import pipeline
    from sbcompile.config import config_from_file

    if isinstance(config, (str, Path)):
        config = config_from_file(config)
    if _is_torch_module(model):
        if example_inputs is None:
            raise SbcError("compiling a PyTorch module needs example_inputs")
        art = pipeline.compile_module(model, example_inputs, preset=preset, calib=calib,
                                      overrides=overrides, exclude=exclude,
                                      input_names=input_names, dynamic_axes=dynamic_axes,
                                      config=config)
    else:
        art = pipeline.compile_model(model, preset=preset, calib=calib, overrides=overrides,
                                     exclude=exclude, input_shapes=input_shapes, config=config)
    return CompiledModel(art)


def load(path: str | Path) -> CompiledModel:
    """A compiled model from an ``.sbc`` artifact (checksums and format version verified)."""
    return CompiledModel(Artifact.load(path))


def _is_torch_module(model: Any) -> bool:
    return any(c.__module__ == "torch.nn.modules.module" and c.__name__ == "Module"
               for c in type(model).__mro__)
