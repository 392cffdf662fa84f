"""Binary spiking chains, the part of the spiking IR that netx and NIR hold exactly.

A chain is static-threshold layers with ``max_count`` 1 and ReLU between them:

    counts -> spike_linear/spike_conv -> spike_decode -> relu [-> reshape] -> spike_encode -> ...
    ... -> spike_linear/spike_conv -> spike_decode (graph output)

Every hidden neuron's next count is 1 exactly when its integer accumulator reaches a threshold
``first_firing`` finds with the reference kernels, so a peer's threshold neuron with a bias
reproduces the counts bit for bit.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sbcompile.ir.graph import Graph, Node
from sbcompile.ir.ops import node_attrs
from sbcompile.runtime.reference import KERNELS


@dataclass
class Layer:
    product: Node                 # spike_linear or spike_conv
    decode: Node
    encode: Node                  # the spike_encode of this layer's input
    next_encode: Node | None      # the spike_encode this layer's ReLU feeds (None: output layer)
    flatten_after: bool = False   # its spikes are flattened (C, H, W -> C*H*W) for the next


def binary_chain(graph: Graph, fmt: str) -> tuple[list[Layer], list[tuple[str, str]]]:
    """The layers of a binary spiking chain, or (node, reason) for the nodes that keep the graph
    from being one: first the nodes of ops or attributes a chain cannot have, else the nodes
    out of the chain's structure (``fmt`` names the format in the reasons)."""
    problems = []
    producers, consumers = graph.producers(), graph.consumers()

    def refuse(node: Node, reason: str) -> None:
        problems.append((node.name, f"node '{node.name}' ({node.op}): {reason}"))

    def follow(value: str) -> list[Node]:
        return consumers.get(value, [])

    for node in graph.nodes:
        a = node_attrs(node)
        if node.op == "spike_encode":
            if a["policy"] != "static" or a["max_count"] != 1:
                refuse(node, f"{fmt} needs static thresholds with max_count 1 (binary "
                             f"spikes); got {a['policy']} with max_count {a['max_count']}"
                             + _why_not_steps(a))
        elif node.op == "spike_linear" and a["group_size"] not in (
                None, graph.values[node.inputs[1]].shape[1]):
            refuse(node, f"weight groups have one scale each; {fmt} holds one per neuron")
        elif node.op == "spike_conv":
            pads = a["pads"] or [0] * 4
            if len(graph.values[node.inputs[1]].shape) != 4 or pads[:2] != pads[2:]:
                refuse(node, f"{fmt} convolutions are 2-D with symmetric padding")
        elif node.op not in ("spike_decode", "relu", "reshape", "flatten", "spike_linear"):
            refuse(node, f"no {fmt} layer holds it (binary chains of dense/conv layers, ReLU "
                         "and flatten)")
    if problems:  # the structure checks below would only repeat their consequences
        return [], problems
    layers = []
    for node in graph.nodes:
        if node.op not in ("spike_linear", "spike_conv"):
            continue
        enc = producers.get(node.inputs[0])
        dec = follow(node.outputs[0])
        if enc is None or enc.op != "spike_encode" or len(dec) != 1 or \
                dec[0].op != "spike_decode" or len(dec[0].inputs) < 3:
            refuse(node, "not an encode -> product -> decode layer")
            continue
        out = dec[0].outputs[0]
        if out in graph.outputs:
            layers.append(Layer(node, dec[0], enc, None))
            continue
        nxt = follow(out)
        if len(nxt) != 1 or nxt[0].op != "relu":
            refuse(dec[0], "a hidden layer must feed one ReLU (binary spikes are unsigned)")
            continue
        value, flatten = nxt[0].outputs[0], False
        while len(follow(value)) == 1 and follow(value)[0].op in ("reshape", "flatten"):
            value, flatten = follow(value)[0].outputs[0], True
        after = follow(value)
        if len(after) != 1 or after[0].op != "spike_encode":
            refuse(nxt[0], "a ReLU must feed the next layer's spike_encode only")
            continue
        maps = graph.values[out].shape[1:]
        if flatten and tuple(graph.values[value].shape[1:]) != (int(np.prod(maps)),):
            refuse(after[0], "only a flattening reshape may sit between layers")
            continue
        layers.append(Layer(node, dec[0], enc, after[0], flatten))
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        problems.append(("", f"{fmt} holds one input and one output"))
    elif layers and layers[0].encode.inputs[0] != graph.inputs[0]:
        refuse(layers[0].encode, "the first layer must read the graph input")
    for prev, layer in zip(layers, layers[1:]):
        if prev.next_encode is not layer.encode:
            refuse(layer.product, "layers must form one chain")
    return layers, problems


def _why_not_steps(attrs: dict) -> str:
    """What a static multi-step encoder (T steps of ternary spikes) would need of a peer."""
    if attrs["policy"] != "static" or not attrs["max_count"] or attrs["max_count"] <= 1:
        return ""
    return (f" ({attrs['max_count']} = T steps of ternary spikes: the next layer's count is "
            "known only after the whole window, which a stock neuron cannot integrate and then "
            "emit; compile with --set max_count=1 for the one-step form)")


def acc_bound(weight: np.ndarray) -> int:
    """The largest |acc| binary (or ternary) input counts can make with ``weight``."""
    return int(np.abs(weight.astype(np.int64)).reshape(weight.shape[0], -1).sum(1).max())


def first_firing(graph: Graph, layer: Layer) -> np.ndarray:
    """Per neuron of a hidden layer (shape [N], or [O, H, W] for a convolution), the smallest
    accumulator whose next count is 1 by the reference's own kernels (decode, ReLU, encode),
    bounded to one past ``acc_bound``. Decode, ReLU and rounding are monotone in acc, so the
    count is 1 exactly when acc >= this value."""
    weight = graph.params[layer.product.inputs[1]]
    bound = acc_bound(weight)
    shape = tuple(graph.values[layer.product.outputs[0]].shape[1:])
    if layer.product.op == "spike_linear":
        shape = shape[-1:]
    per_channel = (-1,) + (1,) * (len(shape) - 1)
    dec = layer.decode.inputs
    vth_in = graph.params.get(dec[1], graph.params[layer.encode.inputs[1]]).reshape(())
    scale = graph.params[dec[2]].reshape(per_channel)
    bias = graph.params[dec[3]].reshape(per_channel) if len(dec) > 3 and dec[3] else None
    vth_next = graph.params[layer.next_encode.inputs[1]]
    vth_next = vth_next.reshape(shape if vth_next.size > 1 else ())
    t = (0.5 * vth_next.astype(np.float64) - (0.0 if bias is None else bias)) / (
        vth_in.astype(np.float64) * scale)
    base = np.clip(np.floor(np.broadcast_to(t, shape)), -bound - 1, bound + 1).astype(np.int64)
    cand = base[None] + np.arange(-3, 5).reshape((-1,) + (1,) * len(shape))
    conv = layer.product.op == "spike_conv"
    acc = (cand if conv else cand[:, None, :]).astype(np.int32)  # candidates as the batch
    y = KERNELS["spike_decode"]({"layout": "conv" if conv else "linear"}, acc, vth_in,
                                *[graph.params[i] for i in dec[2:] if i])
    counts, _ = KERNELS["spike_encode"](node_attrs(layer.next_encode), KERNELS["relu"]({}, y),
                                        vth_next)
    fires = counts >= 1
    if np.any(fires[:-1] & ~fires[1:]):
        raise AssertionError("decode -> relu -> encode is not monotone in acc")
    first = np.where(fires.any(0), np.take_along_axis(cand, fires.argmax(0)[None], 0)[0],
                     cand[-1] + 1)
    return np.clip(first, -bound - 1, bound + 1)
