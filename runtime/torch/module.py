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


def _host_params(graph: Graph) -> set[str]:
    """Small integer parameters that every consumer reads as a shape operand."""
    readers: dict[str, list[bool]] = {}
    for node in graph.nodes:
        slots = SHAPE_SLOTS.get(node.op, set())
        for i, name in enumerate(node.inputs):
            if name in graph.params:
                readers.setdefault(name, []).append(i in slots)
    return {name for name, uses in readers.items() if all(uses)
            and graph.params[name].dtype.kind in "iu" and graph.params[name].size <= HOST_MAX}


def build_graph_module(graph: Graph, wide: bool) -> fx.GraphModule:
    """The fx graph of ``graph``: inputs in graph order; returns (outputs, integer values).
    ``wide``: float ops follow the reference's float64 order (else they compute in the
    input's dtype)."""
    root = torch.nn.Module()
    g = fx.Graph()
    env: dict[str, object] = {}
    for i, name in enumerate(graph.inputs):
        env[name] = g.placeholder(f"input_{i}")
    host = _host_params(graph)
    for i, (name, arr) in enumerate(graph.params.items()):
        if name in host:
            env[name] = [int(v) for v in np.asarray(arr).reshape(-1)]
            continue
        attr = f"param_{i}"
        root.register_buffer(attr, torch.from_numpy(np.array(arr, order="C", copy=True)))
        env[name] = g.get_attr(attr)
    for node in graph.nodes:
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


class SpikingModule(torch.nn.Module):
    """A compiled spiking model as a PyTorch module. ``forward(*inputs)`` takes the graph's
    inputs (positionally in ``input_names`` order, or by name) and returns its output (a tuple
    when there are several); ``with_integers`` returns (outputs, {integer value: tensor})."""

    def __init__(self, graph: Graph, *, wide: bool = True):
        super().__init__()
        self.input_names = list(graph.inputs)
        self.output_names = list(graph.outputs)
        self.integer_names = [n.outputs[0] for n in graph.nodes if n.op in INTEGER_OPS]
        self.input_dtypes = [getattr(torch, graph.values[n].dtype) for n in graph.inputs]
        self.graph_module = build_graph_module(graph, wide)

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
        outputs, integers = self.graph_module(*self._inputs(args, kwargs))
        return outputs, dict(zip(self.integer_names, integers))

    def forward(self, *args, **kwargs):
        outputs, _ = self.graph_module(*self._inputs(args, kwargs))
        return outputs[0] if len(outputs) == 1 else outputs
