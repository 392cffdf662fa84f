"""Energy presets: prices per operation class, kept apart from the op counts they price.

Every preset names its source and its convention; op counts come from the analyse pass.
- ``spikingbrain``: SpikingBrain-1.0's arithmetic (arXiv 2509.05276): each spike reaching a
  synapse costs one INT8 add (0.03 pJ); baselines FP16 MAC 1.5 pJ and INT8 MAC 0.23 pJ (Horowitz,
  ISSCC 2014, 45 nm). Ignores memory traffic, routing and control.
- ``horowitz45``: the same 45 nm table, pricing what the integer path really does: unit spikes
  add into int32 accumulators (INT32 add 0.1 pJ), graded spikes multiply (INT8 MAC 0.23 pJ), the
  dynamic threshold's reductions are FP16 adds (0.4 pJ) and each output rescale an FP16
  multiply (1.1 pJ); memory ignored.
- ``vision_snn``: the Spike-driven Transformer / Spikformer convention: E = 4.6 pJ x MACs of the
  first layer + 0.9 pJ x synaptic operations of the others (FP32, 45 nm); baseline FP32 MAC 4.6.
- ``loihi2018``: Davies et al. 2018 (IEEE Micro) pre-silicon Loihi minima: 23.6 pJ per synaptic
  op, 1.7 pJ per in-tile spike, 52 pJ per neuron update. An estimate: no per-op figure exists for
  Loihi 2.
"""
from __future__ import annotations

from sbcompile.config import ENERGY_CONVENTIONS as CONVENTIONS

E_INT8_ADD = 0.03
E_INT32_ADD = 0.1
E_FP16_ADD = 0.4
E_FP16_MULT = 1.1
E_INT8_MAC = 0.23
E_FP16_MAC = 1.5
E_FP32_MAC = 4.6
E_FP32_ADD = 0.9

CONSTANTS = {
    "spikingbrain": {"int8_add": E_INT8_ADD, "fp16_mac": E_FP16_MAC, "int8_mac": E_INT8_MAC},
    "horowitz45": {"int32_add": E_INT32_ADD, "int8_mac": E_INT8_MAC, "fp16_add": E_FP16_ADD,
                   "fp16_mult": E_FP16_MULT, "fp16_mac": E_FP16_MAC},
    "vision_snn": {"fp32_mac": E_FP32_MAC, "fp32_ac": E_FP32_ADD},
    "loihi2018": {"synaptic_op": 23.6, "spike": 1.7, "neuron_update": 52.0,
                  "fp16_mac": E_FP16_MAC, "int8_mac": E_INT8_MAC},
}
UNIT_CLASSES = ("binary_ac", "signed_ac", "shift_add")


def synaptic_ops(ops: dict) -> float:
    """Synaptic operations: unit-spike accumulates plus graded-spike multiplies."""
    return sum(ops.get(c, 0) for c in UNIT_CLASSES) + ops.get("int8_mac_graded", 0)


def spiking_energy(preset: str, ops: dict, first_layer: dict | None = None) -> float:
    """pJ of the spiking model under ``preset`` from op counts (keys of analyse's ``ops``).
    ``first_layer`` holds the first spiked layer's op counts (vision_snn prices it dense)."""
    unit = sum(ops.get(c, 0) for c in UNIT_CLASSES)
    graded = ops.get("int8_mac_graded", 0)
    if preset == "spikingbrain":
        return (unit + graded) * E_INT8_ADD
    if preset == "horowitz45":
        return (unit * E_INT32_ADD + graded * E_INT8_MAC
                + ops.get("threshold_reductions", 0) * E_FP16_ADD
                + ops.get("rescales", 0) * E_FP16_MULT)
    if preset == "vision_snn":
        first = first_layer or {}
        return (first.get("dense_macs", 0) * E_FP32_MAC
                + (synaptic_ops(ops) - synaptic_ops(first)) * E_FP32_ADD)
    if preset == "loihi2018":
        return ((unit + graded) * 23.6 + ops.get("spike_messages", 0) * 1.7
                + ops.get("neuron_updates", 0) * 52.0)
    raise KeyError(preset)


def dense_mac_price(preset: str) -> float:
    """pJ of one MAC of the dense float baseline under ``preset`` (FP16; vision_snn's is FP32):
    what a layer kept in float costs per MAC."""
    return E_FP32_MAC if preset == "vision_snn" else E_FP16_MAC


def energy_table(ops: dict, first_layer: dict | None = None) -> dict:
    """For every preset: spiking pJ, dense FP16 and INT8 pJ, reductions, constants, convention.
    (vision_snn's dense baseline is FP32, as that convention prices it.)"""
    macs = ops.get("dense_macs", 0)
    table = {}
    for preset in CONVENTIONS:
        spiking = spiking_energy(preset, ops, first_layer)
        dense16 = macs * dense_mac_price(preset)
        dense8 = macs * E_INT8_MAC
        table[preset] = {
            "spiking_pJ": spiking, "dense_fp16_pJ": dense16, "dense_int8_pJ": dense8,
            "reduction_vs_fp16": 1 - spiking / dense16 if dense16 else 0.0,
            "reduction_vs_int8": 1 - spiking / dense8 if dense8 else 0.0,
            "constants": CONSTANTS[preset], "convention": CONVENTIONS[preset]}
    return table


def spikingbrain_per_op(mean_spikes_per_channel: float) -> dict:
    """SpikingBrain's headline arithmetic: energy per MAC-equivalent and the reductions."""
    per_op = mean_spikes_per_channel * E_INT8_ADD
    return {"pJ_per_op": per_op, "reduction_vs_fp16": 1 - per_op / E_FP16_MAC,
            "reduction_vs_int8": 1 - per_op / E_INT8_MAC}
