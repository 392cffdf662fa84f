"""Operation counts of spike layers, one definition shared by the simulation and the compile-time
analysis (``sbcompile.passes.analyse``), and float-operation estimates of compute processes.

Per spike layer (a spike_linear / spike_conv node), over one run of the model:
- ``spike_messages``: nonzero spikes its encoder emits, over every token and step (a graded
  spike counts once, a unary count c sends |c| spikes, a bitwise one popcount(|c|));
- ``synaptic_ops``: for each of those spikes, the synapses of its input neuron (its fan-out:
  N outputs for a linear layer, output channels x the output positions it reaches for a conv;
  a zero int8 weight is still a synapse);
- ``neuron_updates``: encoder neurons x window steps x tokens (each of the layer's input
  neurons updates every step of its window; the window T is the steps the tensor's largest
  |count| needs in the mode, at least 1);
- ``accumulator_updates`` (simulation only): accumulator neurons x window steps x tokens.
The simulation measures the first three from the spikes its encoders actually emitted; the
compile-time side computes them from the reference counts with ``expected_layer_counts``.
"""
from __future__ import annotations

import math

import numpy as np

from sbcompile.ir.codings import events_per_count
from sbcompile.runtime.lava.coding import MODE_CODING, window_steps

def expected_layer_counts(counts: np.ndarray, fan_out: np.ndarray, mode: str) -> dict[str, int]:
    """The op counts of one spike layer from its integer counts (the IR value) and the fan-out
    of each input neuron (one entry per neuron of a token, or of a sample for convolutions)."""
    per_neuron = counts.reshape(-1, fan_out.size)
    events = events_per_count(per_neuron, MODE_CODING[mode]).sum(axis=0)
    return {"synaptic_ops": int(events @ fan_out), "spike_messages": int(events.sum()),
            "neuron_updates": int(counts.size * window_steps(counts, mode))}


# the op class under which the compile-time analysis reports each mode's synaptic operations
SYNAPTIC_CLASS = {"graded": "int8_mac_graded", "unary": "signed_ac", "bitwise": "shift_add"}


def compare_with_report(simulated: dict[str, dict], report: dict, mode: str) -> dict[str, dict]:
    """Per layer of a compile report and per count: the simulated value, the compile-time one
    (the report's per-inference figure times its calibration samples, so the simulation must
    have run on the calibration inputs) and whether they are equal."""
    samples = report["calibration_samples"]
    result = {}
    for layer in report["layers"]:
        ops = layer["ops"]
        compile_time = {"synaptic_ops": ops.get(SYNAPTIC_CLASS[mode], 0.0),
                        "spike_messages": ops["spike_messages"],
                        "neuron_updates": ops["neuron_updates"]}
        sim = simulated.get(layer["name"], {})
        result[layer["name"]] = {
            k: {"simulated": sim.get(k), "compile_time": round(v * samples),
                "equal": sim.get(k) == round(v * samples)} for k, v in compile_time.items()}
    return result


# float operations per output element of the compute ops without a closed formula below
_PER_ELEMENT = {"layer_norm": 8, "rms_norm": 6, "batch_norm": 4, "softmax": 5,
                "log_softmax": 6, "gelu": 8, "silu": 5, "sigmoid": 4, "tanh": 4, "erf": 8,
                "exp": 4, "log": 4, "sqrt": 2, "pow": 4}
_FREE = {"reshape", "transpose", "flatten", "concat", "split", "slice", "gather",
         "gather_elements", "unsqueeze", "squeeze", "expand", "tile", "shape",
         "constant_of_shape", "range", "identity", "cast", "pad", "trilu"}


def compute_flops(node: dict, shapes: dict[str, tuple[int, ...]]) -> int:
    """Estimated float operations of one compute node (a multiply-add counts 2; data movement
    counts 0; other elementwise work 1 per output element, transcendental ops a few)."""
    op = node["op"]
    out = shapes.get(node["outputs"][0], ())
    n_out = math.prod(out)
    ins = [shapes.get(i, ()) for i in node["inputs"] if i]
    if op in _FREE:
        return 0
    if op in ("matmul", "linear"):
        return 2 * n_out * (ins[0][-1] if ins and ins[0] else 1)
    if op == "conv":
        return 2 * n_out * math.prod(ins[1][1:])
    if op == "attention":  # q [B, H, Tq, D], k [B, Hk, Tk, D]
        b, h, tq, d = ins[0]
        tk = ins[1][2]
        return b * h * tq * tk * (4 * d + _PER_ELEMENT["softmax"])
    if op == "spike_scores":  # integer multiply-adds: q counts [B, H, Tq, D] x int8 keys
        return 2 * n_out * ins[0][-1]
    if op == "spike_attention":  # acc [B, H, Tq, Tk], v [B, Hk, Tk, Dv]: rescale, softmax, p v
        return n_out // ins[3][-1] * ins[0][-1] * (2 * ins[3][-1] + 2 + _PER_ELEMENT["softmax"])
    if op == "gla":  # q [B, T, H, K], v [B, T, H, V]: state update and readout per step
        b, t, h, k = ins[0]
        return 6 * b * t * h * k * ins[2][-1]
    if op == "spike_decode":  # per acc element: scale multiply and group sum; vth; bias
        return 2 * math.prod(ins[0]) + 2 * n_out
    return _PER_ELEMENT.get(op, 1) * n_out
