"""Bias correction: fold the mean error spiking leaves in each layer's output into its bias.

A few steps of unary spikes (the ``ternary`` preset: T <= 8) clip large inputs and round small
ones to zero, both biased towards zero, so a layer's spiked output is off by a systematic
per-channel mean as well as by noise. Layer by layer in graph order, with every layer before it
already corrected, this pass measures on the calibration inputs the mean of
``y_float - y_spiked`` per output channel and adds it to the layer's decode bias (a new
parameter, so a bias shared with other nodes or the float graph is left as it was). Only the
float bias of ``spike_decode`` changes: counts stay integers and every target reads the new bias
as it reads any other. Config: ``bias_correction`` (on in the ``ternary`` preset).
"""
from __future__ import annotations

import numpy as np

from sbcompile.config import CompileConfig
from sbcompile.ir.graph import Graph
from sbcompile.ir.records import spiked_layers
from sbcompile.progress import track
from sbcompile.runtime.reference import evaluate


def run(graph: Graph, config: CompileConfig, float_graph: Graph, calib) -> Graph:
    """The graph with each spiked layer's decode bias corrected (``calib`` a CalibrationSet)."""
    if not config.bias_correction:
        return graph
    graph = graph.copy()
    decoders = {n.outputs[0]: n for n in graph.nodes if n.op == "spike_decode"}
    layers = [info for info in spiked_layers(graph).values() if info.output in decoders]
    order = {n.outputs[0]: i for i, n in enumerate(graph.nodes)}
    layers.sort(key=lambda info: order[info.output])
    for info in track(layers, len(layers), "correcting biases"):
        decode = decoders[info.output]
        channel_axis = 1 if decode.attrs.get("layout") == "conv" else -1
        total, n = 0.0, 0
        for batch in calib.batches(config.calib_batch):
            want = evaluate(float_graph, batch, keep=[info.output])[info.output]
            got = evaluate(graph, batch, keep=[info.output])[info.output]
            diff = np.moveaxis((want.astype(np.float64) - got), channel_axis, -1)
            total = total + diff.reshape(-1, diff.shape[-1]).sum(axis=0)
            n += diff.size // diff.shape[-1]
        shift = (total / max(n, 1)).astype(np.float32)
        old = decode.inputs[3] if len(decode.inputs) > 3 and decode.inputs[3] else None
        base = graph.params[old].astype(np.float32) if old else np.zeros_like(shift)
        bias = graph.add_param(f"{decode.name}.bias_corrected", base + shift)
        decode.inputs = decode.inputs[:3] + [bias]
    graph.remove_unused()
    return graph
