"""NIR export: a binary spiking chain (``spike_chain``) as a NIR graph, written with ``nir``.

Time mapping: binary coding with T = max_count = 1, so a count is one spike and the network runs
one step from rest (v = 0). The neurons are LIF with tau equal to the peer's step dt (1e-4 s in
snnTorch's import), r = 1 and v_leak = 0: after an Euler step the membrane is the step's input,
and the neuron fires iff it exceeds v_threshold = 1. Per layer:

- hidden layer: ``Affine`` (or ``Conv2d``) with the int8 weights as float32 and the bias
  ``1.5 - a*`` (``a*`` from ``spike_chain.first_firing``), then the LIF: it fires iff
  acc + 1.5 - a* > 1, i.e. iff acc >= a*, which is the reference's count. The float32 sums of
  integer-valued terms are exact while |acc| < 2^23 (checked per layer).
- output layer: ``Linear`` (or ``Conv2d`` without bias) gives the accumulator; the decode follows
  in the reference's float32 order as ``Linear(diag(scale))``, ``Linear(diag(vth))`` (left out
  when vth is 1) and ``Affine(I, bias)`` (diagonal 1x1 ``Conv2d`` for conv maps): one
  rounding each, as the reference rounds.
- ``Flatten`` (start_dim 0 over the unbatched shape) where the IR reshapes conv maps for a dense
  layer.
NIR's Conv2d bias is one per channel: per-channel thresholds read after flattening (thresholds
that vary within a conv channel) are refused.
"""
from __future__ import annotations

import io

import nir
import numpy as np

from sbcompile.backends.spike_chain import Layer, acc_bound, binary_chain, first_firing
from sbcompile.errors import UnsupportedError
from sbcompile.ir.graph import Graph
from sbcompile.ir.ops import node_attrs
from sbcompile.nir_time import STEP


def inexpressible(graph: Graph) -> list[tuple[str, str]]:
    layers, problems = binary_chain(graph, "NIR")
    for layer in layers:
        if acc_bound(graph.params[layer.product.inputs[1]]) >= 1 << 23:
            problems.append((layer.product.name, f"node '{layer.product.name}' "
                             f"({layer.product.op}): accumulators may reach 2^23, beyond exact "
                             "float32 sums"))
        if layer.product.op == "spike_conv" and layer.next_encode is not None:
            a = first_firing(graph, layer)
            if not np.all(a == a[:, :1, :1]):
                problems.append((layer.product.name,
                                 f"node '{layer.product.name}' (spike_conv): its neurons' firing "
                                 "thresholds vary within a channel; NIR's Conv2d bias is per "
                                 "channel"))
    return problems


def notes(graph: Graph) -> list[str]:
    return ["feed the input counts (binary coding, T = 1) one unbatched sample at a time; the "
            "LIF neurons (tau = dt = 1e-4 s) keep no state, so any number of steps gives the "
            "same spikes"]


def _conv(graph: Graph, layer: Layer, weight: np.ndarray, bias: np.ndarray) -> nir.Conv2d:
    a = node_attrs(layer.product)
    return nir.Conv2d(input_shape=tuple(graph.values[layer.product.inputs[0]].shape[2:]),
                      weight=weight, stride=tuple(a["strides"] or (1, 1)),
                      padding=tuple((a["pads"] or [0, 0])[:2]),
                      dilation=tuple(a["dilations"] or (1, 1)), groups=a["group"], bias=bias)


def _decode(graph: Graph, layer: Layer, shape: tuple) -> list[tuple[str, nir.NIRNode]]:
    """The reference's float32 decode steps, each rounded once: * scale, * vth (when not 1),
    + bias; as diagonal Linear / identity Affine nodes (diagonal 1x1 Conv2d for conv maps)."""
    dec = layer.decode.inputs
    scale = graph.params[dec[2]].reshape(-1).astype(np.float32)
    vth = graph.params.get(dec[1], graph.params[layer.encode.inputs[1]]).reshape(())
    bias = (graph.params[dec[3]].reshape(-1) if len(dec) > 3 and dec[3]
            else np.zeros(scale.size)).astype(np.float32)
    steps = [("scale", scale, None)] + ([("vth", np.full(scale.size, vth, np.float32), None)]
                                        if vth != 1 else []) + [("bias", None, bias)]
    n = scale.size
    nodes = []
    for name, factor, add in steps:
        factor = np.ones(n, np.float32) if factor is None else factor
        if layer.product.op == "spike_linear":
            node = (nir.Linear(weight=np.diag(factor)) if add is None
                    else nir.Affine(weight=np.diag(factor), bias=add))
        else:
            node = nir.Conv2d(input_shape=tuple(shape[1:]),
                              weight=np.diag(factor).reshape(n, n, 1, 1), stride=(1, 1),
                              padding=(0, 0), dilation=(1, 1), groups=1,
                              bias=np.zeros(n, np.float32) if add is None else add)
        nodes.append((name, node))
    return nodes


def to_graph(graph: Graph) -> nir.NIRGraph:
    problems = inexpressible(graph)
    if problems:
        raise UnsupportedError("NIR cannot hold: " + "; ".join(r for _, r in problems))
    layers = binary_chain(graph, "NIR")[0]
    x = graph.values[graph.inputs[0]]
    nodes: dict[str, nir.NIRNode] = {"input": nir.Input(input_type=np.array(x.shape[1:]))}
    for i, layer in enumerate(layers):
        weight = graph.params[layer.product.inputs[1]].astype(np.float32)
        shape = tuple(graph.values[layer.product.outputs[0]].shape[1:])
        conv = layer.product.op == "spike_conv"
        if layer.next_encode is None:
            nodes[f"layer{i}"] = (_conv(graph, layer, weight, np.zeros(weight.shape[0],
                                                                        np.float32))
                                  if conv else nir.Linear(weight=weight))
            nodes.update((f"layer{i}_{k}", node) for k, node in _decode(graph, layer, shape))
            out_shape = np.array(shape[-1:] if not conv else shape)
            continue
        a = first_firing(graph, layer)
        bias = (1.5 - (a[:, 0, 0] if conv else a)).astype(np.float32)
        nodes[f"layer{i}"] = (_conv(graph, layer, weight, bias) if conv
                              else nir.Affine(weight=weight, bias=bias))
        size = shape if conv else shape[-1:]
        nodes[f"layer{i}_lif"] = nir.LIF(tau=np.full(size, STEP, np.float32),
                                         r=np.ones(size, np.float32),
                                         v_leak=np.zeros(size, np.float32),
                                         v_threshold=np.ones(size, np.float32),
                                         v_reset=np.zeros(size, np.float32))
        if layer.flatten_after:
            nodes[f"layer{i}_flatten"] = nir.Flatten(input_type=np.array(shape), start_dim=0)
    nodes["output"] = nir.Output(output_type=out_shape)
    names = list(nodes)
    return nir.NIRGraph(nodes=nodes, edges=list(zip(names, names[1:])))


def to_bytes(graph: Graph) -> bytes:
    buffer = io.BytesIO()
    nir.write(buffer, to_graph(graph))
    return buffer.getvalue()
