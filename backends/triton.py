"""Triton backend: lower the spiking IR to a kernel plan with packed weights (``runtime/triton``
runs it).

Every ``spike_encode`` -> ``spike_linear`` (-> ``spike_decode``) chain becomes one encoder launch
(shared by all layers reading the same counts) and one matrix launch per layer with the decode
fused in: the event GEMV for up to ``EVENT_MAX_ROWS`` count rows, the int8 tensor-core GEMM
above that (docs/TRITON.md has the dispatch rules). Everything else runs through PyTorch or the
numpy reference kernels (``runtime/triton/executor.py``).
"""
from __future__ import annotations

import math

import numpy as np

from sbcompile.config import CompileConfig
from sbcompile.ir.graph import Graph
from sbcompile.ir.validate import validate
from sbcompile.ir.ops import OPS, SAFETY_COUNT, count_limit, node_attrs
from sbcompile.backends.torch import expected_densities
from sbcompile.runtime.torch.module import DEFAULT_DENSITY
from sbcompile.runtime.torch.triton_ops import event_rows as _event_rows
from sbcompile.runtime.triton import launch
from sbcompile.runtime.triton.program import EncodeStep, LinearStep, TritonProgram

__all__ = ["TritonProgram", "lower"]



def lower(graph: Graph, config: CompileConfig | None = None) -> TritonProgram:
    """The Triton program of a spiking IR graph. The expected fraction of nonzero counts of each
    encoder sets how many tokens still take the event GEMV (the rest of decode takes the dense
    paths, batches the int8 GEMM): ``config.triton_density`` when set, else the density the
    analysis measured on the calibration inputs, else ``DEFAULT_DENSITY``."""
    graph = graph.copy()
    validate(graph)
    densities = expected_densities(graph, config)
    program = TritonProgram(graph)
    producers = graph.producers()
    consumers = graph.consumers()
    for node in graph.nodes:
        if node.op != "spike_linear":
            continue
        enc = producers.get(node.inputs[0])
        if enc is None or enc.op != "spike_encode" or not _encoder_ok(graph, enc) or \
                node.inputs[1] not in graph.params:
            continue  # counts from elsewhere: the reference kernel runs this layer
        weight = graph.params[node.inputs[1]]
        n_out, channels = weight.shape
        group = node_attrs(node)["group_size"]
        grouped = group is not None and group < channels
        block = group if grouped else launch.EVENT_BLOCK
        decode = _fusable_decode(graph, node, enc, consumers)
        name = node.name
        wt = f"{node.inputs[1]}/wt"  # one copy per weight, however many layers share it
        if wt not in program.tensors:
            program.tensors[wt] = np.ascontiguousarray(weight.T)
        scale = None
        if decode is not None:
            scale = f"{name}/scale"
            g = channels // group if grouped else 1
            program.tensors[scale] = np.ascontiguousarray(
                graph.params[decode.inputs[2]].astype(np.float32).reshape(g, n_out))
        bias = decode.inputs[3] if decode is not None and len(decode.inputs) > 3 and \
            decode.inputs[3] else None
        program.linears[name] = LinearStep(
            node=name, decode=decode.name if decode else None, weight=node.inputs[1],
            wt=wt, scale=scale, bias=bias, group_size=group if grouped else None,
            gemm=launch.gemm_step(channels, group if grouped else None) is not None,
            dense=launch.dense_step(channels, group if grouped else None) is not None,
            weights=n_out * channels)
        step = program.encodes.get(enc.name)
        unit = math.gcd(block, launch.EVENT_BLOCK)
        density = densities.get(node.inputs[0], DEFAULT_DENSITY)
        rows = _event_rows(density)
        if step is None:
            program.encodes[enc.name] = EncodeStep(enc.name, channels, unit, rows, density)
        else:
            step.unit = math.gcd(step.unit, unit)
    return program


def _encoder_ok(graph: Graph, enc) -> bool:
    a = node_attrs(enc)
    if count_limit(a) > SAFETY_COUNT:  # beyond the kernels' three base-128 digits
        return False
    if a["policy"] == "static":
        t = graph.params.get(enc.inputs[1]) if len(enc.inputs) > 1 else None
        return t is not None and t.size == 1 and float(t.reshape(())) > 0
    return a["policy"] == "dynamic" and \
        a["granularity"] in OPS["spike_encode"].choices["granularity"]


def _fusable_decode(graph: Graph, linear, enc, consumers):
    """The spike_decode that only reads this layer's acc with its encoder's vth, a [G, N] scale
    parameter and an optional bias parameter, or None."""
    users = consumers.get(linear.outputs[0], [])
    if len(users) != 1 or users[0].op != "spike_decode":
        return None
    dec = users[0]
    if node_attrs(dec)["layout"] != "linear" or dec.inputs[1] != enc.outputs[1] or \
            len(dec.inputs) < 3 or dec.inputs[2] not in graph.params:
        return None
    if len(dec.inputs) > 3 and dec.inputs[3] and dec.inputs[3] not in graph.params:
        return None
    n_out, channels = graph.params[linear.inputs[1]].shape
    group = node_attrs(linear)["group_size"]
    g = channels // group if group else 1
    if graph.params[dec.inputs[2]].size != g * n_out:
        return None
    return dec
