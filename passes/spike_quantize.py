"""Spike quantisation: put a spike encoder in front of every layer to be spiked.

Each spiked input x becomes ``spike_encode(x) -> counts, vth`` and the layer reads the
reconstruction ``spike_decode(counts, vth)``; the graph stays runnable (simulated spiking) until
weight_quantize turns the layer itself into an integer spike layer. Layers that read the same
input share one encoder (q, k and v spike one tensor once).
Thresholds: ``dynamic`` is SpikingBrain's per-token mean(|x|)/k (per sample for convolutions, so
that the threshold factors out of the convolution sum); ``static`` picks calibrated thresholds, one
per tensor or (linear layers, threshold_granularity=channel) one per input channel, by percentile
or by minimising the squared reconstruction error over the calibration histograms. Per-channel
thresholds are folded into the weights by weight_quantize.
"""
from __future__ import annotations

import numpy as np

from sbcompile.config import CompileConfig, LayerSettings
from sbcompile.errors import SbcError
from sbcompile.ir.graph import Graph, Node
from sbcompile.ir.records import SpikedLayer, set_spiked_layer
from sbcompile.passes.targets import spike_groups


def run(graph: Graph, config: CompileConfig) -> Graph:
    graph = graph.copy()
    for group in spike_groups(graph, config):
        for node in group.layers:
            if node.op == "matmul":
                _matmul_to_linear(graph, node)
        value, layers, settings = group.value, group.layers, group.settings
        granularity = "sample" if any(n.op == "conv" for n in layers) else "token"
        if granularity == "sample" and any(n.op != "conv" for n in layers):
            granularity = "token"
            layers = [n for n in layers if n.op != "conv"]  # rare: leave the convs in float
        encode_inputs, attrs = [value], _encoder_attrs(settings, granularity)
        if settings.policy == "static":
            per_channel = (settings.threshold_granularity == "channel"
                           and all(n.op == "linear" for n in layers))
            vth = static_threshold(graph, value, settings, per_channel)
            encode_inputs.append(graph.add_param(f"{layers[0].name}.vth", vth))
        name = layers[0].name
        position = graph.nodes.index(layers[0])
        vth_base = f"{name}.vth_dyn" if settings.policy == "dynamic" else f"{name}.vth_out"
        counts, vth_v = graph.add_node("spike_encode", encode_inputs,
                                       [f"{name}.counts", vth_base], f"{name}.encode",
                                       at=position, **attrs)
        encoder = graph.nodes[position].name
        xhat, = graph.add_node("spike_decode", [counts, vth_v], [f"{name}.xhat"],
                               f"{name}.reconstruct", at=position + 1, layout="counts")
        graph.replace_uses(value, xhat, only=layers)
        for layer in layers:
            set_spiked_layer(graph, layer.name, SpikedLayer(layer.op, value, counts, vth_v,
                                                            encoder))
    graph.toposort()
    return graph


def _encoder_attrs(settings: LayerSettings, granularity: str) -> dict:
    attrs = {"policy": settings.policy, "granularity": granularity,
             "max_count": settings.max_count}
    if settings.policy == "dynamic":
        attrs["k"] = float(settings.k)
    return attrs


def _matmul_to_linear(graph: Graph, node: Node) -> None:
    """matmul(x, B[K, N]) with constant B is linear(x, B.T)."""
    weight = graph.params[node.inputs[1]]
    node.op = "linear"
    node.inputs = [node.inputs[0], graph.add_param(f"{node.name}.weight", weight.T.copy())]
    node.attrs = {}


def static_threshold(graph: Graph, value: str, settings: LayerSettings,
                     per_channel: bool = False) -> np.ndarray:
    """The static threshold of ``value``: the layer's fixed one, else calibrated: a scalar, or
    one per input channel (last axis)."""
    if settings.threshold is not None:
        return np.float32(settings.threshold)
    cal = graph.meta.get("calibration", {}).get(value)
    if cal is None:
        raise SbcError(f"static thresholds need calibration data (no statistics for '{value}'); "
                       "pass --calib")
    if settings.max_count is None:
        raise SbcError("static thresholds need max_count")
    if per_channel:
        hist, top = cal["channel_hist"], cal["channel_absmax"]
    else:
        hist, top = cal["hist"][None], np.array([cal["absmax"]])
    vth = threshold_from_histogram(np.asarray(hist, dtype=np.float64),
                                   np.asarray(top, dtype=np.float64), settings)
    return (vth if per_channel else vth[0]).astype(np.float32)


def threshold_from_histogram(hist: np.ndarray, top: np.ndarray,
                             settings: LayerSettings) -> np.ndarray:
    """Thresholds [C] from |x| histograms [C, B] over [0, top[c]]: the percentile clip level over
    max_count, or the threshold minimising the squared reconstruction error (searched so the clip
    level max_count * vth spans [top / 2^12, top])."""
    top = np.where(top > 0, top, 1.0)
    bins = hist.shape[1]
    centers = (np.arange(bins) + 0.5)[None, :] * (top[:, None] / bins)
    m = settings.max_count
    if settings.calib_method == "percentile":
        cdf = np.cumsum(hist, axis=1) / np.maximum(hist.sum(axis=1, keepdims=True), 1.0)
        idx = np.minimum((cdf < settings.percentile / 100.0).sum(axis=1), bins - 1)
        return np.maximum(centers[np.arange(len(top)), idx] / m, 1e-5)
    best = top / m
    best_err = np.full(len(top), np.inf)
    for frac in np.geomspace(2.0 ** -12, 1.0, 400):
        vth = (top * frac / m)[:, None]
        err = (hist * (centers - np.clip(np.rint(centers / vth), 0, m) * vth) ** 2).sum(axis=1)
        better = err < best_err
        best = np.where(better, vth[:, 0], best)
        best_err = np.where(better, err, best_err)
    return np.maximum(best, 1e-5)
