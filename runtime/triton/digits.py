"""Signed base-128 digits: how integer counts beyond int8 ride on int8 units (tensor-core dots,
the tensor-parallel wire). ``split_digit`` is written in operators only so that one definition
serves both sides: the Triton kernels run it jitted (``kernels/common.py``), PyTorch as it is
(``runtime/tensor_parallel.py``)."""
from __future__ import annotations


def split_digit(c):
    """(digit, carry) with c == digit + 128 * carry, exactly: the digit is c itself when
    |c| <= 127, else the signed digit ((c + 64) & 127) - 64 in [-64, 63] (so counts within
    +-127 take one digit, and every further digit halves the range a plain int8 would)."""
    carry = ((c > 127) | (c < -127)) * ((c + 64) >> 7)
    return c - (carry << 7), carry


def digits_for(limit: int) -> int:
    """How many signed base-128 int8 digits hold every count up to +-limit (``split_digit``
    applied to all but the last, which takes the rest)."""
    if limit <= 127:
        return 1
    return 2 if limit <= 127 * 128 + 63 else 3
