"""The PyTorch frontend: an ``nn.Module`` and example inputs -> a validated IR Graph.

The module is exported with ``torch.onnx.export(dynamo=True)`` (torch.export underneath) and the
ONNX model goes through the ONNX frontend, so both entry points share one lowering. Measured on
the test models against the TorchScript exporter (``dynamo=False``), the dynamo exporter gives
the cleaner graph (BERT-style encoder: 78 nodes against 110, decoder block: 63 against 121, no
Constant nodes, RoPE tables and masks folded) and is the only one that emits the GLA node
(``sbcompile.frontends.gla``). Shapes are those of the example inputs.
"""
from __future__ import annotations

import contextlib
import inspect
import io
import logging
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import onnx
import torch
from torch import nn

from sbcompile.errors import SbcError
from sbcompile.frontends.onnx_frontend import load_onnx
from sbcompile.ir.graph import Graph

ExampleInputs = torch.Tensor | np.ndarray | Sequence | Mapping


def import_module(module: nn.Module, example_inputs: ExampleInputs,
                  input_names: Sequence[str] | None = None,
                  output_names: Sequence[str] | None = None,
                  dynamic_axes: Mapping[str, Mapping[int, str]] | None = None) -> Graph:
    """The module as a validated IR graph, traced on ``example_inputs`` (see ``export_module``).
    Raises SbcError when the module cannot be exported or holds what sbcompile does not
    support."""
    return load_onnx(export_module(module, example_inputs, input_names, output_names,
                                   dynamic_axes))


def batch_axes(module: nn.Module, example_inputs: ExampleInputs) -> dict[str, dict[int, str]]:
    """{forward parameter: {0: "batch"}} for every example input: axis 0 left symbolic, so the
    compiled model takes any batch size (calibration and evaluation sets differ in size)."""
    args, kwargs = _example_arguments(example_inputs)
    names = [p for p in inspect.signature(module.forward).parameters][:len(args)]
    return {name: {0: "batch"} for name in [*names, *kwargs]}


def export_module(module: nn.Module, example_inputs: ExampleInputs,
                  input_names: Sequence[str] | None = None,
                  output_names: Sequence[str] | None = None,
                  dynamic_axes: Mapping[str, Mapping[int, str]] | None = None
                  ) -> onnx.ModelProto:
    """The module exported to ONNX in eval mode (its mode is restored afterwards).

    ``example_inputs``: a tensor or array, a sequence of them (positional arguments, named by
    ``input_names`` or else by the forward parameters), or a mapping of forward parameter name
    to tensor or array (keyword arguments, which name the graph inputs). ``dynamic_axes`` maps
    forward parameter names to {axis: dimension name} for axes left symbolic; all others take
    the example inputs' sizes."""
    if not isinstance(module, nn.Module):
        raise SbcError(f"expected a torch.nn.Module, got {type(module).__name__}")
    args, kwargs = _example_arguments(example_inputs)
    if input_names is not None:
        if kwargs:
            raise SbcError("input_names cannot be given with a mapping of example inputs "
                           "(its keys name the inputs)")
        if len(input_names) != len(args):
            raise SbcError(f"{len(input_names)} input names for {len(args)} example inputs")
    was_training = module.training
    module.eval()
    try:
        with _exporter_quiet():
            program = torch.onnx.export(module, args, kwargs=kwargs, dynamo=True,
                                        input_names=_list(input_names),
                                        output_names=_list(output_names),
                                        dynamic_shapes=dynamic_axes, verbose=False)
    except Exception as e:  # the exporter fails with many types, all about the user's module
        raise SbcError(f"cannot export {type(module).__name__} to ONNX: {_reason(e)}") from None
    finally:
        module.train(was_training)
    return program.model_proto


def _example_arguments(example_inputs: ExampleInputs) -> tuple[tuple, dict]:
    """(positional, keyword) tensors from the accepted forms of example inputs."""
    if isinstance(example_inputs, Mapping):
        return (), {str(k): _tensor(v, f"example input '{k}'")
                    for k, v in example_inputs.items()}
    if isinstance(example_inputs, (torch.Tensor, np.ndarray)):
        example_inputs = (example_inputs,)
    if not isinstance(example_inputs, Sequence) or isinstance(example_inputs, str):
        raise SbcError("example inputs must be a tensor or array, a sequence of them or a "
                       f"mapping of name to them, got {type(example_inputs).__name__}")
    return tuple(_tensor(v, f"example input {i}") for i, v in enumerate(example_inputs)), {}


def _tensor(value, what: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    raise SbcError(f"{what} must be a torch.Tensor or numpy array, got {type(value).__name__}")


def _list(names: Sequence[str] | None) -> list[str] | None:
    return None if names is None else [str(n) for n in names]


def _reason(error: BaseException) -> str:
    """The root cause of an exporter failure, on one line."""
    while error.__cause__ is not None:
        error = error.__cause__
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0] if lines else 'no message'}"


@contextlib.contextmanager
def _exporter_quiet():
    """Silence the exporter's progress lines, warnings and log records while it runs: failures
    surface as one SbcError instead."""
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)
