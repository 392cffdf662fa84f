"""The declared pass pipeline: the lists of pass objects a compile runs, and the walker that
runs them (each timed, its peak resident memory measured, logged at INFO as ``-v`` shows it;
the result validated once, as the list's post-condition).

Order: calibrate -> spike_quantize -> attention_quantize (when configured) -> weight_quantize
-> count_bounds (with calibration data) -> expand, then analyse (``calib_order=sequential``
calibrates and spikes one layer group after the other instead of the first two). The driver
(``sbcompile.pipeline``) and the tune search both build their graphs here.
"""
from __future__ import annotations

import logging
import time
from typing import Callable, TypeVar

from sbcompile.config import CompileConfig
from sbcompile.errors import SbcError
from sbcompile.ir.graph import Graph
from sbcompile.ir.passes import PassBase, PassContext
from sbcompile.ir.validate import validate
from sbcompile.memory import StagePeak, StageRecord, mib
from sbcompile.passes.analyse import Analyse
from sbcompile.passes.attention_quantize import AttentionQuantize
from sbcompile.passes.calibrate import Calibrate
from sbcompile.passes.count_bounds import CountBounds
from sbcompile.passes.expand import Expand
from sbcompile.passes.spike_quantize import SequentialSpikeQuantize, SpikeQuantize
from sbcompile.passes.targets import spike_groups
from sbcompile.passes.weight_quantize import WeightQuantize

log = logging.getLogger("sbcompile.pipeline")
T = TypeVar("T")


def stage(name: str, fn: Callable[[], T]) -> T:
    """``fn()``, timed and its peak resident memory sampled when INFO logging is on (the
    ``StageRecord`` rides on the log record as ``stage``)."""
    if not log.isEnabledFor(logging.INFO):
        return fn()
    start = time.perf_counter()
    with StagePeak() as mem:
        result = fn()
    record = StageRecord(name, time.perf_counter() - start, mem.peak, mem.start)
    log.info("%s: %.2f s, peak %.0f MiB (%+.0f MiB)", name, record.seconds, mib(record.peak),
             mib(record.peak - record.start), extra={"stage": record})
    return result


def run_passes(graph: Graph, passes: list[PassBase], ctx: PassContext) -> Graph:
    """Walk ``passes`` (those that apply), each on the previous one's graph; validate the
    result."""
    for p in passes:
        if p.applies(graph, ctx):
            graph = stage(p.name, lambda: p.run(graph, ctx).graph)  # noqa: B023
    validate(graph)
    return graph


def spiking_passes(graph: Graph, config: CompileConfig) -> list[PassBase]:
    """The passes from calibration through expand."""
    sequential = config.calib_order == "sequential" and any(
        grp.needs_statistics for grp in spike_groups(graph, config))
    first = [SequentialSpikeQuantize()] if sequential else [Calibrate(), SpikeQuantize()]
    return first + [AttentionQuantize(), WeightQuantize(), CountBounds(), Expand()]


def compile_passes(graph: Graph, config: CompileConfig) -> list[PassBase]:
    """What a compile runs: the spiking passes, then the analysis."""
    return spiking_passes(graph, config) + [Analyse()]


def require_statistics(graph: Graph, config: CompileConfig, calib) -> None:
    """SbcError when a static threshold needs calibration data and there is none."""
    calibrated = [grp for grp in spike_groups(graph, config) if grp.needs_statistics]
    if calibrated and calib is None:
        where = (f"preset '{config.preset}'" if config.policy == "static"
                 else f"layer '{calibrated[0].layers[0].name}'")
        raise SbcError(f"{where} uses static thresholds: pass calibration data (--calib X.npz)")


def spiking_graph(graph: Graph, config: CompileConfig, calib, measure_bounds: bool = True
                  ) -> Graph:
    """The passes from calibration through expand, validated. Calibration runs for the static
    thresholds whose statistics the graph does not already hold; count bounds are measured when
    ``calib`` is given and ``measure_bounds``."""
    require_statistics(graph, config, calib)
    return run_passes(graph, spiking_passes(graph, config),
                      PassContext(config, calib, graph, measure_bounds))
