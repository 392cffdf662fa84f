"""Typed records of what a pass hands to later stages.

They travel with the graph in ``graph.meta`` in their JSON form (so ``graph.json`` carries
them), but code reads and writes them only through this module:
- ``SpikedLayer`` per spiked layer, keyed by the layer's original node name: spike_quantize
  records its encoder and values, weight_quantize completes it with the integer product;
- ``Expansion`` per encoder's counts value: the coding, T policy and T bound the expand pass
  recorded;
- ``attention_counts``: per attention node, the counts and integer scores attention_quantize
  made (q, k, v, scores);
- ``analysis``: what analyse measured (the report's layers, totals, energy, output fidelity);
- ``CountBound`` per encoder whose bound count_bounds measured;
- ``ValueStatistics`` per calibrated value: what calibrate measured for the static thresholds
  (histograms: numpy arrays; the driver drops them once the thresholds are set, so they never
  reach ``graph.json``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

LAYERS, EXPANSION, ATTENTION, ANALYSIS = "layers", "expansion", "attention_quantize", "analysis"
COUNT_BOUNDS, CALIBRATION = "count_bounds", "calibration"


@dataclass
class SpikedLayer:
    op: str  # the float op it replaces: linear | conv
    input: str  # the float value it reads
    counts: str  # its encoder's counts and threshold
    vth: str
    encoder: str  # the spike_encode node
    acc: str | None = None  # from weight_quantize on: the integer product and its decode
    output: str | None = None
    weight_q: str | None = None
    weight_scale: str | None = None
    fan_in: int | None = None
    fan_out: int | None = None
    group_size: int | None = None
    weights_at_limit: float | None = None
    weight_bytes: int | None = None
    kernel: list[int] | None = None  # conv kernel size


@dataclass(frozen=True)
class Expansion:
    coding: str
    t_mode: str
    window: int
    bit_order: str = "lsb_first"
    T: int | None = None  # steps the encoder's count bound needs in this coding (None: unbounded)


def spiked_layers(graph) -> dict[str, SpikedLayer]:
    return {name: SpikedLayer(**d) for name, d in graph.meta.get(LAYERS, {}).items()}


def set_spiked_layer(graph, name: str, layer: SpikedLayer) -> None:
    graph.meta.setdefault(LAYERS, {})[name] = dataclasses.asdict(layer)


def layer_of_acc(graph, acc: str) -> str | None:
    """The spiked layer whose integer product is ``acc``."""
    return next((name for name, layer in spiked_layers(graph).items() if layer.acc == acc), None)


def expansions(graph) -> dict[str, Expansion]:
    return {counts: Expansion(**d) for counts, d in graph.meta.get(EXPANSION, {}).items()}


def set_expansions(graph, records: dict[str, Expansion]) -> None:
    graph.meta[EXPANSION] = {k: dataclasses.asdict(v) for k, v in records.items()}


@dataclass(frozen=True)
class AttentionCounts:
    q: str  # the query's counts, the int8 keys' and values' counts (int32)
    k: str
    v: str
    scores: str | None = None  # the integer scores (spike_scores)


def attention_counts(graph) -> dict[str, AttentionCounts]:
    return {node: AttentionCounts(**d) for node, d in graph.meta.get(ATTENTION, {}).items()}


def set_attention_counts(graph, records: dict[str, AttentionCounts]) -> None:
    graph.meta[ATTENTION] = {k: dataclasses.asdict(v) for k, v in records.items()}


@dataclass
class Analysis:
    samples: int  # calibration inputs the figures are measured on
    layers: list[dict]  # per spiked layer, as the report shows it
    totals: dict
    energy: dict
    outputs_fidelity: dict


def analysis(graph) -> Analysis | None:
    d = graph.meta.get(ANALYSIS)
    return Analysis(**d) if d is not None else None


def set_analysis(graph, record: Analysis) -> None:
    graph.meta[ANALYSIS] = dataclasses.asdict(record)


@dataclass(frozen=True)
class CountBound:
    max_seen: int  # the largest |count| on the calibration inputs
    bound: int  # the encoder's max_count: ceil(max_seen x margin)
    margin: float


def count_bounds(graph) -> dict[str, CountBound]:
    return {enc: CountBound(**d) for enc, d in graph.meta.get(COUNT_BOUNDS, {}).items()}


def set_count_bounds(graph, records: dict[str, CountBound]) -> None:
    graph.meta[COUNT_BOUNDS] = {k: dataclasses.asdict(v) for k, v in records.items()}


@dataclass(frozen=True)
class ValueStatistics:
    n: int  # elements seen
    absmax: float
    mean_abs: float
    rms: float
    hist: np.ndarray  # |x| over [0, absmax]
    channel_absmax: np.ndarray | None = None  # per channel (threshold_granularity=channel)
    channel_hist: np.ndarray | None = None


def calibration(graph) -> dict[str, ValueStatistics]:
    return dict(graph.meta.get(CALIBRATION, {}))


def set_calibration(graph, records: dict[str, ValueStatistics] | None) -> None:
    """Record (or, with None, drop) the statistics of calibrated values."""
    if records is None:
        graph.meta.pop(CALIBRATION, None)
    else:
        graph.meta[CALIBRATION] = dict(records)
