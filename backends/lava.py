"""Lava backend: lower the spiking IR to a Lava process-graph program (``runtime/lava`` runs it
on Lava's Loihi 2 simulation, CPU, fixed point, in a supervised child process).

Mapping (docs/LAVA.md): every ``spike_encode`` becomes a population of integer integrate-and-fire
encoder neurons (one per input channel; tokens are time-multiplexed through it); every
``spike_linear`` / ``spike_conv`` becomes a synapse layer holding its int8 weights once (a
convolution is its kernel and geometry, never expanded; the chip mapping follows from the
geometry), feeding integer accumulator neurons that recover ``acc``; every other op (decode,
norms, softmax, attention, elementwise float work) is a compute process running the reference
kernel, i.e. work for the chip's embedded processors.
"""
from __future__ import annotations

import math
import numpy as np

from sbcompile.config import CompileConfig
from sbcompile.errors import SbcError
from sbcompile.ir.graph import Graph, Node
from sbcompile.ir.validate import validate
from sbcompile.runtime.lava import mapping
from sbcompile.runtime.lava.coding import check_mode, message_bits, mode_for_coding
from sbcompile.runtime.lava.connectivity import layer_geometry
from sbcompile.runtime.lava.program import FORMAT, PLAN_MEMBER, LavaProgram
from sbcompile.ir.ops import (count_limit, dynamic_count_bound, dynamic_sum_bound, node_attrs,
                              threshold_axes)
from sbcompile.ir.records import expansions, layer_of_acc
from sbcompile.runtime.reference import KERNELS

SYNAPSE_OPS = ("spike_linear", "spike_conv")

__all__ = ["LavaProgram", "lower"]


def lower(graph: Graph, config: CompileConfig | None = None,
          mode: str | None = None) -> LavaProgram:
    """The Lava program of a spiking IR graph. ``mode`` (graded | unary | bitwise) defaults to
    the one carrying ``config.coding``, else to the coding the graph's expand pass recorded,
    else graded. Raises SbcError naming the node or
    layer that cannot be lowered or mapped onto Loihi 2."""
    graph = graph.copy()
    validate(graph)
    mode = check_mode(mode or _default_mode(graph, config))
    encoders = {n.outputs[0]: _encoder(graph, n, mode) for n in graph.nodes
                if n.op == "spike_encode"}
    synapses = [_synapse(graph, n, encoders) for n in graph.nodes if n.op in SYNAPSE_OPS]
    _check_axes(graph, encoders, synapses)
    compute = [n for n in graph.nodes if n.op not in SYNAPSE_OPS + ("spike_encode",)]
    for n in compute:
        if n.op not in KERNELS:
            raise SbcError(f"node '{n.name}': op '{n.op}' has no compute kernel for Lava")
    used = {i for n in graph.nodes for i in n.inputs if i} | set(graph.outputs)
    arrays = {f"param/{name}": graph.params[name] for name in sorted(used & set(graph.params))}
    values = {k: [list(v.shape), v.dtype] for k, v in graph.values.items()
              if k not in graph.params}
    enc_map = {e["name"]: mapping.encoder_mapping(e["name"], e["neurons"], e["message_bits"])
               for e in encoders.values()}
    layer_map = {s["name"]: s.pop("mapping") for s in synapses}
    plan = {"format": FORMAT, "name": graph.name, "mode": mode,
            "inputs": list(graph.inputs), "outputs": list(graph.outputs), "values": values,
            "encoders": list(encoders.values()), "synapses": synapses,
            "compute": [n.to_json() for n in compute],
            "mapping": {"encoders": enc_map, "layers": layer_map,
                        **mapping.chip_summary(enc_map, layer_map, [n.name for n in compute])}}
    return LavaProgram(plan, arrays)


def _default_mode(graph: Graph, config: CompileConfig | None) -> str:
    coding = config.coding if config is not None else None
    if coding is None:
        codings = {e.coding for e in expansions(graph).values()}
        coding = codings.pop() if len(codings) == 1 else None
    return mode_for_coding(coding) if coding else "graded"


# ---- encoders ---------------------------------------------------------------------------------
def _encoder(graph: Graph, node: Node, mode: str) -> dict:
    attrs = node_attrs(node)
    limit = count_limit(attrs)
    sum_bound = None
    if attrs["policy"] == "dynamic":
        n_avg = _neurons(graph, node.name, node.inputs[0], attrs["granularity"])
        limit = dynamic_count_bound(attrs, n_avg)
        sum_bound = math.ceil(dynamic_sum_bound(attrs, n_avg) * (1 + 1e-5)) + 1
    threshold = node.inputs[1] if len(node.inputs) > 1 else ""
    return {"name": node.name, "node": node.to_json(), "x": node.inputs[0],
            "counts": node.outputs[0], "vth": node.outputs[1], "threshold": threshold,
            "axis": None, "neurons": None, "count_bound": limit, "sum_bound": sum_bound,
            "message_bits": message_bits(mode, limit)}


def _check_axes(graph: Graph, encoders: dict[str, dict], synapses: list[dict]) -> None:
    """Each encoder's neuron axis follows its synapses: the channels of one token (linear) or all
    channels and positions of one sample (conv)."""
    for s in synapses:
        enc = encoders[s["counts"]]
        axis = "sample" if s["op"] == "spike_conv" else "token"
        if enc["axis"] not in (None, axis):
            raise SbcError(f"encoder '{enc['name']}' feeds both linear and conv layers; the Lava "
                           "target needs one neuron layout per encoder")
        enc["axis"] = axis
    for enc in encoders.values():
        enc["axis"] = enc["axis"] or "token"  # counts read by compute nodes only
        enc["neurons"] = _neurons(graph, enc["name"], enc["x"], enc["axis"])


def _neurons(graph: Graph, where: str, value: str, axis: str) -> int:
    """Elements of one token (the last axis) or one sample (all axes but the first)."""
    shape = graph.values[value].shape
    dims = [shape[i] for i in threshold_axes(len(shape), axis)]
    if not all(isinstance(d, int) for d in dims):
        raise SbcError(f"node '{where}': the Lava target needs static {axis} dims, input "
                       f"'{value}' has shape {list(shape)}")
    return int(math.prod(dims))


# ---- synapse layers ---------------------------------------------------------------------------
def _synapse(graph: Graph, node: Node, encoders: dict[str, dict]) -> dict:
    counts, weight_name = node.inputs
    enc = encoders.get(counts)
    if enc is None:
        raise SbcError(f"node '{node.name}': its counts '{counts}' do not come straight from a "
                       "spike_encode; the Lava target needs the encoder to feed the synapse")
    if weight_name not in graph.params or graph.params[weight_name].dtype != np.int8:
        raise SbcError(f"node '{node.name}': the weight '{weight_name}' must be an int8 "
                       "parameter")
    attrs = node_attrs(node)
    cshape = graph.values[counts].shape
    in_shape = tuple(cshape[1:]) if node.op == "spike_conv" else ()
    if not all(isinstance(d, int) for d in in_shape):
        raise SbcError(f"node '{node.name}': the Lava target needs static conv input shapes, "
                       f"got {list(cshape)}")
    weight = graph.params[weight_name]
    geometry = layer_geometry(node.op, weight.shape, attrs, in_shape)
    token_shape = geometry.out_shape
    acc_shape = graph.values[node.outputs[0]].shape
    static_acc = tuple(acc_shape[-len(token_shape):])
    if all(isinstance(d, int) for d in static_acc) and static_acc != tuple(token_shape):
        raise SbcError(f"node '{node.name}': acc shape {list(acc_shape)} disagrees with the "
                       f"synapses' {list(token_shape)}")
    wmax = int(np.abs(weight.astype(np.int16)).max(initial=0))
    parts = mapping.fan_in_split(geometry, wmax, enc["count_bound"], enc["sum_bound"], node.name)
    layer = layer_of_acc(graph, node.outputs[0]) or node.name
    return {"name": node.name, "layer": layer, "op": node.op, "counts": counts,
            "encoder": enc["name"], "acc": node.outputs[0], "weight": weight_name,
            "attrs": {k: v for k, v in attrs.items() if k in ("group_size", "strides", "pads",
                                                              "dilations", "group")},
            "in_shape": list(in_shape), "rows": geometry.rows * parts, "cols": geometry.cols,
            "acc_rows": geometry.rows, "fan_in_split": parts, "token_shape": list(token_shape),
            "dense": bool(parts == 1 and node.op == "spike_linear" and geometry.group == 1),
            "mapping": mapping.layer_mapping(geometry, parts)}
