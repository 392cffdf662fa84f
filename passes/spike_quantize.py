"""Spike quantisation: put a spike encoder in front of every layer to be spiked.

Each spiked input x becomes ``spike_encode(x) -> counts, vth`` and the layer reads the
reconstruction ``spike_decode(counts, vth)``; the graph stays runnable (simulated spiking) until
weight_quantize turns the layer itself into an integer spike layer. Layers that read the same
input share one encoder (q, k and v spike one tensor once).
Thresholds: ``dynamic`` is SpikingBrain's per-token mean(|x|)/k (per sample for convolutions, so
that the threshold factors out of the convolution sum); ``static`` picks one calibrated threshold
per tensor, by percentile or by minimising the squared reconstruction error over the calibration
histogram.
"""
from __future__ import annotations

import numpy as np

from sbcompile.config import CompileConfig
from sbcompile.errors import SbcError
from sbcompile.ir.graph import Graph, Node
from sbcompile.passes.targets import spike_targets


def run(graph: Graph, config: CompileConfig) -> Graph:
    graph = graph.copy()
    targets = spike_targets(graph, config)
    by_input: dict[str, list[Node]] = {}
    for node, value in targets:
        if node.op == "matmul":
            _matmul_to_linear(graph, node)
        by_input.setdefault(value, []).append(node)
    graph.meta.setdefault("layers", {})
    for value, layers in by_input.items():
        granularity = "sample" if any(n.op == "conv" for n in layers) else "token"
        if granularity == "sample" and any(n.op != "conv" for n in layers):
            granularity = "token"
            layers = [n for n in layers if n.op != "conv"]  # rare: leave the convs in float
        encode_inputs, attrs = [value], _encoder_attrs(config, granularity)
        if config.policy == "static":
            vth = static_threshold(graph, value, config)
            encode_inputs.append(graph.add_param(f"{layers[0].name}.vth", np.float32(vth)))
        xval = graph.values[value]
        counts = graph.add_value(f"{layers[0].name}.counts", xval.shape, "int32")
        vth_shape = _vth_shape(xval.shape, granularity, config.policy)
        vth_v = graph.add_value(f"{layers[0].name}.vth_dyn" if config.policy == "dynamic"
                                else f"{layers[0].name}.vth_out", vth_shape, "float32")
        xhat = graph.add_value(f"{layers[0].name}.xhat", xval.shape, "float32")
        enc = Node(graph.fresh_name(f"{layers[0].name}.encode"), "spike_encode", encode_inputs,
                   [counts, vth_v], attrs)
        dec = Node(graph.fresh_name(f"{layers[0].name}.reconstruct"), "spike_decode",
                   [counts, vth_v], [xhat], {"layout": "counts"})
        position = graph.nodes.index(layers[0])
        graph.nodes[position:position] = [enc, dec]
        for layer in layers:
            layer.inputs[0] = xhat
            graph.meta["layers"][layer.name] = {"op": layer.op, "input": value,
                                                "counts": counts, "vth": vth_v,
                                                "encoder": enc.name}
    graph.toposort()
    return graph


def _encoder_attrs(config: CompileConfig, granularity: str) -> dict:
    attrs = {"policy": config.policy, "granularity": granularity,
             "max_count": config.max_count}
    if config.policy == "dynamic":
        attrs["k"] = float(config.k)
    return attrs


def _vth_shape(shape, granularity: str, policy: str):
    if policy == "static":
        return ()
    if granularity == "token":
        return tuple(shape[:-1]) + (1,)
    return (shape[0],) + (1,) * (len(shape) - 1)


def _matmul_to_linear(graph: Graph, node: Node) -> None:
    """matmul(x, B[K, N]) with constant B is linear(x, B.T)."""
    weight = graph.params[node.inputs[1]]
    node.op = "linear"
    node.inputs = [node.inputs[0], graph.add_param(f"{node.name}.weight", weight.T.copy())]
    node.attrs = {}


def static_threshold(graph: Graph, value: str, config: CompileConfig) -> float:
    """One threshold per tensor from the calibration statistics of ``value``."""
    cal = graph.meta.get("calibration", {}).get(value)
    if cal is None:
        raise SbcError(f"static thresholds need calibration data (no statistics for '{value}'); "
                       "pass --calib")
    if config.max_count is None:
        raise SbcError("static thresholds need max_count")
    hist = np.asarray(cal["hist"], dtype=np.float64)
    top = cal["absmax"] or 1.0
    centers = (np.arange(hist.size) + 0.5) * (top / hist.size)
    m = config.max_count
    if config.calib_method == "percentile":
        cdf = np.cumsum(hist) / max(hist.sum(), 1.0)
        idx = int(np.searchsorted(cdf, config.percentile / 100.0))
        clip_at = centers[min(idx, hist.size - 1)]
        return float(max(clip_at / m, 1e-5))
    # mse: search vth so that the clip level m*vth spans [top/2^12, top]
    candidates = top / m * np.geomspace(2.0 ** -12, 1.0, 400)
    best, best_err = candidates[-1], np.inf
    for vth in candidates:
        q = np.clip(np.rint(centers / vth), 0, m) * vth
        err = float((hist * (centers - q) ** 2).sum())
        if err < best_err:
            best, best_err = vth, err
    return float(max(best, 1e-5))
