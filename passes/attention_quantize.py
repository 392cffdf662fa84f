"""SpikingBrain's attention numerics: the query of softmax attention is spiked, keys and values
are INT8 per token and head (the INT8 KV cache), and the scores are an exact integer product
(FACTS.md section 1). The pipeline runs it after spike_quantize when
``config.attention_quantize`` is set (presets ``spikingbrain`` and its alias
``spikingbrain_kv8``).

Every ``attention`` node not kept float (``exclude``, or a ``layers`` entry with ``float``)
becomes:
- q [B, H, T, D] -> ``spike_encode`` (dynamic, per token and head: V_th = mean|q| / k over D, k
  the node's ``layer_settings``): integer counts and their threshold;
- k and v -> s = max(max|x| over D, 1e-8) / 127 per token and head; counts =
  ``spike_encode(x / s)`` with the static threshold 1 and max_count 127 (round half to even,
  clipped: symmetric int8), cast to int8: what a target stores as its KV cache;
- ``spike_scores``: q counts times int8 K^T, int32 (exact on every target);
- ``spike_attention`` in the attention node's place: the float rescale vth_q * s_k / sqrt(D),
  the causal/window band and mask, softmax, and the product of the float probabilities with the
  dequantised int8 V (SpikingBrain keeps softmax and its value product in float: its INT8 KV
  cache is dequantised for attention, the probabilities are never quantised).
The ``AttentionCounts`` record names each node's counts and scores. An attention whose head
dimension is not static is left in float.
"""
from __future__ import annotations

import math

import numpy as np

from sbcompile.config import CompileConfig, layer_settings
from sbcompile.ir.graph import Graph, Node
from sbcompile.ir.passes import PassBase, PassContext, PassResult
from sbcompile.ir.ops import node_attrs
from sbcompile.ir.records import AttentionCounts, set_attention_counts
from sbcompile.passes.targets import is_excluded

INT8_MAX = 127
SCALE_FLOOR = 1e-8


def run(graph: Graph, config: CompileConfig) -> Graph:
    graph = graph.copy()
    record = {}
    for node in [n for n in graph.nodes if n.op == "attention"]:
        head_dim = graph.values[node.inputs[0]].shape[3]
        if is_excluded(node.name, config) or not isinstance(head_dim, int):
            continue
        a = node_attrs(node)
        add = _builder(graph, node)
        q_counts, q_vth = _spike_query(add, node, layer_settings(config, node.name).k)
        k_int8, k_scale, k_counts = _int8_per_token(graph, add, node, 1, "k")
        v_int8, v_scale, v_counts = _int8_per_token(graph, add, node, 2, "v")
        scores, = add("spike_scores", [q_counts, k_int8], [f"{node.name}.scores"],
                      f"{node.name}.scores")
        mask = node.inputs[3:4]
        node.op = "spike_attention"
        node.inputs = [scores, q_vth, k_scale, v_int8, v_scale, *mask]
        scale = a["scale"] if a["scale"] is not None else 1.0 / math.sqrt(head_dim)
        node.attrs = {"scale": float(scale), "causal": a["causal"], "window": a["window"]}
        record[node.name] = AttentionCounts(q_counts, k_counts, v_counts, scores)
    set_attention_counts(graph, record)
    graph.toposort()
    return graph


def _spike_query(add, node: Node, k: float) -> tuple[str, str]:
    """The query's counts and threshold."""
    q, name = node.inputs[0], f"{node.name}.q"
    counts, vth = add("spike_encode", [q], [f"{name}.counts", f"{name}.vth"], f"{name}.encode",
                      policy="dynamic", granularity="token", k=float(k), max_count=None)
    return counts, vth


def _int8_per_token(graph: Graph, add, node: Node, slot: int,
                    label: str) -> tuple[str, str, str]:
    """(int8 values, scale per token and head, their int32 counts) of input ``slot``."""
    x, name = node.inputs[slot], f"{node.name}.{label}"
    p127 = graph.add_param(f"{name}.qmax", np.float32(INT8_MAX))
    floor = graph.add_param(f"{name}.floor", np.float32(SCALE_FLOOR))
    unit = graph.add_param(f"{name}.unit", np.float32(1.0))
    mag, = add("abs", [x], [f"{name}.abs"], f"{name}.abs")
    amax, = add("reduce_max", [mag], [f"{name}.absmax"], f"{name}.absmax", axes=[-1], keepdims=1)
    scale, = add("div", [amax, p127], [f"{name}.scale"], f"{name}.scale")
    safe, = add("max", [scale, floor], [f"{name}.scale_safe"], f"{name}.scale_safe")
    scaled, = add("div", [x, safe], [f"{name}.scaled"], f"{name}.scaled")
    counts, _ = add("spike_encode", [scaled, unit], [f"{name}.counts", f"{name}.one"],
                    f"{name}.encode", policy="static", max_count=INT8_MAX)
    int8, = add("cast", [counts], [f"{name}.int8"], f"{name}.int8", to="int8")
    return int8, safe, counts


def _builder(graph: Graph, before: Node):
    """``graph.add_node`` inserting each node just before ``before``."""
    def add(op: str, inputs: list[str], outputs: list[str], name: str, **attrs) -> list[str]:
        return graph.add_node(op, inputs, outputs, name, at=graph.nodes.index(before), **attrs)
    return add


class AttentionQuantize(PassBase):
    """SpikingBrain's attention numerics, when ``config.attention_quantize`` asks for them."""

    name = "attention_quantize"

    def applies(self, graph: Graph, ctx: PassContext) -> bool:
        return bool(ctx.config.attention_quantize)

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        return PassResult(run(graph, ctx.config))
