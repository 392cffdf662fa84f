"""Count bounds from measurement: the largest |count| each unbounded spike encoder (SpikingBrain's
dynamic thresholds have no clamp) produces on the calibration inputs, times a safety margin,
becomes its ``max_count``.

Without it every target must assume the worst case, ``k x (elements averaged) + 1`` (all of a
token's mass on one element: 86401 for a 3 x 28800 conv input), which overflows Lava's 24-bit
neuron state and onnx-qdq's exact float32 range on real image sizes. A measured bound is
usually a few dozen. Counts beyond it saturate; ``saturations`` counts them on any input (the
report shows the calibration figure, ``sbcompile run`` the figure for its inputs).

Config: ``count_bound`` (``measured`` or ``worst_case``) and ``count_margin`` (default 2:
counts up to twice the largest seen pass unclipped).
"""
from __future__ import annotations

import math

import numpy as np

from sbcompile.config import CompileConfig
from sbcompile.ir.graph import Graph
from sbcompile.ir.passes import PassBase, PassContext, PassResult
from sbcompile.ir.records import CountBound, count_bounds, set_count_bounds
from sbcompile.progress import track
from sbcompile.runtime.reference import evaluate, values
from sbcompile.runtime.reference_spike import quantize_counts


def _unbounded(graph: Graph) -> list:
    return [n for n in graph.nodes if n.op == "spike_encode" and n.attrs.get("max_count") is None]


def run(graph: Graph, config: CompileConfig, calib) -> Graph:
    """Set ``max_count`` of every unbounded encoder from the calibration inputs (a
    CalibrationSet); record a ``CountBound`` per encoder."""
    encoders = _unbounded(graph)
    if config.count_bound != "measured" or not encoders:
        return graph
    graph = graph.copy()
    encoders = _unbounded(graph)
    seen = {n.name: 0 for n in encoders}
    encoder_of = {n.outputs[0]: n.name for n in encoders}
    for batch in track(calib.batches(config.calib_batch), calib.num_batches(config.calib_batch),
                       "measuring count bounds"):
        for value, arr in values(graph, batch, only=encoder_of):  # each as it is made
            name = encoder_of[value]
            seen[name] = max(seen[name], int(np.abs(arr).max(initial=0)))
    bounds = count_bounds(graph)
    for n in encoders:
        bound = max(1, math.ceil(seen[n.name] * config.count_margin))
        n.attrs["max_count"] = bound
        bounds[n.name] = CountBound(seen[n.name], bound, config.count_margin)
    set_count_bounds(graph, bounds)
    return graph


def saturations(graph: Graph, feeds: dict[str, np.ndarray]) -> dict[str, dict]:
    """Per encoder with a measured bound: how many counts of ``feeds`` it clipped, and of how
    many."""
    measured = count_bounds(graph)
    bounded = [n for n in graph.nodes if n.op == "spike_encode" and n.name in measured]
    if not bounded:
        return {}
    env = evaluate(graph, feeds, keep=[v for n in bounded for v in (n.inputs[0], n.outputs[1])])
    result = {}
    for n in bounded:
        free = quantize_counts(env[n.inputs[0]], env[n.outputs[1]], 2 ** 30)  # the encoder's vth
        bound = int(n.attrs["max_count"])
        result[n.name] = {"saturated": int(np.sum(np.abs(free) > bound)),
                          "counts": int(free.size), "bound": bound}
    return result


class CountBounds(PassBase):
    """Measured bounds, when there are calibration inputs and the context measures them."""

    name = "count_bounds"

    def applies(self, graph: Graph, ctx: PassContext) -> bool:
        return ctx.calib is not None and ctx.measure_bounds

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        return PassResult(run(graph, ctx.config, ctx.calib))
