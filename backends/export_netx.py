"""lava-dl netx export: the spiking graph as lava-dl's HDF5 network (``.net``), written with h5py.

netx holds a chain of layers (input, dense, conv, flatten) of stock neurons. The form written
here is exact for binary spiking chains, the graphs of static thresholds with ``max_count`` 1 and
ReLU between layers:

    counts -> spike_linear/spike_conv -> spike_decode -> relu -> spike_encode -> ...
    ... -> spike_linear/spike_conv -> spike_decode (graph output)

Each layer becomes a dense/conv layer with the int8 weights and CUBA neurons with
``iDecay = vDecay = 4096``: no current or voltage is kept between steps, so a neuron fires at step
t + 1 iff ``acc + bias > vThMant`` for the input of step t. Since a hidden layer's count is 1
exactly when its accumulator reaches some integer a* (the reference's float decode, ReLU and
rounding are monotone in acc), the exporter finds a* per neuron by evaluating the reference
kernels and writes ``bias = 1 - a*`` with ``vThMant = 0`` (shifted together into range). The output
layer never fires (``vThMant`` at its maximum): its voltage is ``64 * acc`` and the reference's
decode of that acc is the graph output. Present one sample per step; sample j's result is in the
output voltage at step j + (number of layers). Signed input counts need
``Network(..., input_message_bits=2)``.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import h5py
import numpy as np

from sbcompile.errors import UnsupportedError
from sbcompile.ir.graph import Graph, Node
from sbcompile.runtime.reference import KERNELS, node_attrs

VTH_MAX = (1 << 17) - 1  # CUBA vThMant is an unsigned 17-bit mantissa
BIAS_LIMIT = 1 << 12     # bias mantissa: signed 13 bits
STATE_LIMIT = 1 << 17    # 64 * (acc + bias) must stay inside the 24-bit voltage
CUBA_MEMORYLESS = {"type": "CUBA", "iDecay": 4096, "vDecay": 4096, "refDelay": 1,
                   "gradedSpike": False}


@dataclass
class Layer:
    product: Node                 # spike_linear or spike_conv
    decode: Node
    encode: Node                  # the spike_encode of this layer's input
    next_encode: Node | None      # the spike_encode this layer's ReLU feeds (None: output layer)
    flatten_before: bool = False


def _chain(graph: Graph) -> tuple[list[Layer], list[tuple[str, str]]]:
    """The layers of a binary spiking chain and (node, reason) for every node netx cannot hold."""
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
                refuse(node, "netx's CUBA form needs static thresholds with max_count 1 "
                             f"(binary spikes); got {a['policy']} with max_count "
                             f"{a['max_count']}")
        elif node.op == "spike_linear" and a["group_size"] not in (None,
                                                                   graph.values[node.inputs[1]].shape[1]):
            refuse(node, "weight groups have one scale each; netx holds one per neuron")
        elif node.op == "spike_conv":
            pads = a["pads"] or [0] * 4
            if len(graph.values[node.inputs[1]].shape) != 4 or pads[:2] != pads[2:]:
                refuse(node, "netx convolutions are 2-D with symmetric padding")
        elif node.op not in ("spike_decode", "relu", "reshape", "flatten", "spike_linear"):
            refuse(node, "no netx layer holds it (netx: dense, conv, flatten with CUBA neurons)")
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
        layers.append(Layer(node, dec[0], enc, after[0], flatten))
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        problems.append(("", "netx holds one input and one output"))
    elif layers and layers[0].encode.inputs[0] != graph.inputs[0]:
        refuse(layers[0].encode, "the first layer must read the graph input")
    for prev, layer in zip(layers, layers[1:]):
        if prev.next_encode is not layer.encode:
            refuse(layer.product, "layers must form one chain")
    return layers, problems


def inexpressible(graph: Graph) -> list[tuple[str, str]]:
    return _chain(graph)[1]


def _first_firing(graph: Graph, layer: Layer, weight: np.ndarray) -> np.ndarray:
    """Per output neuron, the smallest accumulator whose reference count is 1 (bounded to one
    past the largest |acc| the binary input can make)."""
    acc_bound = int(np.abs(weight.astype(np.int64)).reshape(weight.shape[0], -1).sum(1).max())
    dec = layer.decode.inputs
    vth_in = graph.params.get(dec[1], graph.params[layer.encode.inputs[1]])
    scale = graph.params[dec[2]].reshape(-1).astype(np.float64)
    bias = graph.params[dec[3]].astype(np.float64) if len(dec) > 3 and dec[3] else 0.0
    vth_next = graph.params[layer.next_encode.inputs[1]]
    t = (0.5 * vth_next.astype(np.float64) - bias) / (vth_in.astype(np.float64) * scale)
    base = np.clip(np.floor(t), -acc_bound - 1, acc_bound + 1).astype(np.int64)
    cand = base[None, :] + np.arange(-3, 5)[:, None]  # [C, N]
    y = KERNELS["spike_decode"]({"layout": "linear"}, cand[:, None, :], vth_in,
                                graph.params[dec[2]].reshape(1, -1),
                                graph.params[dec[3]] if len(dec) > 3 and dec[3] else None)
    counts, _ = KERNELS["spike_encode"](node_attrs(layer.next_encode),
                                        KERNELS["relu"]({}, y), vth_next)
    fires = counts >= 1
    if np.any(fires[:-1] & ~fires[1:]):
        raise AssertionError("decode -> relu -> encode is not monotone")
    first = np.where(fires.any(0), cand[np.argmax(fires, 0), np.arange(cand.shape[1])],
                     cand[-1] + 1)
    return np.clip(first, -acc_bound - 1, acc_bound + 1)


def _neuron(group: h5py.Group, vth: int) -> None:
    for key, value in {**CUBA_MEMORYLESS, "vThMant": vth}.items():
        group.create_dataset(f"neuron/{key}", data=value)


def _write(graph: Graph, layers: list[Layer], f: h5py.File) -> None:
    x = graph.values[graph.inputs[0]]
    groups = f.create_group("layer")
    entries = [("input", {"shape": np.array(x.shape[1:])})]
    for layer in layers:
        if layer.flatten_before:
            entries.append(("flatten", {}))
        weight = graph.params[layer.product.inputs[1]].astype(np.int64)
        fields = {"weight": weight}
        out_shape = graph.values[layer.product.outputs[0]].shape
        if layer.product.op == "spike_conv":
            a = node_attrs(layer.product)
            fields.update(shape=np.array(out_shape[1:]),
                          stride=np.array(a["strides"] or [1, 1]),
                          padding=np.array((a["pads"] or [0, 0])[:2]),
                          dilation=np.array(a["dilations"] or [1, 1]),
                          groups=a["group"])
        else:
            fields["shape"] = np.array([out_shape[-1]])
        bound = int(np.abs(weight).reshape(weight.shape[0], -1).sum(1).max())
        if bound + BIAS_LIMIT >= STATE_LIMIT:
            raise UnsupportedError(f"node '{layer.product.name}': accumulators up to {bound} "
                                   "overflow the 24-bit CUBA voltage")
        if layer.next_encode is None:
            fields["vth"] = VTH_MAX
        else:
            need = 1 - _first_firing(graph, layer, weight)  # bias - vth must equal this
            vth = max(0, int(-need.min()) - BIAS_LIMIT)
            bias = need + vth
            if bias.max() >= BIAS_LIMIT:
                raise UnsupportedError(f"node '{layer.product.name}': firing thresholds span "
                                       "more than the 13-bit bias")
            fields.update(bias=bias, vth=vth)
        entries.append(("conv" if layer.product.op == "spike_conv" else "dense", fields))
    for i, (kind, fields) in enumerate(entries):
        g = groups.create_group(str(i))
        g.create_dataset("type", (1,), "S10", [kind.encode("ascii")])
        vth = fields.pop("vth", None)
        for key, value in fields.items():
            g.create_dataset(key, data=value)
        if vth is not None:
            _neuron(g, vth)


def notes(graph: Graph) -> list[str]:
    layers = _chain(graph)[0]
    return [f"load with lava.lib.dl.netx.hdf5.Network(path, input_message_bits=2) (signed input "
            f"counts); feed one sample of counts per step: its output accumulator is the last "
            f"layer's voltage / 64 after {len(layers)} steps"]


def to_bytes(graph: Graph) -> bytes:
    layers, problems = _chain(graph)
    if problems:
        raise UnsupportedError("netx cannot hold: " + "; ".join(r for _, r in problems))
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        _write(graph, layers, f)
    return buffer.getvalue()
