"""The spiking ops' reference semantics against the formulas of FACTS.md section 1."""
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from sbcompile.runtime.reference_float import conv_nd
from sbcompile.runtime.reference_spike import (dynamic_threshold, exact_conv, pairwise_abs_sum,
                                               quantize_counts, spike_conv, spike_decode,
                                               spike_encode, spike_linear)

DYNAMIC = {"policy": "dynamic", "granularity": "token", "k": 3.0, "vth_min": 1e-5,
           "vth_max": 1e4, "max_count": None, "safety_count": 2 ** 20}
floats = st.floats(-1e6, 1e6, allow_nan=False, width=32)


@settings(max_examples=80, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 5), st.integers(1, 40)), elements=floats),
       st.sampled_from([2.0, 2.5, 3.0, 4.0]), st.booleans())
def test_dynamic_threshold_matches_formula(x, k, zero_first_row):
    if zero_first_row:
        x[0] = 0.0
    counts, vth = spike_encode({**DYNAMIC, "k": k}, x)
    expected_vth = np.clip(np.abs(x.astype(np.float64)).mean(-1, keepdims=True) / k, 1e-5, 1e4)
    np.testing.assert_allclose(vth, expected_vth, rtol=1e-5)
    np.testing.assert_array_equal(counts, np.rint(x / vth).astype(np.int32))
    assert counts.dtype == np.int32 and vth.shape == x.shape[:-1] + (1,)
    if zero_first_row:
        assert vth[0, 0] == np.float32(1e-5) and not counts[0].any()


def test_round_half_to_even_and_clamp():
    x = np.array([[0.5, 1.5, 2.5, -0.5, -1.5, 3.0]], dtype=np.float32)
    attrs = {**DYNAMIC, "policy": "static"}
    counts, _ = spike_encode(attrs, x, np.float32(1.0))
    np.testing.assert_array_equal(counts, [[0, 2, 2, 0, -2, 3]])
    counts, _ = spike_encode({**attrs, "max_count": 1}, x, np.float32(1.0))
    np.testing.assert_array_equal(counts, [[0, 1, 1, 0, -1, 1]])


def test_huge_values_saturate_the_threshold_and_the_safety_clamp_refuses_them():
    x = np.array([[1e30, -1e30, 1.0]], dtype=np.float32)
    vth = dynamic_threshold(x, 3.0, 1e-5, 1e4, "token")
    counts = quantize_counts(x, vth, 2 ** 20)
    assert vth[0, 0] == np.float32(1e4)
    assert counts.dtype == np.int32 and np.abs(counts).max() == 2 ** 20
    with pytest.raises(OverflowError, match="safety clamp of 1048576"):
        spike_encode(DYNAMIC, x)
    counts, vth = spike_encode(DYNAMIC, x / np.float32(1e22))  # vth_max: SpikingBrain's guard
    assert vth[0, 0] == np.float32(1e4)
    np.testing.assert_array_equal(counts, [[10000, -10000, 0]])
    static = {**DYNAMIC, "policy": "static", "max_count": 127}  # a clamp by design
    counts, _ = spike_encode(static, x, np.float32(1.0))
    np.testing.assert_array_equal(counts, [[127, -127, 1]])


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2 ** 31 - 1), st.sampled_from([None, 4, 8]))
def test_spike_linear_groups_exact_and_decode_matches_formula(seed, group):
    rng = np.random.default_rng(seed)
    counts = rng.integers(-50, 50, size=(3, 16)).astype(np.int32)
    w = rng.integers(-127, 128, size=(6, 16)).astype(np.int8)
    acc = spike_linear({"group_size": group}, counts, w)
    g = 16 // (group or 16)
    assert acc.shape == (3, g, 6) and acc.dtype == np.int32
    np.testing.assert_array_equal(acc.sum(1), counts.astype(np.int64) @ w.astype(np.int64).T)
    scale = rng.random((g, 6)).astype(np.float32)
    vth = rng.random((3, 1)).astype(np.float32)
    bias = rng.random(6).astype(np.float32)
    y = spike_decode({"layout": "linear"}, acc, vth, scale, bias)
    expected = vth * (acc.astype(np.float64) * scale).sum(1) + bias
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-3)


def _f32(v: float) -> float:
    return struct.unpack("f", struct.pack("f", v))[0]


def _python_tree(values: list) -> float:
    """The threshold's summation order in plain Python: a power-of-two row (zero-padded) is the
    sum of its two halves' trees; float32 rounding after every add (double then single rounding
    is exact for a sum of two float32 values)."""
    if len(values) == 1:
        return values[0]
    half = len(values) // 2
    return _f32(_python_tree(values[:half]) + _python_tree(values[half:]))


@pytest.mark.parametrize("n", [1, 2, 3, 7, 8, 129, 1000, 3584, 8193])
def test_threshold_sum_order_is_the_ops_pairwise_tree(n, monkeypatch):
    rng = np.random.default_rng(n)
    rows = (rng.standard_normal((3, n)) * rng.lognormal(0, 4, (3, n))).astype(np.float32)
    rows[0, : min(n, 2)] = [1e30, -1e30][: min(n, 2)]
    width = 1 << (n - 1).bit_length()
    expected = [_python_tree([abs(float(v)) for v in r] + [0.0] * (width - n)) for r in rows]

    def numpy_sum_is_not_used(*a, **k):
        raise AssertionError("the threshold must not depend on numpy's summation")
    for name in ("sum", "mean"):
        monkeypatch.setattr(np, name, numpy_sum_is_not_used)
    got = pairwise_abs_sum(rows)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, np.array(expected, np.float32))
    # the same bits whatever the memory layout (numpy's own reductions change with it)
    for view in (np.asfortranarray(rows), rows[:, ::-1][:, ::-1], rows.T.copy().T):
        np.testing.assert_array_equal(pairwise_abs_sum(view), got)
    vth = dynamic_threshold(rows, 3.0, 1e-5, 1e4, "token")
    means = np.array(expected, np.float32) / np.float32(n)
    np.testing.assert_array_equal(vth[:, 0], np.clip(means / np.float32(3.0), np.float32(1e-5),
                                                     np.float32(1e4)))


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2 ** 31), st.integers(1, 3), st.sampled_from([1, 2, 3]),
       st.booleans())
def test_tap_by_tap_integer_conv_equals_the_window_product(seed, n_sp, group, depthwise):
    """spike_conv sums kernel taps one at a time; with integer counts and int8 weights every
    partial sum is exact, so it must give conv_nd's integers whatever the geometry."""
    rng = np.random.default_rng(seed)
    per_group = 1 if depthwise else int(rng.integers(2, 5))
    out_per_group = int(rng.integers(1, 4))
    kernel = [int(rng.integers(1, 4)) for _ in range(n_sp)]
    strides = [int(rng.integers(1, 3)) for _ in range(n_sp)]
    dilations = [int(rng.integers(1, 3)) for _ in range(n_sp)]
    pads = [int(rng.integers(0, 3)) for _ in range(2 * n_sp)]
    spatial = [int(rng.integers(k * d, 10)) for k, d in zip(kernel, dilations)]
    counts = rng.integers(-2 ** 16, 2 ** 16, (int(rng.integers(1, 4)), group * per_group,
                                             *spatial)).astype(np.int32)  # int32 sums
    weight = rng.integers(-127, 128, (group * out_per_group, per_group, *kernel)).astype(np.int8)
    large = counts.astype(np.float64) * 16  # the safety clamp's 2^20
    np.testing.assert_array_equal(
        exact_conv(large, weight.astype(np.float64), strides, pads, dilations, group),
        conv_nd(large, weight.astype(np.float64), None, strides, pads, dilations, group))
    expected = conv_nd(counts.astype(np.float64), weight.astype(np.float64), None, strides,
                       pads, dilations, group)
    attrs = {"strides": strides, "pads": pads, "dilations": dilations, "group": group}
    np.testing.assert_array_equal(spike_conv(attrs, counts, weight),
                                  expected.astype(np.int32))
