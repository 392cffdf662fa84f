"""Loihi 2 mapping: neuro-cores per spike layer under per-core limits, and chips needed.

Each limit carries its source. Tokens are time-multiplexed through a layer, so a layer needs the
neurons of one token (linear) or one sample (conv): its encoder neurons (one per input channel)
and its accumulator neurons (one per output, times the fan-in split). Synapses live in the core
of their accumulator neuron. A layer is split, never silently truncated:
- fan-in split: an accumulator row whose worst-case partial sum would overflow the 24-bit neuron
  state, or whose inputs exceed one core's fan-in or synaptic memory, is cut into P partial rows
  over contiguous slices of its inputs; the embedded processor adds the P partials (in int32).
- core split: rows are packed greedily into cores until a core's neurons, synapses or distinct
  inputs would exceed its limit.
What cannot map raises SbcError naming the layer: a graded payload wider than the message, or a
single input spike times its weight that already overflows the neuron state.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sbcompile.errors import SbcError
from sbcompile.runtime.lava.connectivity import Csr


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


def fan_in_split(csr: Csr, count_bound: int, sum_bound: float | None, name: str) -> int:
    """Smallest P such that every partial row's worst case fits the neuron state and one core's
    fan-in and synaptic memory. ``sum_bound`` bounds sum |counts| over a token (dynamic
    thresholds); None when only the per-count bound holds."""
    fan_in = int(csr.fan_in().max(initial=0))
    wmax = int(np.abs(csr.data.astype(np.int64)).max(initial=0))
    if fan_in == 0 or wmax == 0:
        return 1
    if wmax * count_bound > STATE_MAX:
        raise SbcError(f"layer '{name}': one spike of count {count_bound} times weight {wmax} "
                       f"overflows the {LOIHI2['state_bits'].value}-bit neuron state; set "
                       f"--set max_count={STATE_MAX // wmax} (or compile with --calib so the "
                       "bound is measured)")
    per_core = min(LOIHI2["fan_in_per_core"].value, LOIHI2["synapses_per_core"].value)
    parts = max(1, -(-fan_in // per_core))
    while True:
        width = -(-fan_in // parts)
        worst = width * count_bound if sum_bound is None else min(width * count_bound, sum_bound)
        if wmax * worst <= STATE_MAX:
            return parts
        parts += 1


def pack_cores(csr: Csr) -> list[int]:
    """The first accumulator row of each core: rows (with their synapses) are packed greedily in
    row order, a core taking rows until its neuron, synapse or distinct-input limit would be
    exceeded."""
    lim_n = LOIHI2["neurons_per_core"].value
    lim_s = LOIHI2["synapses_per_core"].value
    lim_f = LOIHI2["fan_in_per_core"].value
    if csr.is_full():  # dense rows: every row reads every input
        per_core = max(1, min(lim_n, lim_s // max(csr.cols, 1)))
        return list(range(0, csr.rows, per_core))
    seen = np.zeros(csr.cols, dtype=bool)
    touched: list[np.ndarray] = []
    starts, rows, synapses, inputs = [0], 0, 0, 0
    for r in range(csr.rows):
        cols = csr.indices[csr.indptr[r]:csr.indptr[r + 1]]
        new = cols[~seen[cols]]
        if rows + 1 > lim_n or synapses + cols.size > lim_s or inputs + new.size > lim_f:
            for t in touched:
                seen[t] = False
            touched.clear()
            starts.append(r)
            rows, synapses, inputs, new = 0, 0, 0, cols
        seen[new] = True
        touched.append(new)
        rows, synapses, inputs = rows + 1, synapses + cols.size, inputs + new.size
    return starts


def encoder_mapping(name: str, neurons: int, payload_bits: int) -> dict:
    """The mapping entry of one spike encoder (one neuron per input channel of a token)."""
    limit = LOIHI2["message_bits"].value
    if payload_bits > limit:
        raise SbcError(f"encoder '{name}': graded spikes need {payload_bits}-bit payloads, "
                       f"Loihi 2 carries {limit}; set max_count or use the bitwise or unary mode")
    return {"neurons": int(neurons), "message_bits": int(payload_bits),
            "cores": int(-(-neurons // LOIHI2["neurons_per_core"].value))}


def layer_mapping(csr: Csr, parts: int) -> dict:
    """The mapping entry of one spike layer's synapses and accumulator neurons (``csr`` already
    split into ``parts``)."""
    return {"accumulator_neurons": int(csr.rows), "synapses": int(csr.indices.size),
            "fan_in": int(csr.fan_in().max(initial=0)), "fan_in_split": int(parts),
            "cores": len(pack_cores(csr))}


def chip_summary(encoders: dict[str, dict], layers: dict[str, dict],
                 compute_nodes: list[str]) -> dict:
    """Totals: neuro-cores, chips, and what runs on the embedded processors."""
    cores = sum(m["cores"] for m in [*encoders.values(), *layers.values()])
    chips = max(1, -(-cores // LOIHI2["cores_per_chip"].value))
    return {"neuro_cores": int(cores), "chips": int(chips),
            "embedded_processes": list(compute_nodes),
            "limits": {k: {"value": v.value, "source": v.source} for k, v in LOIHI2.items()}}
