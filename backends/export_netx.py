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

import h5py
import numpy as np

from sbcompile.backends.spike_chain import Layer, acc_bound, binary_chain, first_firing
from sbcompile.errors import UnsupportedError
from sbcompile.ir.graph import Graph
from sbcompile.ir.ops import node_attrs

VTH_MAX = (1 << 17) - 1  # CUBA vThMant is an unsigned 17-bit mantissa
BIAS_LIMIT = 1 << 12     # bias mantissa: signed 13 bits
STATE_LIMIT = 1 << 17    # 64 * (acc + bias) must stay inside the 24-bit voltage
CUBA_MEMORYLESS = {"type": "CUBA", "iDecay": 4096, "vDecay": 4096, "refDelay": 1,
                   "gradedSpike": False}


def inexpressible(graph: Graph) -> list[tuple[str, str]]:
    return binary_chain(graph, "netx")[1]


def _neuron(group: h5py.Group, vth: int) -> None:
    for key, value in {**CUBA_MEMORYLESS, "vThMant": vth}.items():
        group.create_dataset(f"neuron/{key}", data=value)


def _write(graph: Graph, layers: list[Layer], f: h5py.File) -> None:
    x = graph.values[graph.inputs[0]]
    groups = f.create_group("layer")
    entries = [("input", {"shape": np.array(x.shape[1:])})]
    for layer in layers:
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
        bound = acc_bound(weight)
        if bound + BIAS_LIMIT >= STATE_LIMIT:
            raise UnsupportedError(f"node '{layer.product.name}': accumulators up to {bound} "
                                   "overflow the 24-bit CUBA voltage")
        if layer.next_encode is None:
            fields["vth"] = VTH_MAX
        else:
            need = 1 - first_firing(graph, layer)  # bias - vth must equal this
            vth = max(0, int(-need.min()) - BIAS_LIMIT)
            bias = need + vth
            if bias.max() >= BIAS_LIMIT:
                raise UnsupportedError(f"node '{layer.product.name}': firing thresholds span "
                                       "more than the 13-bit bias")
            fields.update(bias=bias.T, vth=vth)  # conv neurons in netx's (W, H, C) order
        entries.append(("conv" if layer.product.op == "spike_conv" else "dense", fields))
        if layer.flatten_after:
            entries.append(("flatten", {}))
    for i, (kind, fields) in enumerate(entries):
        g = groups.create_group(str(i))
        g.create_dataset("type", (1,), "S10", [kind.encode("ascii")])
        vth = fields.pop("vth", None)
        for key, value in fields.items():
            g.create_dataset(key, data=value)
        if vth is not None:
            _neuron(g, vth)


def notes(graph: Graph) -> list[str]:
    layers = binary_chain(graph, "netx")[0]
    return [f"load with lava.lib.dl.netx.hdf5.Network(path, input_message_bits=2) (signed input "
            f"counts); feed one sample of counts per step: its output accumulator is the last "
            f"layer's voltage / 64 after {len(layers)} steps"]


def to_bytes(graph: Graph) -> bytes:
    layers, problems = binary_chain(graph, "netx")
    if problems:
        raise UnsupportedError("netx cannot hold: " + "; ".join(r for _, r in problems))
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        _write(graph, layers, f)
    return buffer.getvalue()
