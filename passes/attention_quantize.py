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
multiplies (integer q . k). The ``AttentionCounts`` record names each node's counts.
"""
from __future__ import annotations

import numpy as np

from sbcompile.config import CompileConfig
from sbcompile.ir.graph import Graph, Node
from sbcompile.ir.records import AttentionCounts, set_attention_counts
from sbcompile.passes.targets import is_excluded

INT8_MAX = 127
SCALE_FLOOR = 1e-8


def run(graph: Graph, config: CompileConfig) -> Graph:
    graph = graph.copy()
    record = {}
    for node in [n for n in graph.nodes if n.op == "attention"]:
        if is_excluded(node.name, config):
            continue
        q = _spike_query(graph, node, config.k)
        node.inputs[1], k = _int8_per_token(graph, node, 1, "k")
        node.inputs[2], v = _int8_per_token(graph, node, 2, "v")
        record[node.name] = AttentionCounts(q, k, v)
    set_attention_counts(graph, record)
    graph.toposort()
    return graph


def _spike_query(graph: Graph, node: Node, k: float) -> str:
    """Spike the query; return its counts."""
    q, name = node.inputs[0], f"{node.name}.q"
    add = _builder(graph, node)
    counts, vth = add("spike_encode", [q], [f"{name}.counts", f"{name}.vth"], f"{name}.encode",
                      policy="dynamic", granularity="token", k=float(k), max_count=None)
    node.inputs[0], = add("spike_decode", [counts, vth], [f"{name}.xhat"], f"{name}.reconstruct",
                          layout="counts")
    return counts


def _int8_per_token(graph: Graph, node: Node, slot: int, label: str) -> tuple[str, str]:
    """(dequantized value, int8-range counts) of input ``slot`` per token and head."""
    x, name = node.inputs[slot], f"{node.name}.{label}"
    p127 = graph.add_param(f"{name}.qmax", np.float32(INT8_MAX))
    floor = graph.add_param(f"{name}.floor", np.float32(SCALE_FLOOR))
    unit = graph.add_param(f"{name}.unit", np.float32(1.0))
    add = _builder(graph, node)
    mag, = add("abs", [x], [f"{name}.abs"], f"{name}.abs")
    amax, = add("reduce_max", [mag], [f"{name}.absmax"], f"{name}.absmax", axes=[-1], keepdims=1)
    scale, = add("div", [amax, p127], [f"{name}.scale"], f"{name}.scale")
    safe, = add("max", [scale, floor], [f"{name}.scale_safe"], f"{name}.scale_safe")
    scaled, = add("div", [x, safe], [f"{name}.scaled"], f"{name}.scaled")
    counts, one = add("spike_encode", [scaled, unit], [f"{name}.counts", f"{name}.one"],
                      f"{name}.encode", policy="static", max_count=INT8_MAX)
    ints, = add("spike_decode", [counts, one], [f"{name}.int"], f"{name}.int", layout="counts")
    xhat, = add("mul", [ints, safe], [f"{name}.xhat"], f"{name}.dequantize")
    return xhat, counts


def _builder(graph: Graph, before: Node):
    """``graph.add_node`` inserting each node just before ``before``."""
    def add(op: str, inputs: list[str], outputs: list[str], name: str, **attrs) -> list[str]:
        return graph.add_node(op, inputs, outputs, name, at=graph.nodes.index(before), **attrs)
    return add
