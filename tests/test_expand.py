"""Event expansion: decode(expand(s)) == s and the event-driven product equals W @ s, exactly."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from sbcompile.errors import SbcError
from sbcompile.ir.codings import (decode, event_linear, events_per_count, expand,
                                     steps_needed, steps_per_row)

SIGNED = ["graded", "ternary", "bitwise_bidirectional", "twos_complement"]
UNSIGNED = ["binary", "bitwise"]
counts_signed = arrays(np.int32, st.tuples(st.integers(1, 4), st.integers(1, 12)),
                       elements=st.integers(-300, 300))
counts_unsigned = arrays(np.int32, st.tuples(st.integers(1, 4), st.integers(1, 12)),
                         elements=st.integers(0, 300))


@settings(max_examples=60, deadline=None)
@given(counts_signed, st.sampled_from(SIGNED))
def test_roundtrip_signed(counts, coding):
    ev = expand(counts, coding)
    np.testing.assert_array_equal(decode(ev, coding), counts)
    if coding != "graded":
        assert set(np.unique(ev)) <= ({0, 1} if coding == "twos_complement" else {-1, 0, 1})


@settings(max_examples=60, deadline=None)
@given(counts_unsigned, st.sampled_from(UNSIGNED + SIGNED))
def test_roundtrip_unsigned(counts, coding):
    np.testing.assert_array_equal(decode(expand(counts, coding), coding), counts)


@settings(max_examples=40, deadline=None)
@given(counts_signed, st.sampled_from(SIGNED), st.integers(0, 2 ** 31 - 1))
def test_event_linear_is_exact(counts, coding, seed):
    w = np.random.default_rng(seed).integers(-127, 128, size=(5, counts.shape[1])).astype(np.int8)
    expected = counts.astype(np.int64) @ w.astype(np.int64).T
    np.testing.assert_array_equal(event_linear(expand(counts, coding), w, coding), expected)


def test_lengths_and_bit_order():
    s = np.array([5, -3, 0])
    assert steps_needed(s, "bitwise_bidirectional") == 3
    assert steps_needed(s, "ternary") == 5
    assert steps_needed(s, "twos_complement") == 4   # -8..7
    ev = expand(np.array([6]), "bitwise")
    np.testing.assert_array_equal(ev[:, 0], [0, 1, 1])  # LSB first: 6 = 0b110
    ev = expand(np.array([-5]), "bitwise_bidirectional")
    np.testing.assert_array_equal(ev[:, 0], [-1, 0, -1])
    assert events_per_count(s, "bitwise_bidirectional").sum() == 2 + 2
    assert events_per_count(s, "graded").sum() == 2


def test_longer_window_pads_with_silence():
    ev = expand(np.array([3, -1]), "ternary", T=6)
    assert ev.shape == (6, 2)
    np.testing.assert_array_equal(decode(ev, "ternary"), [3, -1])
    with pytest.raises(SbcError, match="too short"):
        expand(np.array([9]), "bitwise", T=2)


def test_unsigned_coding_refuses_negative_counts():
    with pytest.raises(SbcError, match="negative"):
        expand(np.array([1, -2]), "binary")


@settings(max_examples=40, deadline=None)
@given(counts_signed, st.sampled_from(SIGNED))
def test_steps_per_row_matches_steps_needed(counts, coding):
    expected = [steps_needed(row, coding) for row in counts]
    np.testing.assert_array_equal(steps_per_row(counts, coding), expected)


@settings(max_examples=60, deadline=None)
@given(counts_signed, st.sampled_from(SIGNED))
def test_events_per_count_counts_the_expanded_spikes(counts, coding):
    events = expand(counts, coding)
    expected = np.count_nonzero(events, axis=0) if coding != "graded" else counts != 0
    np.testing.assert_array_equal(events_per_count(counts, coding, T=events.shape[0]), expected)
