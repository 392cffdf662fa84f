"""The neuron dynamics and weight-shared synapses the Lava models run, against the IR's reference
semantics and the expansion pass (no Lava needed): exact integers in every signalling mode."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sbcompile.errors import SbcError
from sbcompile.ir.graph import Node
from sbcompile.ir.codings import decode, expand
from sbcompile.runtime.lava.coding import MODE_CODING, MODES, step_weight, window_steps
from sbcompile.runtime.lava.connectivity import layer_geometry
from sbcompile.runtime.lava.neurons import AccumulatorCore, EncoderCore, IntegerIFEncoder
from sbcompile.runtime.lava.opcounts import expected_layer_counts
from sbcompile.runtime.lava.synapses import SynapseKernel
from sbcompile.runtime.reference_float import conv_nd
from sbcompile.runtime.reference_spike import spike_conv, spike_encode, spike_linear

counts_arrays = st.lists(st.integers(-300, 300), min_size=1, max_size=24).map(
    lambda v: np.array(v, dtype=np.int32))


@settings(max_examples=60, deadline=None, derandomize=True)
@given(counts=counts_arrays, mode=st.sampled_from(MODES))
def test_if_neuron_emits_the_expansion_and_empties(counts, mode):
    T = window_steps(counts, mode)
    neuron = IntegerIFEncoder(mode, counts.size)
    neuron.charge(counts)
    spikes = np.stack([neuron.fire(t) for t in range(T)])
    assert neuron.residue() == 0
    np.testing.assert_array_equal(spikes, expand(counts, MODE_CODING[mode], T))
    np.testing.assert_array_equal(decode(spikes, MODE_CODING[mode]), counts)


def _encoder(name, neurons, bound, bits, **attrs):
    node = Node(name, "spike_encode", ["x"], ["c", "v"], {"policy": "dynamic", **attrs})
    return {"name": name, "node": node.to_json(), "x": "x", "counts": "c", "vth": "v",
            "neurons": neurons, "count_bound": bound, "message_bits": bits}


def _drive(core: EncoderCore, accs: list[tuple[SynapseKernel, AccumulatorCore]]) -> None:
    """Step an encoder through its windows, feeding each synapse's accumulator without delay."""
    while True:
        spikes, ctrl = core.step()
        if not ctrl[0]:
            return
        for kernel, acc in accs:
            synaptic_input = kernel.apply(spikes.reshape(-1, kernel.geometry.cols))
            acc.apply(synaptic_input if spikes.ndim > 1 else synaptic_input[0], ctrl)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("parallel", [False, True])
def test_encoder_and_accumulators_recover_counts_and_acc(mode, parallel):
    rng = np.random.default_rng(7)
    x = rng.normal(size=(3, 5, 12)).astype(np.float32)
    enc = _encoder("enc", 12, bound=37, bits=8 if mode == "graded" else 2)
    core = EncoderCore(enc, mode, None, parallel=parallel)
    counts, vth = core.load(x)
    ref_counts, ref_vth = spike_encode({**core.attrs}, x)
    np.testing.assert_array_equal(counts, ref_counts)
    np.testing.assert_array_equal(vth, ref_vth)
    weight = rng.integers(-127, 128, size=(6, 12)).astype(np.int8)
    geometry = layer_geometry("spike_linear", weight.shape, {"group_size": 4}, ())
    kernel = SynapseKernel(geometry, weight, parts=2)  # groups and a fan-in split
    assert geometry.rows == 3 * 6 and geometry.row_entries == 4
    acc = AccumulatorCore("layer", geometry.rows * 2, 2, tokens=15)
    _drive(core, [(kernel, acc)])
    got = acc.acc().reshape(3, 5, 3, 6)
    np.testing.assert_array_equal(got, spike_linear({"group_size": 4}, counts, weight))
    expected = expected_layer_counts(counts, geometry.fan_out(), mode)
    assert int(core.events.sum()) == expected["spike_messages"]
    assert core.updates == expected["neuron_updates"]
    assert core.T == window_steps(counts, mode)
    assert core.steps == core.T * (1 if parallel else 15)


def test_static_threshold_clamps_and_step_weights_are_lsb_first():
    enc = _encoder("enc", 4, bound=3, bits=3, max_count=3)
    enc["node"]["attrs"] = {"policy": "static", "max_count": 3}
    core = EncoderCore(enc, "bitwise", np.float32(0.5), parallel=False)
    counts, _ = core.load(np.array([[0.2, -0.9, 5.0, -7.0]], dtype=np.float32))
    np.testing.assert_array_equal(counts, [[0, -2, 3, -3]])
    steps = [core.step() for _ in range(core.T)]
    assert [int(c[2]) for _, c in steps] == [step_weight("bitwise", t) for t in range(2)]
    np.testing.assert_array_equal(steps[0][0], [0, 0, 1, -1])  # bit 0 first
    np.testing.assert_array_equal(steps[1][0], [0, -1, 1, -1])


def test_count_beyond_the_compiled_bound_is_a_clear_error():
    core = EncoderCore(_encoder("enc7", 4, bound=2, bits=3), "graded", None, parallel=True)
    with pytest.raises(SbcError, match="enc7.*exceeds the bound 2"):
        core.load(np.array([[0.0, 0.0, 0.0, 9.0]], dtype=np.float32))


def test_accumulator_refuses_to_overflow_the_neuron_state():
    acc = AccumulatorCore("wide", rows=1, parts=1, tokens=1)
    with pytest.raises(SbcError, match="wide.*24-bit"):
        acc.apply(np.array([1 << 23]), np.array([1, 0, 1, 1]))


@pytest.mark.parametrize("geometry", [
    dict(c=2, hw=(9, 9), o=4, k=(3, 3), strides=[1, 1], pads=[1, 1, 1, 1], dil=[1, 1], group=1),
    dict(c=4, hw=(7, 6), o=6, k=(3, 2), strides=[2, 1], pads=[0, 1, 2, 0], dil=[1, 2], group=2),
    dict(c=3, hw=(10,), o=3, k=(4,), strides=[3], pads=[2, 1], dil=[1], group=3),
    dict(c=4, hw=(7, 8), o=4, k=(3, 3), strides=[2, 2], pads=[1, 0, 1, 2], dil=[1, 1], group=4),
])
@pytest.mark.parametrize("parts", [1, 2, 5])
@pytest.mark.parametrize("top", [40, 1 << 20])  # float32 sums, and payloads that need float64
@pytest.mark.parametrize("silent", [False, True])  # channels without a spike are left out
def test_shared_conv_synapses_are_the_exact_convolution(geometry, parts, top, silent):
    g = geometry
    rng = np.random.default_rng(3)
    weight = rng.integers(-127, 128, size=(g["o"], g["c"] // g["group"]) + g["k"]).astype(np.int8)
    counts = rng.integers(-top, top, size=(2, g["c"]) + g["hw"]).astype(np.int32)
    if silent:
        counts[:, 1::2] = 0
    attrs = {"strides": g["strides"], "pads": g["pads"], "dilations": g["dil"],
             "group": g["group"]}
    geo = layer_geometry("spike_conv", weight.shape, attrs, (g["c"],) + g["hw"])
    ref = spike_conv(attrs, counts, weight)
    assert geo.out_shape == ref.shape[1:]
    partials = SynapseKernel(geo, weight, parts).apply(counts.reshape(2, -1))
    got = partials.reshape(2, -1, parts).sum(axis=-1)
    np.testing.assert_array_equal(got.reshape(ref.shape), ref)
    # each partial sums at most its share of the row's weight entries
    width = -(-geo.row_entries // parts)
    assert int(np.abs(partials).max()) <= width * 127 * top
    # synapses, fan-in and fan-out from the geometry equal those of the expanded convolution
    ones = np.ones((g["o"], g["c"] // g["group"]) + g["k"], dtype=np.int64)
    structural = conv_nd(np.ones((1, g["c"]) + g["hw"], np.int64), ones, None, g["strides"],
                         g["pads"], g["dil"], g["group"])
    assert geo.synapses() == int(structural.sum()) and geo.fan_in() == int(structural.max())
    reach = conv_nd(np.abs(counts).astype(np.int64), ones, None, g["strides"], g["pads"],
                    g["dil"], g["group"])
    assert int(np.abs(counts).reshape(2, -1).sum(0) @ geo.fan_out()) == int(reach.sum())
