"""Canonicalisation of the lowered IR: the many ONNX spellings of one layer become one IR op.

Each pattern looks at one anchor node and, when the surrounding subgraph matches, replaces the
matched nodes by a single IR node. Intermediate values of a match must have no other consumer
(and not be graph outputs), so a rewrite never changes what any other node sees. The rewrites run
to a fixed point in the order of ``PATTERNS``.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from sbcompile.frontends.onnx_lowering import add_param
from sbcompile.ir.graph import Graph, Node


class Rewriter:
    """Producer/consumer lookups over a graph and the one edit patterns make: replace matched
    nodes by a new node. ``origins`` maps IR node names to the ONNX nodes they came from."""

    def __init__(self, graph: Graph, origins: dict[str, list[str]]):
        self.graph = graph
        self.origins = origins
        self.refresh()

    def refresh(self) -> None:
        self.producer = self.graph.producers()
        self.consumer = self.graph.consumers()
        self.outputs = set(self.graph.outputs)

    # ---- queries -----------------------------------------------------------------------------
    def op_of(self, value: str, op: str | tuple[str, ...]) -> Node | None:
        """The producer of ``value`` if it is (one of) ``op``."""
        node = self.producer.get(value)
        ops = (op,) if isinstance(op, str) else op
        return node if node is not None and node.op in ops else None

    def sole_consumer(self, value: str, op: str | tuple[str, ...] | None = None) -> Node | None:
        """The only consumer of ``value`` (which is no graph output), if it is ``op``."""
        users = self.consumer.get(value, [])
        if len(users) != 1 or value in self.outputs:
            return None
        ops = (op,) if isinstance(op, str) else op
        return users[0] if op is None or users[0].op in ops else None

    def private(self, value: str, n_users: int = 1) -> bool:
        """``value`` is internal to a match: exactly ``n_users`` consumers, no graph output."""
        return len(self.consumer.get(value, [])) == n_users and value not in self.outputs

    def param(self, value: str) -> np.ndarray | None:
        return self.graph.params.get(value)

    def scalar(self, value: str) -> float | None:
        """The value of a constant holding a single float (any shape of size 1)."""
        arr = self.param(value)
        if arr is None or arr.size != 1 or arr.dtype.kind != "f":
            return None
        return float(arr.reshape(()))

    def other(self, node: Node, value: str) -> str:
        """The other operand of a binary node."""
        return node.inputs[1] if node.inputs[0] == value else node.inputs[0]

    def rank(self, value: str) -> int:
        return len(self.graph.values[value].shape)

    # ---- the edit ----------------------------------------------------------------------------
    def replace(self, matched: list[Node], new: Node) -> None:
        """Put ``new`` where the last matched node was and drop the matched nodes."""
        gone = {id(n) for n in matched}
        position = max(i for i, n in enumerate(self.graph.nodes) if id(n) in gone)
        merged = [o for n in matched for o in self.origins.pop(n.name, [])]
        nodes = self.graph.nodes
        self.graph.nodes = [n for i, n in enumerate(nodes) if id(n) not in gone or i == position]
        self.graph.nodes[self.graph.nodes.index(nodes[position])] = new
        self.origins[new.name] = list(dict.fromkeys(merged))
        self.refresh()

    def add_param(self, base: str, array: np.ndarray) -> str:
        return add_param(self.graph, base, array)


Pattern = Callable[[Rewriter, Node], bool]


def _close(a: float | None, b: float, rtol: float = 1e-5) -> bool:
    return a is not None and math.isclose(a, b, rel_tol=rtol)


# ---- linear -------------------------------------------------------------------------------------
def linear_from_matmul(rw: Rewriter, node: Node) -> bool:
    """matmul(x, W) with a constant float 2-D W [K, N] -> linear(x, W^T)."""
    if node.op != "matmul":
        return False
    w = rw.param(node.inputs[1])
    if w is None or w.ndim != 2 or w.dtype.kind != "f" or rw.rank(node.inputs[0]) < 1:
        return False
    weight = rw.add_param(f"{node.inputs[1]}_t", np.ascontiguousarray(w.T))
    rw.replace([node], Node(node.name, "linear", [node.inputs[0], weight], node.outputs))
    return True


def linear_bias(rw: Rewriter, node: Node) -> bool:
    """add(linear(x, W), b) with a constant b broadcasting along N only -> linear(x, W, b)."""
    if node.op != "add":
        return False
    for value in node.inputs:
        lin = rw.op_of(value, "linear")
        if lin is None or len(lin.inputs) > 2 or not rw.private(value):
            continue
        b = rw.param(rw.other(node, value))
        n_out = rw.graph.values[lin.inputs[1]].shape[0]
        if (b is None or b.dtype.name != rw.graph.values[value].dtype or b.size != n_out
                or b.shape[-1:] != (n_out,) or b.ndim > rw.rank(value)):
            continue
        bias = rw.add_param(f"{lin.name}/bias", b.reshape(n_out))
        rw.replace([lin, node], Node(lin.name, "linear", [*lin.inputs, bias], node.outputs,
                                     lin.attrs))
        return True
    return False


def fold_batch_norm(rw: Rewriter, node: Node) -> bool:
    """batch_norm(conv(x) or linear(x) [2-D]) with constant parameters, where the conv/linear
    output feeds only the norm -> the conv/linear with rescaled weight and bias."""
    if node.op != "batch_norm":
        return False
    layer = rw.op_of(node.inputs[0], ("conv", "linear"))
    if layer is None or not rw.private(node.inputs[0]):
        return False
    if layer.op == "linear" and rw.rank(node.inputs[0]) != 2:
        return False
    params = [rw.param(v) for v in node.inputs[1:]]
    w = rw.param(layer.inputs[1])
    b = rw.param(layer.inputs[2]) if len(layer.inputs) > 2 and layer.inputs[2] else None
    if w is None or w.dtype.kind != "f" or any(p is None for p in params) or (
            len(layer.inputs) > 2 and layer.inputs[2] and b is None):
        return False
    scale, shift, mean, var = (p.astype(np.float64) for p in params)
    eps = node.attrs.get("epsilon", 1e-5)
    factor = scale / np.sqrt(var + eps)
    bias = (b.astype(np.float64) if b is not None else 0.0) - mean
    new_w = (w.astype(np.float64) * factor.reshape((-1,) + (1,) * (w.ndim - 1))).astype(w.dtype)
    new_b = (bias * factor + shift).astype(w.dtype)
    inputs = [layer.inputs[0], rw.add_param(f"{layer.name}/weight", new_w),
              rw.add_param(f"{layer.name}/bias", new_b)]
    rw.replace([layer, node], Node(layer.name, layer.op, inputs, node.outputs, layer.attrs))
    return True


PATTERNS: list[Pattern] = [linear_from_matmul, linear_bias, fold_batch_norm]


def canonicalise(graph: Graph, origins: dict[str, list[str]]) -> None:
    """Apply every pattern until none matches (in place)."""
    rw = Rewriter(graph, origins)
    for pattern in PATTERNS:
        changed = True
        while changed:
            changed = any(pattern(rw, node) for node in list(graph.nodes))
