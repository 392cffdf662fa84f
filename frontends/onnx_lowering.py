"""The state of lowering one ONNX graph into an IR Graph, and the per-node view converters use.

Converters (``onnx_ops``) see one ONNX node through ``NodeView``: its attributes, which inputs are
constant, the types of its values, and ``emit`` to add IR nodes. Each IR node remembers the ONNX
node(s) it came from (``origins``; a fused node's ``sources``) for the support table.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import onnx

from sbcompile.errors import DynamicDimError, UnsupportedError
from sbcompile.ir.graph import DTYPES, Graph, Node, Value

# how a user makes a dynamic dim static: what compile does with calibration data
PIN_HINT = "compile pins it from the calibration data; or give --input-shape"


class Lowering:
    """The IR graph under construction plus what the converters need to know about the model."""

    def __init__(self, name: str, consts: dict[str, np.ndarray], types: dict[str, Value | str],
                 uses: dict[str, int], sources: dict[str, list[str]]):
        self.graph = Graph(name, [], [], {}, [])
        self.consts = consts
        self.types = types
        self.uses = uses  # consumers per ONNX value, graph outputs counted
        self.sources = sources  # fused node -> the model's nodes it replaced
        self.origins: dict[str, list[str]] = {}

    def value(self, name: str) -> Value:
        """The IR Value of an ONNX value, adding it (and its parameter, if constant) on first
        use."""
        if name in self.graph.values:
            return self.graph.values[name]
        if name in self.consts:
            arr = np.asarray(self.consts[name], order="C")
            if arr.dtype.name not in DTYPES:
                raise UnsupportedError(f"constant '{name}' has dtype {arr.dtype.name}, which "
                                       "sbcompile does not support")
            self.graph.values[name] = Value(name, tuple(arr.shape), arr.dtype.name)
            if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
                self._uniform_constant(name, arr)
            else:
                self.graph.params[name] = arr
            return self.graph.values[name]
        typed = self.types.get(name)
        if not isinstance(typed, Value):
            raise UnsupportedError(typed or f"the type of value '{name}' is unknown")
        self.graph.values[name] = Value(typed.name, typed.shape, typed.dtype)
        return self.graph.values[name]


    def _uniform_constant(self, name: str, arr: np.ndarray) -> None:
        """A constant filled with one +-Inf (parameters must be finite): a constant_of_shape
        node."""
        shape = self.graph.add_param(f"{name}/shape", np.array(arr.shape, dtype=np.int64))
        self.graph.nodes.append(Node(self.graph.fresh_name(f"{name}/fill"), "constant_of_shape",
                                     [shape], [name], {"value": fill_value(arr.flat[0]),
                                                       "dtype": arr.dtype.name}))


class NodeView:
    """One ONNX node as its converter sees it."""

    def __init__(self, lowering: Lowering, node: onnx.NodeProto):
        self.lw = lowering
        self.proto = node
        self.name = node.name
        self.op_type = node.op_type
        self.inputs = list(node.input)
        self.outputs = list(node.output)
        self.attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        self._count = 0

    # ---- questions ---------------------------------------------------------------------------
    def refuse(self, reason: str) -> UnsupportedError:
        return UnsupportedError(f"node '{self.name}' ({self.op_type}): {reason}")

    def refuse_dynamic(self, reason: str, *dims: str) -> DynamicDimError:
        """The refusal of a lowering that a static ``dims`` (pinned from input data) allows."""
        return DynamicDimError(f"node '{self.name}' ({self.op_type}): {reason} ({PIN_HINT})",
                               dims)

    def attr(self, key: str, default: Any = None) -> Any:
        value = self.attrs.get(key, default)
        return value.decode() if isinstance(value, bytes) else value

    def input(self, i: int) -> str:
        """The name of input i, or "" when absent."""
        return self.inputs[i] if i < len(self.inputs) else ""

    def const(self, i: int) -> np.ndarray | None:
        name = self.input(i)
        return self.lw.consts.get(name) if name else None

    def need_const(self, i: int, what: str) -> np.ndarray:
        value = self.const(i)
        if value is None:
            raise self.refuse(f"{what} (input {i}) must be a constant")
        return value

    def type(self, name: str) -> Value:
        try:
            return self.lw.value(name)
        except UnsupportedError as e:
            raise self.refuse(str(e)) from None

    def used(self, i: int) -> bool:
        return i < len(self.outputs) and bool(self.outputs[i]) and self.lw.uses.get(
            self.outputs[i], 0) > 0

    # ---- building ----------------------------------------------------------------------------
    def temp(self, shape: tuple, dtype: str) -> str:
        """A fresh intermediate value of this node's expansion."""
        return self.lw.graph.add_value(f"{self.name}/t", shape, dtype)

    def param(self, array: np.ndarray, suffix: str) -> str:
        return self.lw.graph.add_param(f"{self.name}/{suffix}", array)

    def emit(self, op: str, inputs: list[str], outputs: list[str] | str | None = None,
             **attrs) -> str:
        """Add an IR node; returns its (first) output. ``outputs`` defaults to the ONNX node's
        first output."""
        outs = [outputs] if isinstance(outputs, str) else list(outputs or self.outputs[:1])
        inputs = list(inputs)
        while inputs and not inputs[-1]:
            inputs.pop()
        for name in [*inputs, *outs]:
            if name:
                self.type(name)
        self._count += 1
        graph = self.lw.graph
        node_name = self.name if self._count == 1 else graph.fresh_name(f"{self.name}/{op}")
        graph.nodes.append(Node(node_name, op, list(inputs), outs, _plain(attrs)))
        self.lw.origins[node_name] = list(self.lw.sources.get(self.name, [self.name]))
        return outs[0]


def fill_value(x) -> int | float | bool | str:
    """A constant_of_shape fill as JSON allows it: infinities as the strings "inf" / "-inf"."""
    value = np.asarray(x).item()
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def _plain(value):
    """Attributes as JSON-ready Python values (numpy scalars and arrays converted)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
