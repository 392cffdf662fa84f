"""Calibration: stream calibration inputs through the float graph in batches and record, for the
input of every layer to be spiked, the statistics the threshold policies need (bounded memory:
scalars plus a fixed-size histogram of |x|, independent of the data set's size)."""
from __future__ import annotations

import numpy as np

from sbcompile.config import CompileConfig
from sbcompile.errors import SbcError
from sbcompile.ir.graph import Graph
from sbcompile.passes.targets import spike_targets
from sbcompile.progress import track
from sbcompile.runtime.reference import check_feeds, evaluate

HIST_BINS = 2048
CHANNEL_BINS = 256  # per-channel histograms (threshold_granularity=channel)


def check_calibration(graph: Graph, calib: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Names, shapes, dtypes and finiteness of calibration data against the graph inputs."""
    if not calib:
        raise SbcError("calibration data is empty")
    sizes = {name: np.asarray(arr).shape[0] if np.asarray(arr).ndim else 0
             for name, arr in calib.items()}
    if any(s == 0 for s in sizes.values()):
        name = next(n for n, s in sizes.items() if s == 0)
        raise SbcError(f"calibration input '{name}' holds no samples")
    if len(set(sizes.values())) > 1:
        raise SbcError(f"calibration inputs disagree on the number of samples: {sizes}")
    return check_feeds(graph, calib)


def batches(data: dict[str, np.ndarray], size: int):
    """Yield dicts of consecutive slices of at most ``size`` samples (axis 0)."""
    n = next(iter(data.values())).shape[0]
    for start in range(0, n, size):
        yield {k: v[start:start + size] for k, v in data.items()}


def num_batches(data: dict[str, np.ndarray], size: int) -> int:
    return -(-next(iter(data.values())).shape[0] // size)


def run(graph: Graph, config: CompileConfig, calib: dict[str, np.ndarray]) -> Graph:
    """Record ``graph.meta["calibration"][value] = {absmax, mean_abs, rms, n, hist}`` (hist a numpy
    array: the pipeline drops these statistics before the graph is serialised)."""
    calib = check_calibration(graph, calib)
    watched = sorted({value for _, value in spike_targets(graph, config)})
    per_channel = config.threshold_granularity == "channel"
    stats = {v: {"n": 0, "absmax": 0.0, "sum_abs": 0.0, "sum_sq": 0.0, "channel_absmax": 0.0}
             for v in watched}
    nb = num_batches(calib, config.calib_batch)
    # pass 1: ranges and moments
    for batch in track(batches(calib, config.calib_batch), nb, "calibrating (1/2)"):
        env = evaluate(graph, batch, keep=watched)
        for v in watched:
            a = np.abs(env[v].astype(np.float64))
            s = stats[v]
            s["n"] += a.size
            s["absmax"] = max(s["absmax"], float(a.max(initial=0.0)))
            s["sum_abs"] += float(a.sum())
            s["sum_sq"] += float((a * a).sum())
            if per_channel:
                s["channel_absmax"] = np.maximum(s["channel_absmax"],
                                                 a.reshape(-1, a.shape[-1]).max(axis=0))
    # pass 2: histograms of |x| over [0, absmax]
    hists = {v: np.zeros(HIST_BINS, dtype=np.int64) for v in watched}
    channel_hists = {v: 0 for v in watched}
    for batch in track(batches(calib, config.calib_batch), nb, "calibrating (2/2)"):
        env = evaluate(graph, batch, keep=watched)
        for v in watched:
            top = stats[v]["absmax"] or 1.0
            hists[v] += np.histogram(np.abs(env[v]), bins=HIST_BINS, range=(0.0, top))[0]
            if per_channel:
                channel_hists[v] = channel_hists[v] + _channel_histogram(
                    np.abs(env[v]), stats[v]["channel_absmax"])
    graph = graph.copy()
    graph.meta["calibration"] = {
        v: {"n": s["n"], "absmax": s["absmax"], "mean_abs": s["sum_abs"] / max(s["n"], 1),
            "rms": float(np.sqrt(s["sum_sq"] / max(s["n"], 1))),
            "hist": hists[v],
            **({"channel_absmax": s["channel_absmax"], "channel_hist": channel_hists[v]}
               if per_channel else {})}
        for v, s in stats.items()}
    graph.meta["calibration_samples"] = int(next(iter(calib.values())).shape[0])
    return graph


def _channel_histogram(a: np.ndarray, channel_absmax: np.ndarray) -> np.ndarray:
    """[K, CHANNEL_BINS] histogram of |x| per channel (last axis), each over [0, its absmax]."""
    k = a.shape[-1]
    a = a.reshape(-1, k)
    top = np.where(channel_absmax > 0, channel_absmax, 1.0)
    bins = np.minimum((a / top * CHANNEL_BINS).astype(np.int64), CHANNEL_BINS - 1)
    flat = bins + np.arange(k, dtype=np.int64) * CHANNEL_BINS
    return np.bincount(flat.ravel(), minlength=k * CHANNEL_BINS).reshape(k, CHANNEL_BINS)
