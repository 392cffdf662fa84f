"""Reference semantics of the spiking ops (docs/OPS.md, category spike).

The integer path is exact: counts are int32, products accumulate in int64 and must fit int32
(the encoder's safety clamp guarantees it for int8 weights). Float parts run in float32 in a fixed
order, which the GPU and Lava targets follow.
"""
from __future__ import annotations

import math

import numpy as np

from sbcompile.ir.ops import count_limit, saturation, threshold_axes
from sbcompile.ir.shapes import window_out
from sbcompile.runtime.reference_float import attend, conv_nd, padded_geometry

INT32_MAX = np.iinfo(np.int32).max


def pairwise_abs_sum(rows: np.ndarray) -> np.ndarray:
    """sum(|row|) of each row of ``rows`` (float32 [R, n]) in the op's fixed order: zero-padded
    to the next power of two, then adjacent pairs added level by level. Every step is an
    elementwise float32 add, so the bits do not depend on numpy's own summation order."""
    n = rows.shape[-1]
    width = 1 << max(n - 1, 0).bit_length()
    level = np.zeros(rows.shape[:-1] + (width,), np.float32)
    level[..., :n] = np.abs(rows.astype(np.float32))
    with np.errstate(over="ignore"):  # a sum past float32 is inf, as in every target
        while level.shape[-1] > 1:
            level = level[..., 0::2] + level[..., 1::2]
    return level[..., 0]


def dynamic_threshold(x: np.ndarray, k: float, vth_min: float, vth_max: float,
                      granularity: str) -> np.ndarray:
    """SpikingBrain's adaptive threshold: mean(|x|) / k, clipped to [vth_min, vth_max], float32,
    per token (last axis) or per sample (all axes but 0), kept as size-1 dims. The mean is the
    pairwise sum (``pairwise_abs_sum``) divided by the count, both in float32."""
    x = np.asarray(x, dtype=np.float32)
    threshold_axes(x.ndim, granularity)  # (rejects an unknown granularity)
    if granularity == "token":
        rows, kept = x.reshape(-1, x.shape[-1]), x.shape[:-1] + (1,)
    else:
        rows, kept = x.reshape(x.shape[0], -1), (x.shape[0],) + (1,) * (x.ndim - 1)
    n = np.float32(rows.shape[-1])
    mean_abs = pairwise_abs_sum(rows) / n
    return np.clip(mean_abs / np.float32(k), np.float32(vth_min), np.float32(vth_max)).astype(
        np.float32).reshape(kept)


def quantize_counts(x: np.ndarray, vth: np.ndarray, limit: int) -> np.ndarray:
    """round_half_even(x / vth) clipped to +-limit, int32."""
    q = np.rint(x.astype(np.float32) / vth.astype(np.float32))
    return np.clip(q, -limit, limit).astype(np.int32)


def spike_encode(a, x, threshold=None):
    if a["policy"] == "dynamic":
        vth = dynamic_threshold(x, a["k"], a["vth_min"], a["vth_max"], a["granularity"])
    elif a["policy"] == "static":
        vth = np.asarray(threshold, dtype=np.float32)
    else:
        raise ValueError(f"unknown spike_encode policy {a['policy']!r}")
    counts = quantize_counts(x, vth, count_limit(a))
    reason = saturation(a, np.abs(counts).max(initial=0))
    if reason:
        raise OverflowError(reason)
    return counts, vth


def spike_linear(a, counts, weight):
    """acc[..., g, n] = sum_{i in g} weight[n, i] * counts[..., i] (exact, int32).

    Computed as a float64 matrix product: every partial sum is an integer below 2^53 (|count|
    <= 2^20, |weight| <= 127, fewer than 2^25 inputs), so BLAS gives the exact integers."""
    n_out, k = weight.shape
    group = a["group_size"] or k
    c = counts.astype(np.float64)
    w = weight.astype(np.float64)
    acc = np.stack([c[..., j:j + group] @ w[:, j:j + group].T for j in range(0, k, group)],
                   axis=-2)
    return _to_int32(acc)


TAP_BY_TAP_POSITIONS = 1024  # fewer positions per sample: one window product is faster


def spike_conv(a, counts, weight):
    """The exact integer convolution, in float64 for the reason ``spike_linear`` gives (every
    partial sum an integer below 2^53, so any order of the sums gives the same integers):
    tap by tap (``exact_conv``) for depthwise kernels and large maps, where the window matrix
    is the cost; else one window product (``conv_nd``; small maps, many channels)."""
    x, w = counts.astype(np.float64), weight.astype(np.float64)
    args = (a["strides"], a["pads"], a["dilations"], a["group"])
    positions = math.prod(counts.shape[2:]) // math.prod(a["strides"] or [1])
    if weight.shape[1] == 1 or positions >= TAP_BY_TAP_POSITIONS:
        return _to_int32(exact_conv(x, w, *args))
    return _to_int32(conv_nd(x, w, None, *args))


def exact_conv(x, w, strides, pads, dilations, group):
    """N-d cross-correlation (NC* layout) summed kernel tap by kernel tap: per tap, one
    (out channels x in channels) product over the strided input slice, accumulated. No window
    matrix (the float kernel's copy of input x taps); only for sums that are exact in any
    order (integers below 2^53), where it equals ``conv_nd``."""
    n_sp = x.ndim - 2
    x, strides, dilations = padded_geometry(x, strides, pads, dilations)
    kernel = w.shape[2:]
    out = tuple(window_out(x.shape[2 + i], kernel[i], strides[i], 0, 0, dilations[i], False)
                for i in range(n_sp))
    n, per_group, out_per_group = x.shape[0], w.shape[1], w.shape[0] // group
    taps = np.moveaxis(w.reshape(group, out_per_group, per_group, -1), -1, 0)
    taps = np.ascontiguousarray(taps)  # [tap, group, out per group, in per group]
    y = np.zeros((n, group, out_per_group) + out, np.float64)
    rows = y.reshape(n, group, out_per_group, -1)  # a view: one row of positions per channel
    for t, tap in enumerate(np.ndindex(*kernel)):
        window = tuple(slice(k * d, k * d + (o - 1) * s + 1, s)
                       for k, d, o, s in zip(tap, dilations, out, strides))
        xs = x[(slice(None), slice(None)) + window]
        if per_group == 1:  # depthwise: a scale per channel, on the strided slice itself
            y += taps[t].reshape((1, group, out_per_group) + (1,) * n_sp) * xs[:, :, None]
        else:
            rows += np.matmul(taps[t], xs.reshape(n, group, per_group, -1))
    return y.reshape((n, w.shape[0]) + out)


def spike_decode(a, acc, vth, scale=None, bias=None):
    """Float reconstruction in a fixed float32 order: per group (acc * scale), summed over groups
    in order, times vth, plus bias."""
    vth = np.asarray(vth, dtype=np.float32)
    if scale is None:
        y = acc.astype(np.float32) * vth
    elif a["layout"] == "linear":
        prod = acc.astype(np.float32) * scale.astype(np.float32)  # [..., G, N]
        total = prod[..., 0, :]
        for g in range(1, prod.shape[-2]):
            total = total + prod[..., g, :]
        y = total * vth
    elif a["layout"] == "conv":
        shape = (1, -1) + (1,) * (acc.ndim - 2)
        y = acc.astype(np.float32) * scale.astype(np.float32).reshape(shape) * vth
    else:
        raise ValueError(f"unknown spike_decode layout {a['layout']!r}")
    if bias is not None:
        shape = (-1,) if a["layout"] != "conv" else (1, -1) + (1,) * (acc.ndim - 2)
        y = y + bias.astype(np.float32).reshape(shape)
    return y.astype(np.float32)


def spike_scores(a, q_counts, k):
    """acc[b, h, i, j] = q_counts[b, h, i] . k[b, h // rep, j] (exact, int32), as a float64
    product: partial sums stay integers below 2^53 (|count| <= 2^20, |k| <= 128, D < 2^25)."""
    if k.dtype != np.int8:
        raise ValueError(f"spike_scores needs int8 keys, got {k.dtype}")
    kk = np.repeat(k.astype(np.float64), q_counts.shape[1] // k.shape[1], axis=1)
    return _to_int32(np.matmul(q_counts.astype(np.float64), np.swapaxes(kk, -1, -2)))


def spike_attention(a, acc, q_vth, k_scale, v, v_scale, mask=None):
    """Logits from the integer scores in float32 (acc * (q_vth * scale) * k_scale^T), then
    attention's band, mask and softmax on the dequantised int8 values (``attend``)."""
    rep = acc.shape[1] // k_scale.shape[1]
    ks = np.swapaxes(np.repeat(k_scale.astype(np.float32), rep, axis=1), -1, -2)
    logits = acc.astype(np.float32) * (q_vth.astype(np.float32) * np.float32(a["scale"])) * ks
    values = v.astype(np.float32) * v_scale.astype(np.float32)
    return attend(a, logits.astype(np.float64), values, mask).astype(np.float32)


def _to_int32(acc: np.ndarray) -> np.ndarray:
    if acc.size and np.abs(acc).max() > INT32_MAX:  # (the encoder's safety clamp prevents it)
        raise OverflowError("integer accumulator exceeds int32")
    return acc.astype(np.int32)


SPIKE_KERNELS = {"spike_encode": spike_encode, "spike_linear": spike_linear,
                 "spike_conv": spike_conv, "spike_decode": spike_decode,
                 "spike_scores": spike_scores, "spike_attention": spike_attention}
