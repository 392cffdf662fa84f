"""What the frontend rewrite rules share: provenance, the fused-op domain, constant lookups.

Rules are onnxscript rewriter rules (``pattern.RewriteRuleClassBase``) over the ONNX graph in
onnx_ir form. ``sourced`` turns a rule class into a ``RewriteRule`` whose new nodes record, in
their metadata, the ONNX nodes the match replaced (the support table reports which IR ops each
ONNX node became) and take the name of the first of them (spiked layers keep their names).
"""
from __future__ import annotations

import json
import math
from typing import Sequence

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import pattern

from sbcompile.frontends.onnx_model import FUSED_DOMAIN
from sbcompile.ir.graph import unique_name

SOURCES_KEY = "ai.sbcompile.sources"
MASKED = -1e9  # additive mask entries at or below this are "masked" (exp underflows to 0)


def sources_of(nodes: Sequence[ir.Node]) -> list[str]:
    """The ONNX nodes behind ``nodes``: a fused node's recorded sources, else its own name."""
    names: list[str] = []
    for node in nodes:
        tagged = node.metadata_props.get(SOURCES_KEY)
        names += json.loads(tagged) if tagged else [node.name]
    return list(dict.fromkeys(names))


def sourced(rule_class: type[pattern.RewriteRuleClassBase], *args, **kwargs
            ) -> pattern.RewriteRule:
    """The rule of ``rule_class(*args, **kwargs)``, its new nodes tagged with their sources."""
    rule = rule_class(*args, **kwargs)
    matched: list[ir.Node] = []
    graphs: list[ir.Graph] = []

    def check(context, **bindings):
        nodes = set(context.nodes)
        matched[:] = [n for n in context.graph_or_function if n in nodes]  # in graph order
        graphs[:] = [context.graph_or_function]
        return rule.check(context, **bindings)

    def rewrite(op, **bindings):
        outputs = rule.rewrite(op, **bindings)
        if outputs is None:
            return None
        names = sources_of(matched)
        last = (outputs[-1] if isinstance(outputs, Sequence) else outputs).producer()
        for node in op.nodes:
            node.metadata_props[SOURCES_KEY] = json.dumps(names)
            node.name = names[0] if node is last else f"{names[0]}/{node.op_type}"
        _fresh_initializer_names(op.initializers, graphs[0])
        return outputs

    return pattern.RewriteRule(rule.pattern, rewrite, check, name=rule.name,
                               remove_nodes=rule.remove_nodes)


def _fresh_initializer_names(values: Sequence[ir.Value], graph: ir.Graph) -> None:
    """Rename new initializers whose name a graph value has (rules name them after the weight
    they derive from, and one weight may serve several layers)."""
    taken = set(graph.initializers) | {v.name for n in graph for v in n.outputs}
    taken |= {v.name for v in graph.inputs}
    for value in values:
        name = unique_name(value.name, taken)
        if name != value.name:
            value.name = name


# ---- constants and shapes -----------------------------------------------------------------------
def array(value: ir.Value | None) -> np.ndarray | None:
    """The constant behind ``value`` (an initializer), else None."""
    if value is None or value.const_value is None:
        return None
    return value.const_value.numpy()


def scalar(value: ir.Value | None) -> float | None:
    """The value of a float constant holding one element (any shape of size 1)."""
    arr = array(value)
    if arr is None or arr.size != 1 or arr.dtype.kind != "f":
        return None
    return float(arr.reshape(()))


def close(value: ir.Value | None, want: float, rtol: float = 1e-5) -> bool:
    got = scalar(value)
    return got is not None and math.isclose(got, want, rel_tol=rtol)


def dims(value: ir.Value) -> tuple | None:
    """The shape as ints and dim names, or None when the rank is unknown."""
    if value.shape is None:
        return None
    return tuple(d if isinstance(d, int) else str(d) for d in value.shape)


def reduced_axes(node: ir.Node) -> list[int] | None:
    """The axes of a keepdims Reduce* node, from its attribute (opset < 18) or constant input."""
    keep = node.attributes.get("keepdims")
    if keep is not None and not keep.as_int():
        return None
    if "axes" in node.attributes:
        return list(node.attributes["axes"].as_ints())
    axes = array(node.inputs[1]) if len(node.inputs) > 1 else None
    return None if axes is None else [int(a) for a in axes.reshape(-1)]


def trailing_axis(x: ir.Value, axes: list[int] | None) -> int | None:
    """The first axis (negative, from the end) when ``axes`` are the trailing axes of x."""
    shape = dims(x)
    if shape is None or not axes:
        return None
    rank = len(shape)
    ordered = sorted(a % rank for a in axes)
    return ordered[0] - rank if ordered == list(range(rank - len(axes), rank)) else None


def fits_norm_dims(p: np.ndarray | None, x: ir.Value, axis: int) -> bool:
    """A constant of x's dtype that broadcasts over the normalised dims x.shape[axis:] only."""
    norm = dims(x)[axis:]
    if p is None or x.dtype is None or p.dtype != x.dtype.numpy() or p.ndim > len(norm):
        return False
    return all(isinstance(d, int) and s in (1, d) for s, d in zip(p.shape[::-1], norm[::-1]))


def typed(value: ir.Value, like: ir.Value, shape: Sequence | None = None) -> ir.Value:
    """Give a value a rewrite creates ``like``'s dtype and ``shape`` (default: like's)."""
    value.dtype = like.dtype
    value.shape = ir.Shape(list(shape) if shape is not None else like.shape)
    return value
