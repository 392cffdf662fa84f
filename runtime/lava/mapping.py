"""Loihi 2 mapping: neuro-cores per spike layer under per-core limits, and chips needed.

Each limit carries its source. Tokens are time-multiplexed through a layer, so a layer needs the
neurons of one token (linear) or one sample (conv): its encoder neurons (one per input channel)
and its accumulator neurons (one per output, times the fan-in split). Synapses live in the core
of their accumulator neuron. A layer is split, never silently truncated:
- fan-in split: an accumulator row whose worst-case partial sum would overflow the 24-bit neuron
  state, or whose inputs exceed one core's fan-in or synaptic memory, is cut into P partial rows
  over contiguous slices of its inputs; the embedded processor adds the P partials (in int32).
- core split: rows that read the same inputs share a core (a linear layer's rows over one input
  slice; a convolution's output channels over a tile of output positions), a core taking as many
  as its neuron, synapse and distinct-input limits allow; computed from the geometry, so the
  mapping exists for layers far too large to expand.
What cannot map raises SbcError naming the layer: a graded payload wider than the message, or a
single input spike times its weight that already overflows the neuron state.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from sbcompile.errors import SbcError
from sbcompile.runtime.lava.connectivity import Geometry


@dataclass(frozen=True)
class Limit:
    value: int
    source: str


LOIHI2 = {
    "cores_per_chip": Limit(128, "Intel Loihi 2 technology brief (2021): 128 neuro-cores per "
                                 "chip; lava-nc 0.10.0 lava/magma/compiler/subcompilers/"
                                 "constants.py NUM_VIRTUAL_CORES_L2 = 128"),
    "neurons_per_core": Limit(8192, "derived: 1,048,576 neurons per chip (Loihi 2 brief, "
                                    "'up to 1M neurons') / 128 cores"),
    "synapses_per_core": Limit(937_500, "derived: 120M synapses per chip (Loihi 2 brief) / 128 "
                                        "cores; an upper bound, the real capacity depends on "
                                        "weight width and synapse encoding"),
    "fan_in_per_core": Limit(4096, "assumed: Loihi 1's 4,096 input axons per core (Davies et "
                                   "al., IEEE Micro 38(1), 2018); no Loihi 2 figure is public"),
    "message_bits": Limit(24, "graded spike payload: lava-nc 0.10.0 lava/proc/clp/"
                              "prototype_lif/models.py ('s_out is 24-bit graded value'), "
                              "lava/proc/conv/models.py (24-bit fixed-point messages)"),
    "state_bits": Limit(24, "neuron state: lava-nc 0.10.0 lava/proc/lif/models.py ('State "
                            "variables u and v are 24-bits wide')"),
    "weight_bits": Limit(8, "synaptic weights: lava-nc 0.10.0 lava/proc/dense/models.py "
                            "(fixed-point weights precision=8)"),
    "embedded_cpus_per_chip": Limit(6, "Loihi 2 brief: 6 embedded (Lakemont x86) processors "
                                       "per chip, which run the compute processes"),
}
STATE_MAX = (1 << (LOIHI2["state_bits"].value - 1)) - 1


def fan_in_split(geometry: Geometry, wmax: int, count_bound: int, sum_bound: float | None,
                 name: str) -> int:
    """Smallest P such that every partial row's worst case fits the neuron state and one core's
    fan-in and synaptic memory. ``wmax`` is the largest |weight|; ``sum_bound`` bounds
    sum |counts| over a token (dynamic thresholds), None when only the per-count bound holds."""
    entries = geometry.row_entries
    if entries == 0 or wmax == 0:
        return 1
    if wmax * count_bound > STATE_MAX:
        raise SbcError(f"layer '{name}': one spike of count {count_bound} times weight {wmax} "
                       f"overflows the {LOIHI2['state_bits'].value}-bit neuron state; set "
                       f"--set max_count={STATE_MAX // wmax} (or compile with --calib so the "
                       "bound is measured)")
    per_core = min(LOIHI2["fan_in_per_core"].value, LOIHI2["synapses_per_core"].value)
    parts = max(1, -(-entries // per_core))
    while True:
        width = -(-entries // parts)
        worst = width * count_bound if sum_bound is None else min(width * count_bound, sum_bound)
        if wmax * worst <= STATE_MAX:
            return parts
        parts += 1


def _rows_per_core(width: int, inputs: int) -> int:
    """Rows one core takes when they all read the same ``inputs`` distinct inputs, ``width``
    synapses each (0 when those inputs already exceed a core's fan-in)."""
    if inputs > LOIHI2["fan_in_per_core"].value:
        return 0
    return max(1, min(LOIHI2["neurons_per_core"].value,
                      LOIHI2["synapses_per_core"].value // max(width, 1)))


def pack_cores(geometry: Geometry, parts: int) -> int:
    """Neuro-cores of a layer, from its geometry. Rows sharing their inputs share a core: a
    linear layer's partial rows over one input slice of one group; a convolution's rows of one
    group and partial over a band of output lines (all its output channels at those positions
    read the same inputs). A core takes rows until its neuron, synapse or distinct-input limit
    would be exceeded; a band is as many output lines (along the first spatial axis) as fit, or
    one line cut into runs of positions."""
    width = -(-geometry.row_entries // parts)
    if geometry.op == "spike_linear":
        groups, n = geometry.out_shape
        return groups * parts * -(-n // _rows_per_core(width, width))
    o_per_group = geometry.weight_shape[0] // geometry.group
    out = geometry.out_shape[1:]
    taps = math.prod(geometry.weight_shape[2:])
    channels = min(geometry.weight_shape[1], -(-width // taps) + (width % taps != 0))
    lines, line_positions = out[0], math.prod(out[1:])
    best = None
    for band in _bands(lines, line_positions):
        inputs = channels * _receptive(geometry, band)
        rows = _rows_per_core(width, inputs)
        if rows == 0:
            continue
        channels_per_core = rows // (band[0] * band[1])
        if channels_per_core == 0:  # the tile's positions exceed one core's neurons or synapses
            continue
        cores = -(-o_per_group // channels_per_core) * -(-lines // band[0]) \
            * -(-line_positions // band[1])
        best = cores if best is None else min(best, cores)
    if best is None:  # one output position per core still reads too many inputs (wide kernels)
        best = o_per_group * lines * line_positions
    return geometry.group * parts * best


def _bands(lines: int, line_positions: int):
    """Candidate core tiles (output lines, positions per line): whole lines in growing counts,
    or runs of one line."""
    n = 1
    while n <= lines:
        yield n, line_positions
        n *= 2
    yield lines, line_positions
    run = line_positions
    while run > 1:
        run = -(-run // 2)
        yield 1, run


def _receptive(geometry: Geometry, band: tuple[int, int]) -> int:
    """Input positions a tile of ``band`` (lines, positions per line) output positions reads,
    per input channel: the receptive field spans along each axis, the tile's first axis taking
    ``lines`` output lines and the rest ``positions`` in raster order (bounded by the input)."""
    lines, positions = band
    spatial = geometry.in_shape[1:]
    kernel = geometry.weight_shape[2:]

    def span(axis: int, outputs: int) -> int:
        extent = (outputs - 1) * geometry.strides[axis] + \
            (kernel[axis] - 1) * geometry.dilations[axis] + 1
        return min(extent, spatial[axis])

    total = span(0, lines)
    rest = positions
    for axis in range(len(spatial) - 1, 0, -1):  # the last axes fill first
        size = geometry.out_shape[1 + axis]
        total *= span(axis, min(rest, size))
        rest = -(-rest // size)
    return total


def encoder_mapping(name: str, neurons: int, payload_bits: int) -> dict:
    """The mapping entry of one spike encoder (one neuron per input channel of a token)."""
    limit = LOIHI2["message_bits"].value
    if payload_bits > limit:
        raise SbcError(f"encoder '{name}': graded spikes need {payload_bits}-bit payloads, "
                       f"Loihi 2 carries {limit}; set max_count or use the bitwise or unary mode")
    return {"neurons": int(neurons), "message_bits": int(payload_bits),
            "cores": int(-(-neurons // LOIHI2["neurons_per_core"].value))}


def layer_mapping(geometry: Geometry, parts: int) -> dict:
    """The mapping entry of one spike layer's synapses and accumulator neurons (split into
    ``parts`` partial rows): its synaptic memory at the 8-bit weight width with every synapse
    stored, and the bytes of its weights stored once (a convolution sharing its kernel)."""
    width = -(-geometry.fan_in() // parts)
    synapses = geometry.synapses()
    weight_bytes = LOIHI2["weight_bits"].value // 8
    return {"accumulator_neurons": int(geometry.rows * parts), "synapses": int(synapses),
            "synapse_memory_bytes": int(synapses * weight_bytes),
            "shared_weight_bytes": int(math.prod(geometry.weight_shape) * weight_bytes),
            "fan_in": int(width), "fan_in_split": int(parts),
            "cores": int(pack_cores(geometry, parts))}


def chip_summary(encoders: dict[str, dict], layers: dict[str, dict],
                 compute_nodes: list[str]) -> dict:
    """Totals: neuro-cores, chips, and what runs on the embedded processors."""
    cores = sum(m["cores"] for m in [*encoders.values(), *layers.values()])
    chips = max(1, -(-cores // LOIHI2["cores_per_chip"].value))
    return {"neuro_cores": int(cores), "chips": int(chips),
            "embedded_processes": list(compute_nodes),
            "limits": {k: {"value": v.value, "source": v.source} for k, v in LOIHI2.items()}}
