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
from sbcompile.ir.passes import PassBase, PassContext, PassResult
from sbcompile.ir.records import SpikedLayer, calibration, set_spiked_layer
from sbcompile.passes.targets import spike_groups


def run(graph: Graph, config: CompileConfig, values: set[str] | None = None) -> Graph:
    """Encoders for every spike group (of the inputs ``values`` only, when given)."""
    graph = graph.copy()
    for group in spike_groups(graph, config):
        if values is not None and group.value not in values:
            continue
        for node in group.layers:
            if node.op == "matmul":
                _matmul_to_linear(graph, node)
        value, layers, settings = group.value, group.layers, group.settings
        granularity = "sample" if any(n.op == "conv" for n in layers) else "token"
        if granularity == "sample" and any(n.op != "conv" for n in layers):
            granularity = "token"
            layers = [n for n in layers if n.op != "conv"]  # rare: leave the convs in float
        encode_inputs, max_count = [value], settings.max_count
        if settings.policy == "static":
            per_channel = (settings.threshold_granularity == "channel"
                           and all(n.op == "linear" for n in layers))
            vth, max_count = static_threshold(graph, value, settings, per_channel)
            encode_inputs.append(graph.add_param(f"{layers[0].name}.vth", vth))
        attrs = _encoder_attrs(settings, granularity, max_count)
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


def run_sequential(graph: Graph, config: CompileConfig, calib) -> Graph:
    """``calib_order=sequential``: the groups in graph order, each calibrated on the activations
    of the graph with every group before it already spiked, so a threshold (and T) fits the
    input its layer really receives, upstream spiking errors included (thresholds from the float
    model fit inputs the spiked model never produces, and the errors compound layer by layer).
    One calibration pass per calibrated group."""
    from sbcompile.passes import calibrate

    for group in spike_groups(graph, config):
        if group.needs_statistics:
            graph = calibrate.run(graph, config, calib, values={group.value})
        graph = run(graph, config, values={group.value})
    return graph


def _encoder_attrs(settings: LayerSettings, granularity: str, max_count: int | None) -> dict:
    attrs = {"policy": settings.policy, "granularity": granularity, "max_count": max_count}
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
                     per_channel: bool = False) -> tuple[np.ndarray, int]:
    """The static threshold of ``value`` and its encoder's max_count. The threshold: the layer's
    fixed one, else calibrated (a scalar, or one per input channel: the last axis). The max
    count: ``settings.max_count``; with it None, the one ``choose_max_count`` picks from the
    histograms (t_max beside a fixed threshold)."""
    if settings.threshold is not None:
        return np.float32(settings.threshold), int(settings.max_count or settings.t_max)
    cal = calibration(graph).get(value)
    if cal is None:
        raise SbcError(f"static thresholds need calibration data (no statistics for '{value}'); "
                       "pass --calib")
    if per_channel:
        hist, top = cal.channel_hist, cal.channel_absmax
    else:
        hist, top = cal.hist[None], np.array([cal.absmax])
    hist, top = np.asarray(hist, dtype=np.float64), np.asarray(top, dtype=np.float64)
    max_count = settings.max_count
    if max_count is None:
        max_count = choose_max_count(hist, top, settings)
    vth = threshold_from_histogram(hist, top, settings, max_count)
    return (vth if per_channel else vth[0]).astype(np.float32), int(max_count)


def choose_max_count(hist: np.ndarray, top: np.ndarray, settings: LayerSettings) -> int:
    """The fewest steps T <= t_max (for unary codings T is the max count) whose error-minimising
    threshold reconstructs the histogrammed input to ``t_snr_db`` (signal power over squared
    error, all channels together); t_max when none does. The clip level and T are so chosen
    together: each T gets its own best threshold, and T stops growing once the error is small
    enough, since every extra step costs events."""
    centers = _bin_centers(hist, top)
    signal = float((hist * centers ** 2).sum())
    for m in range(1, settings.t_max + 1):
        vth = threshold_from_histogram(hist, top, settings, m)
        if signal <= 0 or signal / max(_squared_error(hist, centers, vth, m), 1e-300) >= \
                10 ** (settings.t_snr_db / 10):
            return m
    return settings.t_max


def _bin_centers(hist: np.ndarray, top: np.ndarray) -> np.ndarray:
    top = np.where(top > 0, top, 1.0)
    return (np.arange(hist.shape[1]) + 0.5)[None, :] * (top[:, None] / hist.shape[1])


def _squared_error(hist: np.ndarray, centers: np.ndarray, vth: np.ndarray, m: int) -> float:
    vth = np.asarray(vth, dtype=np.float64).reshape(-1, 1)
    return float((hist * (centers - np.clip(np.rint(centers / vth), 0, m) * vth) ** 2).sum())


def threshold_from_histogram(hist: np.ndarray, top: np.ndarray,
                             settings: LayerSettings, max_count: int) -> np.ndarray:
    """Thresholds [C] from |x| histograms [C, B] over [0, top[c]]: the percentile clip level over
    max_count, or the threshold minimising the squared reconstruction error (searched so the clip
    level max_count * vth spans [top / 2^12, top])."""
    top = np.where(top > 0, top, 1.0)
    bins = hist.shape[1]
    centers = _bin_centers(hist, top)
    m = max_count
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


class SpikeQuantize(PassBase):
    """An encoder in front of every spiked layer (``run``)."""

    name = "spike_quantize"

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        return PassResult(run(graph, ctx.config))


class SequentialSpikeQuantize(PassBase):
    """``calib_order=sequential``: calibrate and spike one group after the other
    (``run_sequential``)."""

    name = "calibrate, spike_quantize"

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        return PassResult(run_sequential(graph, ctx.config, ctx.calib))
