"""Calibration: stream calibration inputs through the float graph in batches and record, for the
input of every layer to be spiked, the statistics the threshold policies need (bounded memory:
scalars plus a fixed-size histogram of |x|, independent of the data set's size)."""
from __future__ import annotations

import numpy as np

from sbcompile.config import CompileConfig
from sbcompile.errors import SbcError
from sbcompile.ir.graph import Graph
from sbcompile.ir.passes import PassBase, PassContext, PassResult
from sbcompile.ir.records import ValueStatistics, calibration, set_calibration
from sbcompile.passes.targets import spike_groups
from sbcompile.progress import track
from sbcompile.runtime.reference import check_feeds, guarded_feeds, values as run_values

HIST_BINS = 2048
CHANNEL_BINS = 256  # per-channel histograms (threshold_granularity=channel)


class CalibrationSet:
    """Calibration inputs, checked against the graph and streamed in batches the graph accepts.

    Either one dict of arrays with the samples on axis 0 (an .npz file), streamed in batches of
    the model's static batch size when its inputs have one (a model exported with batch 2 reads
    a 32-sample file as 16 batches; a remainder that fills no batch is left out and counted in
    ``dropped``), else of ``calib_batch``; or a list of complete feeds (for inputs that do not
    share a batch axis, such as a recurrent state), each run as it is."""

    def __init__(self, graph: Graph, data: dict[str, np.ndarray] | list[dict]) -> None:
        feeds = list(data) if isinstance(data, (list, tuple)) else None
        if feeds is not None:
            if not feeds:
                raise SbcError("calibration data is empty")
            self.feeds = [check_feeds(graph, f) for f in feeds]
            self.arrays, self.static_batch, self.dropped = None, None, 0
            self.samples = len(self.feeds)
            return
        self.feeds = None
        if not data:
            raise SbcError("calibration data is empty")
        sizes = {name: np.asarray(arr).shape[0] if np.asarray(arr).ndim else 0
                 for name, arr in data.items()}
        if any(s == 0 for s in sizes.values()):
            name = next(n for n, s in sizes.items() if s == 0)
            raise SbcError(f"calibration input '{name}' holds no samples")
        if len(set(sizes.values())) > 1:
            raise SbcError(f"calibration inputs disagree on the number of samples: {sizes}")
        n = next(iter(sizes.values()))
        self.static_batch = _static_batch(graph, data)
        if self.static_batch and n < self.static_batch:
            raise SbcError(f"the model's inputs have a static batch of {self.static_batch}; "
                           f"the calibration data holds only {n} samples")
        usable = n - n % self.static_batch if self.static_batch else n
        self.dropped = n - usable
        arrays = {k: np.asarray(v)[:usable] for k, v in data.items()}
        self.arrays = check_feeds(graph, arrays) if self.static_batch is None else \
            _checked_per_batch(graph, arrays, self.static_batch)
        self.samples = usable

    def batch_size(self, requested: int) -> int:
        return self.static_batch or requested

    def batches(self, requested: int):
        """Yield feeds of at most ``requested`` samples (exactly the static batch if any)."""
        if self.feeds is not None:
            yield from self.feeds
            return
        size = self.batch_size(requested)
        for start in range(0, self.samples, size):
            yield {k: v[start:start + size] for k, v in self.arrays.items()}

    def num_batches(self, requested: int) -> int:
        if self.feeds is not None:
            return len(self.feeds)
        return -(-self.samples // self.batch_size(requested))


def _static_batch(graph: Graph, data: dict[str, np.ndarray]) -> int | None:
    """The batch every input fixes on axis 0, when they all fix the same one; else None."""
    dims = {graph.values[n].shape[0] if graph.values[n].shape else None
            for n in graph.inputs if n in data}
    if len(dims) == 1:
        (dim,) = dims
        return dim if isinstance(dim, int) else None
    return None


def _checked_per_batch(graph: Graph, arrays: dict[str, np.ndarray], size: int) -> dict:
    """Whole arrays checked (dtype cast, finiteness) through their static-batch view."""
    n = next(iter(arrays.values())).shape[0]
    reshaped = {k: v.reshape(n // size, size, *v.shape[1:]) for k, v in arrays.items()}
    out = {k: [] for k in arrays}
    for i in range(n // size):
        checked = check_feeds(graph, {k: v[i] for k, v in reshaped.items()})
        for k in out:
            out[k].append(checked[k])
    return {k: np.concatenate(v) for k, v in out.items()}


def check_calibration(graph: Graph, calib) -> CalibrationSet:
    """Calibration data (a dict of arrays, a list of feeds, or a CalibrationSet) checked against
    the graph inputs: names, shapes, dtypes, finiteness, the number of samples. A dict holds
    each input's samples on the batch axis the model's symbolic dims give it, inputs without
    one given once (``sbcompile.batch_axes``)."""
    if isinstance(calib, CalibrationSet):
        return calib
    if graph.meta.get("input_guards"):  # inputs fixed at import: their value checked, dropped
        calib = guarded_feeds(graph, calib) if isinstance(calib, dict) else \
            [guarded_feeds(graph, f) for f in calib]
    if isinstance(calib, dict):
        from sbcompile.passes.calibration_inputs import by_batch_axes

        along_axes = by_batch_axes(graph, calib)
        if along_axes is not None:
            return along_axes
    return CalibrationSet(graph, calib)


def run(graph: Graph, config: CompileConfig, calib, values: set[str] | None = None) -> Graph:
    """Record the ``ValueStatistics`` of every spiked input whose static threshold is
    calibrated (of ``values`` only, when given), beside those the graph holds already (the
    driver drops them once the thresholds are set)."""
    calib = check_calibration(graph, calib)
    groups = [g for g in spike_groups(graph, config) if g.needs_statistics
              and (values is None or g.value in values)]
    watched = sorted(g.value for g in groups)
    channel_values = {g.value for g in groups if g.settings.threshold_granularity == "channel"}
    stats = {v: {"n": 0, "absmax": 0.0, "sum_abs": 0.0, "sum_sq": 0.0, "channel_absmax": 0.0}
             for v in watched}
    nb = calib.num_batches(config.calib_batch)
    # pass 1: ranges and moments (each value read as the interpreter makes it)
    for batch in track(calib.batches(config.calib_batch), nb, "calibrating (1/2)"):
        for v, x in run_values(graph, batch, only=watched):
            a = np.abs(x.astype(np.float64))
            s = stats[v]
            s["n"] += a.size
            s["absmax"] = max(s["absmax"], float(a.max(initial=0.0)))
            s["sum_abs"] += float(a.sum())
            s["sum_sq"] += float((a * a).sum())
            if v in channel_values:
                s["channel_absmax"] = np.maximum(s["channel_absmax"],
                                                 a.reshape(-1, a.shape[-1]).max(axis=0))
            del a
    # pass 2: histograms of |x| over [0, absmax]
    hists = {v: np.zeros(HIST_BINS, dtype=np.int64) for v in watched}
    channel_hists = {v: 0 for v in watched}
    for batch in track(calib.batches(config.calib_batch), nb, "calibrating (2/2)"):
        for v, x in run_values(graph, batch, only=watched):
            top = stats[v]["absmax"] or 1.0
            hists[v] += np.histogram(np.abs(x), bins=HIST_BINS, range=(0.0, top))[0]
            if v in channel_values:
                channel_hists[v] = channel_hists[v] + _channel_histogram(
                    np.abs(x), stats[v]["channel_absmax"])
    graph = graph.copy()
    set_calibration(graph, {**calibration(graph), **{
        v: ValueStatistics(s["n"], s["absmax"], s["sum_abs"] / max(s["n"], 1),
                           float(np.sqrt(s["sum_sq"] / max(s["n"], 1))), hists[v],
                           *((s["channel_absmax"], channel_hists[v]) if v in channel_values
                             else ()))
        for v, s in stats.items()}})
    return graph


def _channel_histogram(a: np.ndarray, channel_absmax: np.ndarray) -> np.ndarray:
    """[K, CHANNEL_BINS] histogram of |x| per channel (last axis), each over [0, its absmax]."""
    k = a.shape[-1]
    a = a.reshape(-1, k)
    top = np.where(channel_absmax > 0, channel_absmax, 1.0)
    bins = np.minimum((a / top * CHANNEL_BINS).astype(np.int64), CHANNEL_BINS - 1)
    flat = bins + np.arange(k, dtype=np.int64) * CHANNEL_BINS
    return np.bincount(flat.ravel(), minlength=k * CHANNEL_BINS).reshape(k, CHANNEL_BINS)


class Calibrate(PassBase):
    """Statistics for every calibrated static threshold the graph does not hold yet."""

    name = "calibrate"

    def applies(self, graph: Graph, ctx: PassContext) -> bool:
        held = calibration(graph)
        return any(g.value not in held or (g.settings.threshold_granularity == "channel"
                                           and held[g.value].channel_hist is None)
                   for g in spike_groups(graph, ctx.config) if g.needs_statistics)

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        return PassResult(run(graph, ctx.config, ctx.calib))
