"""SpikingBrain's attention numerics: the query of softmax attention is spiked and keys and
values are INT8 per token and head (the INT8 KV cache), FACTS.md section 1. The pipeline runs it
after spike_quantize when ``config.attention_quantize`` is set (preset ``spikingbrain_kv8``).

For every ``attention`` node not excluded by name:
- q [B, H, T, D] -> ``spike_encode`` (dynamic, per token and head: V_th = mean|q| / k over D)
  -> ``spike_decode``: the attention reads the spike reconstruction;
- k and v -> s = max(max|x| over D, 1e-8) / 127 per token and head; counts =
  ``spike_encode(x / s)`` with the static threshold 1 and max_count 127 (round half to even,
  clipped: symmetric int8); the attention reads ``counts * s``.
The softmax and its products stay float; the counts are what a target stores (int8 K/V) and
multiplies (integer q . k). ``graph.meta['attention_quantize']`` names each node's counts.
"""
from __future__ import annotations

import numpy as np

from sbcompile.config import CompileConfig
from sbcompile.ir.graph import Graph, Node
from sbcompile.passes.targets import is_excluded

INT8_MAX = 127
SCALE_FLOOR = 1e-8


def run(graph: Graph, config: CompileConfig) -> Graph:
    graph = graph.copy()
    record = {}
    for node in [n for n in graph.nodes if n.op == "attention"]:
        if is_excluded(node.name, config):
            continue
        entry = {"q": _spike_query(graph, node, config.k)}
        for slot, label in ((1, "k"), (2, "v")):
            node.inputs[slot], entry[label] = _int8_per_token(graph, node, slot, label)
        record[node.name] = entry
    graph.meta["attention_quantize"] = record
    graph.toposort()
    return graph


def _insert(graph: Graph, before: Node, nodes: list[Node]) -> None:
    at = graph.nodes.index(before)
    graph.nodes[at:at] = nodes


def _value_like(graph: Graph, base: str, like: str, dtype: str | None = None,
                last: int | None = None) -> str:
    shape = graph.values[like].shape
    if last is not None:
        shape = tuple(shape[:-1]) + (last,)
    return graph.add_value(base, shape, dtype or graph.values[like].dtype)


def _spike_query(graph: Graph, node: Node, k: float) -> str:
    """Spike the query; return its counts."""
    q, name = node.inputs[0], f"{node.name}.q"
    counts = _value_like(graph, f"{name}.counts", q, "int32")
    vth = _value_like(graph, f"{name}.vth", q, "float32", last=1)
    xhat = _value_like(graph, f"{name}.xhat", q, "float32")
    _insert(graph, node, [
        Node(graph.fresh_name(f"{name}.encode"), "spike_encode", [q], [counts, vth],
             {"policy": "dynamic", "granularity": "token", "k": float(k), "max_count": None}),
        Node(graph.fresh_name(f"{name}.reconstruct"), "spike_decode", [counts, vth], [xhat],
             {"layout": "counts"})])
    node.inputs[0] = xhat
    return counts


def _int8_per_token(graph: Graph, node: Node, slot: int, label: str) -> tuple[str, str]:
    """(dequantized value, int8-range counts) of input ``slot`` per token and head."""
    x, name = node.inputs[slot], f"{node.name}.{label}"
    mag = _value_like(graph, f"{name}.abs", x)
    amax = _value_like(graph, f"{name}.absmax", x, last=1)
    scale = _value_like(graph, f"{name}.scale", x, last=1)
    safe = _value_like(graph, f"{name}.scale_safe", x, last=1)
    scaled = _value_like(graph, f"{name}.scaled", x)
    counts = _value_like(graph, f"{name}.counts", x, "int32")
    one = graph.add_value(f"{name}.one", (), "float32")
    ints = _value_like(graph, f"{name}.int", x)
    xhat = _value_like(graph, f"{name}.xhat", x)
    p127 = graph.add_param(f"{name}.qmax", np.float32(INT8_MAX))
    floor = graph.add_param(f"{name}.floor", np.float32(SCALE_FLOOR))
    unit = graph.add_param(f"{name}.unit", np.float32(1.0))
    op = graph.fresh_name
    _insert(graph, node, [
        Node(op(f"{name}.abs"), "abs", [x], [mag]),
        Node(op(f"{name}.absmax"), "reduce_max", [mag], [amax], {"axes": [-1], "keepdims": 1}),
        Node(op(f"{name}.scale"), "div", [amax, p127], [scale]),
        Node(op(f"{name}.scale_safe"), "max", [scale, floor], [safe]),
        Node(op(f"{name}.scaled"), "div", [x, safe], [scaled]),
        Node(op(f"{name}.encode"), "spike_encode", [scaled, unit], [counts, one],
             {"policy": "static", "max_count": INT8_MAX}),
        Node(op(f"{name}.int"), "spike_decode", [counts, one], [ints], {"layout": "counts"}),
        Node(op(f"{name}.dequantize"), "mul", [ints, safe], [xhat])])
    return xhat, counts
