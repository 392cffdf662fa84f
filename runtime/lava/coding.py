"""The three signalling modes of the Lava target: what one spike carries, how many steps a token's
window takes, and the weight of each step.

- ``graded``: one graded spike whose payload is the count (T = 1);
- ``unary``: ternary unit spikes, sign(v) each step while v != 0 (T = max |count|);
- ``bitwise``: bit-serial unit spikes, LSB first: step t fires sign(v) * bit t of |v| and carries
  weight 2^t (T = bit length of max |count|).

T is chosen per tensor from the counts the encoder receives (at least one step per token), the
same T the compile-time analysis uses. Receivers recover a count as sum_t w_t * spike_t.
"""
from __future__ import annotations

import numpy as np

from sbcompile.errors import SbcError
from sbcompile.ir.codings import steps_needed

MODES = ("graded", "unary", "bitwise")
# The expansion coding (sbcompile.ir.codings) that each mode emits.
MODE_CODING = {"graded": "graded", "unary": "ternary", "bitwise": "bitwise_bidirectional"}
# Compile-config codings and the mode that carries them on Lava.
CODING_MODE = {"graded": "graded", "binary": "unary", "ternary": "unary", "bitwise": "bitwise",
               "bitwise_bidirectional": "bitwise"}
MAX_MESSAGE_BITS = 24  # Loihi 2 graded-spike payload (see docs/LAVA.md, limits)


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise SbcError(f"unknown Lava signalling mode '{mode}' (known: {', '.join(MODES)})")
    return mode


def mode_for_coding(coding: str) -> str:
    """The signalling mode that carries a compile-config coding."""
    if coding not in CODING_MODE:
        raise SbcError(f"coding '{coding}' has no Lava signalling mode (use one of "
                       f"{', '.join(CODING_MODE)})")
    return CODING_MODE[coding]


def message_bits(mode: str, count_bound: int) -> int:
    """Payload bits of one spike message: sign plus magnitude. Unit spikes (+-1) need 2 bits: with
    0 bits Lava's Dense treats a -1 spike as +1."""
    if mode == "graded":
        return int(count_bound).bit_length() + 1
    return 2


def window_steps(counts: np.ndarray, mode: str) -> int:
    """Steps per token for these counts: what the tensor's largest |count| needs, at least 1."""
    return max(steps_needed(counts, MODE_CODING[mode]), 1)


def step_weight(mode: str, t: int) -> int:
    """Weight of step t's spikes in the recovered count (LSB first for bitwise)."""
    return 1 << t if mode == "bitwise" else 1
