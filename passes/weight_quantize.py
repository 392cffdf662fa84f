"""Weight quantisation: symmetric int8 per output channel, optionally per group of
``group_size`` inputs (W8ASpike), turning each spiked layer into the exact integer chain
spike_linear/spike_conv -> spike_decode. Records the share of weights at the int8 limit.
Per-channel static thresholds are folded into the weights first (W[n, i] * vth[i]), so the
integer product stays a plain count-weight product and the decode threshold is 1. Layers with
equal weights (a weight shared by several layers, the steps of an unrolled recurrence) share one
int8 copy."""
from __future__ import annotations

import dataclasses
import hashlib

import numpy as np

from sbcompile.config import CompileConfig
from sbcompile.ir.graph import Graph, Node
from sbcompile.ir.passes import PassBase, PassContext, PassResult
from sbcompile.ir.records import set_spiked_layer, spiked_layers
from sbcompile.ir.shapes import infer_node

QMAX = 127


def quantize_weight(weight: np.ndarray, group_size: int | None) -> tuple[np.ndarray, np.ndarray, int]:
    """(int8 weight, float32 scale, group size used). Linear weights [N, K] give scale [G, N];
    conv weights [O, ...] give scale [O]. Groups apply to linear weights whose K they divide."""
    w = weight.astype(np.float64)
    if weight.ndim == 2:
        n, k = w.shape
        group = group_size if group_size and k % group_size == 0 and k > group_size else k
        wg = w.reshape(n, k // group, group)
        amax = np.abs(wg).max(axis=2)  # [N, G]
        scale = np.where(amax > 0, amax / QMAX, 1.0)
        q = np.clip(np.rint(wg / scale[:, :, None]), -QMAX, QMAX).reshape(n, k)
        return q.astype(np.int8), scale.T.astype(np.float32), group
    amax = np.abs(w.reshape(w.shape[0], -1)).max(axis=1)
    scale = np.where(amax > 0, amax / QMAX, 1.0)
    q = np.clip(np.rint(w / scale.reshape((-1,) + (1,) * (w.ndim - 1))), -QMAX, QMAX)
    return q.astype(np.int8), scale.astype(np.float32), int(np.prod(w.shape[1:]))


def _quantized(graph: Graph, node: Node, weight: np.ndarray, config: CompileConfig) -> tuple:
    q, scale, group = quantize_weight(weight, config.group_size if node.op == "linear" else None)
    return (graph.add_param(f"{node.name}.weight_q", q),
            graph.add_param(f"{node.name}.weight_scale", scale), q, scale, group)


def run(graph: Graph, config: CompileConfig) -> Graph:
    graph = graph.copy()
    producers = graph.producers()
    new_nodes: list[Node] = []
    layers = spiked_layers(graph)
    shared: dict[tuple, tuple] = {}  # a weight's content -> its int8 copy, scale and group
    for node in graph.nodes:
        info = layers.get(node.name)
        if info is None or node.op not in ("linear", "conv") or info.acc is not None:
            new_nodes.append(node)
            continue
        recon = producers[node.inputs[0]]
        counts, vth = recon.inputs
        weight = graph.params[node.inputs[1]]
        if len(graph.values[vth].shape) == 1:  # per-channel static thresholds: fold into W
            threshold = graph.params[producers[vth].inputs[1]]
            weight = weight * threshold[None, :]
            vth = graph.add_param(f"{node.name}.unit_vth", np.float32(1.0))
            wq, ws, q, scale, group = _quantized(graph, node, weight, config)
        else:  # equal weights (one parameter, or copies such as an unrolled cell's) share one
            key = (node.op, weight.shape, hashlib.sha1(np.ascontiguousarray(weight)).hexdigest())
            if key not in shared:
                shared[key] = _quantized(graph, node, weight, config)
            wq, ws, q, scale, group = shared[key]
        out = node.outputs[0]
        bias = node.inputs[2] if len(node.inputs) > 2 else ""
        if node.op == "linear":
            grouped = q.shape[1] // group > 1
            op, attrs = "spike_linear", {"group_size": group if grouped else None}
            layout = "linear"
        else:
            op, layout = "spike_conv", "conv"
            attrs = {k: v for k, v in node.attrs.items()
                     if k in ("strides", "pads", "dilations", "group")}
        integer = Node(f"{node.name}.spike", op, [counts, wq], [], attrs)
        acc_shape, = infer_node(integer, [graph.values[counts].shape, q.shape], [None, None])
        integer.outputs = [graph.add_value(f"{node.name}.acc", acc_shape, "int32")]
        acc = integer.outputs[0]
        decode_inputs = [acc, vth, ws] + ([bias] if bias else [])
        decode = Node(f"{node.name}.decode", "spike_decode", decode_inputs, [out],
                      {"layout": layout})
        new_nodes += [integer, decode]
        fan_in = int(q.shape[1]) if node.op == "linear" else int(np.prod(q.shape[1:]))
        set_spiked_layer(graph, node.name, dataclasses.replace(
            info, acc=acc, output=out, weight_q=wq, weight_scale=ws, fan_in=fan_in,
            fan_out=int(q.shape[0]), group_size=group,
            weights_at_limit=float(np.mean(np.abs(q) == QMAX)),
            weight_bytes=int(q.size + scale.size * 4),
            kernel=list(q.shape[2:]) if node.op == "conv" else None))
    graph.nodes = new_nodes
    graph.remove_unused()
    return graph


class WeightQuantize(PassBase):
    name = "weight_quantize"

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        return PassResult(run(graph, ctx.config))
