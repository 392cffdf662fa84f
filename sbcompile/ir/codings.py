"""Spike codings: how an integer count becomes an event (spike) sequence, and the exact inverse.

Codings (FACTS.md section 1). Bit order: LSB first, step t carries weight 2^t.
- graded: one step carrying the count itself (Loihi 2 graded spikes);
- binary: unsigned unary, T = max count, spikes in {0, 1};
- ternary: signed unary, T = max |count|, spikes in {-1, 0, 1};
- bitwise: unsigned binary digits, T = ceil(log2(max + 1));
- bitwise_bidirectional: sign(s) * bits of |s|, T = ceil(log2(max|s| + 1)), spikes in {-1, 0, 1};
- twos_complement: bits of the two's complement, MSB weighted -2^(T-1), spikes in {0, 1}.
The IR's compute graph consumes counts directly, which is exact because
sum_t w_t * (W @ s_t) == W @ s (tested). The expand pass records which coding a compile uses;
the analysis and the Lava target count and send events by these definitions.
"""
from __future__ import annotations

import numpy as np

from sbcompile.errors import SbcError

CODINGS = ("graded", "binary", "ternary", "bitwise", "bitwise_bidirectional", "twos_complement")
SIGNED = {"graded", "ternary", "bitwise_bidirectional", "twos_complement"}


def steps_needed(counts: np.ndarray, coding: str) -> int:
    """The smallest T that represents every count of ``counts`` in ``coding``."""
    counts = np.asarray(counts)
    if counts.dtype.kind not in "iu":  # integer counts are read as they are (no copy)
        counts = counts.astype(np.int64)
    if counts.size == 0:
        return 1 if coding == "graded" else 0
    lo, hi = int(counts.min()), int(counts.max())
    if lo < 0 and coding not in SIGNED:
        raise SbcError(f"coding '{coding}' cannot carry negative counts (min {lo})")
    top = max(abs(lo), abs(hi))
    if coding == "graded":
        return 1
    if coding in ("binary", "ternary"):
        return top
    if coding in ("bitwise", "bitwise_bidirectional"):
        return int(top).bit_length()
    if coding == "twos_complement":
        t = 1
        while not (-(1 << (t - 1)) <= lo and hi <= (1 << (t - 1)) - 1):
            t += 1
        return t
    raise SbcError(f"unknown coding '{coding}'")


def step_weights(coding: str, T: int) -> np.ndarray:
    """w_t such that counts = sum_t w_t * events[t] (int64)."""
    if coding in ("graded", "binary", "ternary"):
        return np.ones(T, dtype=np.int64)
    w = np.left_shift(np.int64(1), np.arange(T, dtype=np.int64))
    if coding == "twos_complement" and T > 0:
        w[-1] = -w[-1]
    return w


def expand(counts: np.ndarray, coding: str, T: int | None = None) -> np.ndarray:
    """Events [T, *counts.shape]: int8 spikes for unit codings, int32 counts for graded."""
    counts = np.asarray(counts, dtype=np.int64)
    need = steps_needed(counts, coding)
    T = need if T is None else T
    if T < need:
        raise SbcError(f"T={T} is too short for coding '{coding}' (needs {need})")
    if coding == "graded":
        ev = np.zeros((T,) + counts.shape, dtype=np.int32)
        if T:
            ev[0] = counts
        return ev
    t = np.arange(T, dtype=np.int64).reshape((T,) + (1,) * counts.ndim)
    if coding in ("binary", "ternary"):
        ev = np.sign(counts) * (np.abs(counts) > t)
    elif coding == "bitwise":
        ev = (counts >> t) & 1
    elif coding == "bitwise_bidirectional":
        ev = np.sign(counts) * ((np.abs(counts) >> t) & 1)
    elif coding == "twos_complement":
        ev = (np.where(counts < 0, counts + (1 << T), counts) >> t) & 1
    else:
        raise SbcError(f"unknown coding '{coding}'")
    return ev.astype(np.int8)


def decode(events: np.ndarray, coding: str) -> np.ndarray:
    """The exact inverse of ``expand``: counts as int64."""
    T = events.shape[0]
    w = step_weights(coding, T).reshape((T,) + (1,) * (events.ndim - 1))
    return (events.astype(np.int64) * w).sum(axis=0)


def event_linear(events: np.ndarray, weight: np.ndarray, coding: str) -> np.ndarray:
    """Event-driven integer product: sum_t w_t * (events[t] @ weight.T), int64."""
    w = step_weights(coding, events.shape[0])
    acc = np.zeros(events.shape[1:-1] + (weight.shape[0],), dtype=np.int64)
    for t in range(events.shape[0]):
        acc += w[t] * (events[t].astype(np.int64) @ weight.astype(np.int64).T)
    return acc


def events_per_count(counts: np.ndarray, coding: str, T: int | None = None) -> np.ndarray:
    """Events each count emits in ``coding`` (int64, same shape)."""
    c = counts.astype(np.int64)
    a = np.abs(c)
    if coding == "graded":
        return (c != 0).astype(np.int64)
    if coding in ("binary", "ternary"):
        return a
    if coding in ("bitwise", "bitwise_bidirectional"):
        return _popcount(a)
    if coding == "twos_complement":
        return _popcount(np.where(c < 0, c + (1 << int(T)), c))
    raise SbcError(f"unknown coding '{coding}'")


def _popcount(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.uint64)
    total = np.zeros(a.shape, dtype=np.int64)
    while np.any(a):
        total += (a & np.uint64(1)).astype(np.int64)
        a = a >> np.uint64(1)
    return total


def _bit_length(a: np.ndarray) -> np.ndarray:
    """Bit length of non-negative integers, vectorised (frexp is exact for ints below 2^53)."""
    return np.where(a > 0, np.frexp(a.astype(np.float64))[1], 0).astype(np.int64)


def steps_per_row(rows: np.ndarray, coding: str) -> np.ndarray:
    """T needed by each row of a 2-D count array (one row per token / position)."""
    rows = rows.astype(np.int64)
    if coding == "graded":
        return np.ones(rows.shape[0], dtype=np.int64)
    lo, hi = rows.min(axis=1, initial=0), rows.max(axis=1, initial=0)
    if coding not in SIGNED and lo.min(initial=0) < 0:
        raise SbcError(f"coding '{coding}' cannot carry negative counts")
    top = np.maximum(np.abs(lo), np.abs(hi))
    if coding in ("binary", "ternary"):
        return top
    if coding in ("bitwise", "bitwise_bidirectional"):
        return _bit_length(top)
    if coding == "twos_complement":
        return 1 + np.maximum(_bit_length(hi), np.where(lo < 0, _bit_length(-lo - 1), 0))
    raise SbcError(f"unknown coding '{coding}'")
