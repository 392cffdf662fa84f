"""The spiking IR graph as a ``torch.fx.GraphModule``: one fx node per IR node, parameters as
module buffers (int8 weights, scales, thresholds), loaded once.

Float ops call the kernels of ``float_ops``; the integer ops call the custom operators of
``spike_ops`` (``torch.ops.sbcompile.*``), which dispatch on the device: the plain-PyTorch exact
implementation on the CPU, the Triton kernels on a GPU. ``SpikingModule`` wraps the graph
module: called with tensors it returns the model's outputs; ``with_integers`` also returns the
integer values (each encoder's counts, each layer's accumulator) for exactness checks.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass

import numpy as np
import torch
import torch.fx as fx

from sbcompile.errors import SbcError
from sbcompile.ir.graph import Graph, Node
from sbcompile.ir.ops import INTEGER_OPS, OPS, count_limit, node_attrs
from sbcompile.runtime.torch import spike_ops  # noqa: F401  (registers torch.ops.sbcompile)
from sbcompile.runtime.torch.float_ops import SHAPE_SLOTS, TORCH_KERNELS

ENCODER_CHOICES = OPS["spike_encode"].choices

HOST_MAX = 64  # integer parameters up to this size read only as shapes stay Python lists


def _spike_args(node: Node, args: list) -> tuple:
    """The custom operator and its arguments for an integer IR node."""
    a = node_attrs(node)
    ops = torch.ops.sbcompile
    if node.op == "spike_encode":
        if a["policy"] not in ENCODER_CHOICES["policy"]:
            raise SbcError(f"node '{node.name}': unknown spike_encode policy {a['policy']!r}")
        if a["policy"] == "dynamic" and a["granularity"] not in ENCODER_CHOICES["granularity"]:
            raise SbcError(f"node '{node.name}': unknown granularity {a['granularity']!r}")
        threshold = args[1] if len(args) > 1 else None
        return ops.spike_encode.default, (
            args[0], threshold, a["policy"] == "dynamic", a["granularity"] == "sample",
            float(a["k"]), float(a["vth_min"]), float(a["vth_max"]), count_limit(a))
    if node.op == "spike_linear":
        return ops.spike_linear.default, (args[0], args[1], a["group_size"])
    if node.op == "spike_conv":
        return ops.spike_conv.default, (args[0], args[1], list(a["strides"] or []),
                                        list(a["pads"] or []), list(a["dilations"] or []),
                                        int(a["group"]))
    return ops.spike_scores.default, (args[0], args[1])


def _small_int(graph: Graph, name: str) -> bool:
    p = graph.params.get(name)
    return p is not None and p.dtype.kind in "iu" and p.size <= HOST_MAX


def _host_params(graph: Graph) -> set[str]:
    """Small integer parameters that every consumer reads as a shape operand."""
    readers: dict[str, list[bool]] = {}
    for node in graph.nodes:
        slots = SHAPE_SLOTS.get(node.op, set())
        for i, name in enumerate(node.inputs):
            if name in graph.params:
                readers.setdefault(name, []).append(i in slots)
    return {name for name, uses in readers.items() if all(uses) and _small_int(graph, name)}


def _host_side(graph: Graph) -> set[str]:
    """Small integer parameters read by shape arithmetic (the nodes computing from ``shape``
    outputs and such parameters alone): kept on the host with what they compute, so shape
    arithmetic never copies between host and device (nor breaks a CUDA graph capture)."""
    host: set[str] = set()
    keep: set[str] = set()
    for node in graph.nodes:
        if node.op in INTEGER_OPS:
            continue
        ins = [i for i in node.inputs if i]
        if node.op == "shape" or (ins and all(i in host or _small_int(graph, i) for i in ins)
                                  and any(i in host for i in ins)):
            host.update(node.outputs)
            keep.update(i for i in ins if i in graph.params)
    return keep


def build_graph_module(graph: Graph, wide: bool, chains: str | None = None,
                       densities: dict[str, float] | None = None,
                       device: str = "cpu") -> fx.GraphModule:
    """The fx graph of ``graph``: inputs in graph order, then ``store_acc``; returns (outputs,
    integer values). ``wide``: float ops follow the reference's float64 order (else they
    compute in the input's dtype). ``chains``: each encoder and the layers reading its counts
    become one fused op (``find_chains``), called through the dispatcher ("op") or directly on
    the Triton kernels ("direct", for the interpreter); ``densities`` plan their GPU paths;
    ``store_acc`` False leaves fused layers' accumulators unwritten (returned empty);
    ``device`` (cpu | cuda): the device type the fused ops' weights are prepared for."""
    root = torch.nn.Module()
    g = fx.Graph()
    env: dict[str, object] = {}
    for i, name in enumerate(graph.inputs):
        env[name] = g.placeholder(f"input_{i}")
    store_acc = g.placeholder("store_acc")
    host = _host_params(graph)
    host_side = _host_side(graph) - host
    buffers: dict[str, str] = {}

    def buffer(name: str, tensor: torch.Tensor) -> fx.Node:
        if name not in buffers:
            buffers[name] = f"param_{len(buffers)}"
            root.register_buffer(buffers[name], tensor)
        return g.get_attr(buffers[name])

    for i, (name, arr) in enumerate(graph.params.items()):
        if name in host:
            env[name] = [int(v) for v in np.asarray(arr).reshape(-1)]
        elif name in host_side:  # a plain attribute: .to(device) leaves it on the host
            setattr(root, f"host_{i}", torch.from_numpy(np.array(arr, copy=True)))
            env[name] = g.get_attr(f"host_{i}")
        else:
            env[name] = buffer(name, torch.from_numpy(np.array(arr, order="C", copy=True)))
    fused = find_chains(graph) if chains else {}
    done: set[str] = set()
    for node in graph.nodes:
        if node.name in done:
            continue
        if node.name in fused:
            chain = fused[node.name]
            _emit_chain(g, env, graph, chain, chains, buffer, (densities or {}).get(
                node.outputs[0], DEFAULT_DENSITY), store_acc, device)
            done.update(n.name for n in chain.layers)
            done.update(d.name for d in chain.decodes if d is not None)
            continue
        args = [env[i] if i else None for i in node.inputs]
        if node.op in INTEGER_OPS:
            target, call_args = _spike_args(node, args)
            out = g.call_function(target, call_args)
        elif node.op in TORCH_KERNELS:
            attrs = {**node_attrs(node), "_wide": wide}
            out = g.call_function(TORCH_KERNELS[node.op], (attrs, *args))
        else:
            raise SbcError(f"node '{node.name}': op '{node.op}' has no PyTorch kernel")
        if len(node.outputs) == 1 and node.op not in ("split", "spike_encode", "topk"):
            env[node.outputs[0]] = out
        else:
            for j, name in enumerate(node.outputs):
                env[name] = g.call_function(operator.getitem, (out, j))
    integers = [n.outputs[0] for n in graph.nodes if n.op in INTEGER_OPS]
    g.output((tuple(env[o] for o in graph.outputs), tuple(env[v] for v in integers)))
    return fx.GraphModule(root, g, class_name="SpikingGraph")


DEFAULT_DENSITY = 0.8  # count-level density of SpikingBrain-7B (18.4 % zeros, FACTS.md)


@dataclass
class Chain:
    """A spike encoder and the layers reading its counts (all spike_linear or all 2-d
    spike_conv of group 1, weights parameters), each with its fused spike_decode or None."""
    encoder: Node
    layers: list[Node]
    decodes: list[Node | None]


def find_chains(graph: Graph) -> dict[str, Chain]:
    """The fusable chains, by encoder name: encoders whose counts only such layers read."""
    consumers = graph.consumers()
    chains = {}
    for enc in graph.nodes:
        if enc.op != "spike_encode":
            continue
        layers = consumers.get(enc.outputs[0], [])
        ops = {n.op for n in layers}
        if ops not in ({"spike_linear"}, {"spike_conv"}) or \
                any(n.inputs[1] not in graph.params for n in layers):
            continue
        if ops == {"spike_conv"} and any(
                int(node_attrs(n)["group"]) != 1 or graph.params[n.inputs[1]].ndim != 4
                for n in layers):
            continue
        chains[enc.name] = Chain(enc, layers, [_fusable_decode(graph, n, enc, consumers)
                                               for n in layers])
    return chains


def _fusable_decode(graph: Graph, layer: Node, enc: Node, consumers) -> Node | None:
    """The spike_decode that alone reads this layer's acc, with its encoder's vth, a scale
    parameter of one value per group and output, and an optional bias parameter."""
    users = consumers.get(layer.outputs[0], [])
    if len(users) != 1 or users[0].op != "spike_decode":
        return None
    dec = users[0]
    layout = "linear" if layer.op == "spike_linear" else "conv"
    if node_attrs(dec)["layout"] != layout or dec.inputs[1] != enc.outputs[1] or \
            len(dec.inputs) < 3 or dec.inputs[2] not in graph.params:
        return None
    if len(dec.inputs) > 3 and dec.inputs[3] and dec.inputs[3] not in graph.params:
        return None
    weight = graph.params[layer.inputs[1]]
    n_out = weight.shape[0]
    if layout == "linear":
        group = node_attrs(layer)["group_size"]
        per = weight.shape[1] // group if group else 1
        return dec if graph.params[dec.inputs[2]].size == per * n_out else None
    return dec if graph.params[dec.inputs[2]].size == n_out else None


def _emit_chain(g: fx.Graph, env: dict, graph: Graph, chain: Chain, mode: str, buffer,
                density: float, store_acc, device: str) -> None:
    """One fused call for ``chain``; its outputs bound to the IR values it replaces."""
    a = node_attrs(chain.encoder)
    x = env[chain.encoder.inputs[0]]
    threshold = env[chain.encoder.inputs[1]] if len(chain.encoder.inputs) > 1 and \
        chain.encoder.inputs[1] else None
    weights = [env[n.inputs[1]] for n in chain.layers]
    scales = [env[d.inputs[2]] if d is not None else None for d in chain.decodes]
    biases = [env[d.inputs[3]] if d is not None and len(d.inputs) > 3 and d.inputs[3] else None
              for d in chain.decodes]
    enc_args = (a["policy"] == "dynamic", a["granularity"] == "sample", float(a["k"]),
                float(a["vth_min"]), float(a["vth_max"]), count_limit(a))
    if chain.layers[0].op == "spike_linear":
        from sbcompile.runtime.torch.triton_ops import event_rows

        groups = [int(node_attrs(n)["group_size"] or 0) for n in chain.layers]
        wts = [buffer(f"{n.inputs[1]}/wt", torch.from_numpy(np.ascontiguousarray(
            graph.params[n.inputs[1]].T))) if event_rows(density) else None
            for n in chain.layers]
        name = "spiked_linears"
        args = (x, threshold, weights, wts, scales, biases, groups, *enc_args, float(density),
                store_acc)
    else:
        from sbcompile.runtime.torch.triton_ops import conv_weight

        geometry = []
        for n in chain.layers:
            c = node_attrs(n)
            geometry += list(c["strides"] or [1, 1]) + list(c["pads"] or [0] * 4) + \
                list(c["dilations"] or [1, 1])
        prepared, bounds = [], []
        for n in chain.layers:
            w = torch.from_numpy(graph.params[n.inputs[1]])
            bounds.append(int(w.to(torch.int64).abs().flatten(1).sum(dim=1).max()))
            prepared.append(buffer(f"{n.inputs[1]}/{device}", w.float().contiguous(
                memory_format=torch.channels_last) if device == "cpu" else conv_weight(w)))
        name = "spiked_convs"
        args = (x, threshold, weights, prepared, scales, biases, bounds, geometry, *enc_args,
                store_acc)
    if mode == "direct":
        from sbcompile.runtime.torch.triton_ops import DIRECT

        target = DIRECT[name]
    else:
        target = getattr(torch.ops.sbcompile, name).default
    out = g.call_function(target, args)
    env[chain.encoder.outputs[0]] = g.call_function(operator.getitem, (out, 0))
    env[chain.encoder.outputs[1]] = g.call_function(operator.getitem, (out, 1))
    accs = g.call_function(operator.getitem, (out, 2))
    ys = g.call_function(operator.getitem, (out, 3))
    for i, (layer, dec) in enumerate(zip(chain.layers, chain.decodes)):
        env[layer.outputs[0]] = g.call_function(operator.getitem, (accs, i))
        if dec is not None:
            env[dec.outputs[0]] = g.call_function(operator.getitem, (ys, i))


class SpikingModule(torch.nn.Module):
    """A compiled spiking model as a PyTorch module. ``forward(*inputs)`` takes the graph's
    inputs (positionally in ``input_names`` order, or by name) and returns its output (a tuple
    when there are several); ``with_integers`` returns (outputs, {integer value: tensor}).
    ``wide``, ``chains`` and ``densities`` as ``build_graph_module``; ``cuda_graphs``: on a
    GPU, each input shape is captured once as a CUDA graph and replayed."""

    def __init__(self, graph: Graph, *, wide: bool = True, chains: str | None = None,
                 densities: dict[str, float] | None = None, cuda_graphs: bool = False,
                 device: str = "cpu"):
        super().__init__()
        self.input_names = list(graph.inputs)
        self.output_names = list(graph.outputs)
        self.integer_names = [n.outputs[0] for n in graph.nodes if n.op in INTEGER_OPS]
        self.input_dtypes = [getattr(torch, graph.values[n].dtype) for n in graph.inputs]
        self.graph_module = build_graph_module(graph, wide, chains, densities, device)
        self.cuda_graphs = cuda_graphs
        self._graphs: dict[tuple, object] = {}

    def _call(self, inputs: list[torch.Tensor], store_acc: bool):
        if not (self.cuda_graphs and inputs and inputs[0].is_cuda):
            return self.graph_module(*inputs, store_acc)
        from sbcompile.runtime.torch.cuda_graphs import CapturedCall

        key = (store_acc,) + tuple((tuple(x.shape), x.dtype) for x in inputs)
        if key not in self._graphs:
            self._graphs[key] = CapturedCall(lambda *xs: self.graph_module(*xs, store_acc),
                                             inputs)
        return self._graphs[key](inputs)

    def _inputs(self, args: tuple, kwargs: dict) -> list[torch.Tensor]:
        if kwargs:
            missing = [n for n in self.input_names[len(args):] if n not in kwargs]
            if missing:
                raise SbcError(f"input '{missing[0]}' is missing (the model's inputs: "
                               f"{', '.join(self.input_names)})")
            args = args + tuple(kwargs[n] for n in self.input_names[len(args):])
        if len(args) != len(self.input_names):
            raise SbcError(f"the model takes {len(self.input_names)} inputs "
                           f"({', '.join(self.input_names)}), got {len(args)}")
        return [x.to(dtype) for x, dtype in zip(args, self.input_dtypes)]

    def with_integers(self, *args, **kwargs) -> tuple[tuple, dict[str, torch.Tensor]]:
        outputs, integers = self._call(self._inputs(args, kwargs), True)
        return outputs, dict(zip(self.integer_names, integers))

    def forward(self, *args, **kwargs):
        outputs, _ = self._call(self._inputs(args, kwargs), False)
        return outputs[0] if len(outputs) == 1 else outputs
