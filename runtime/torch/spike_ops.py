"""The spiking ops as PyTorch custom operators (``torch.ops.sbcompile.*``), registered with
``torch.library``.

Each op's default implementation is plain PyTorch with the reference's integer semantics
(docs/OPS.md) and runs on any device: the threshold's pairwise float32 sum by explicit level
adds, ``round_half_even(x / vth)`` in float32, and the integer products as float matrix
products that are exact: float32 when every partial sum is bounded below 2^24 by the input's
peak |count| times the largest group row of |W| (checked on each call), float64 otherwise
(every partial sum an integer below 2^53). On a GPU, ``runtime/torch/triton_ops.py`` registers
the Triton kernels for the same ops. A fake (meta) implementation gives ``torch.compile`` and
``torch.export`` the output shapes, so the ops trace as single nodes.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

FLOAT32_EXACT = 2 ** 24  # float32 holds every integer up to this


def exact_dtype(peak: Tensor, row_abs_sum: Tensor) -> torch.dtype:
    """float32 when peak |count| times the largest row sum of |W| stays below 2^24 (every
    partial sum of the product is then an exact float32 integer), else float64; always float64
    off the CPU (no host sync, so the op can be captured in a CUDA graph)."""
    if peak.device.type != "cpu":
        return torch.float64
    bound = int(peak) * int(row_abs_sum)
    return torch.float32 if bound < FLOAT32_EXACT else torch.float64


def pairwise_abs_sum(rows: Tensor) -> Tensor:
    """sum(|row|) of each row of float32 ``rows`` [R, n] in the op's fixed order: zero-padded to
    the next power of two, then adjacent pairs added level by level (elementwise float32 adds:
    the same bits as the reference and the kernels)."""
    n = rows.shape[-1]
    width = 1 << max(n - 1, 0).bit_length()
    level = F.pad(rows.abs(), (0, width - n))
    while level.shape[-1] > 1:
        level = level[..., 0::2] + level[..., 1::2]
    return level[..., 0]


@torch.library.custom_op("sbcompile::spike_encode", mutates_args=())
def spike_encode(x: Tensor, threshold: Optional[Tensor], dynamic: bool, sample: bool,
                 k: float, vth_min: float, vth_max: float, limit: int) -> tuple[Tensor, Tensor]:
    """counts (int32, x's shape) and vth (float32): the dynamic threshold per token (``sample``:
    per sample, all axes but 0) kept as size-1 dims, or the static ``threshold``."""
    counts, vth = float_counts(x, threshold, dynamic, sample, k, vth_min, vth_max, limit)
    return counts.to(torch.int32), vth.clone() if not dynamic else vth


def float_counts(x: Tensor, threshold: Optional[Tensor], dynamic: bool, sample: bool, k: float,
                 vth_min: float, vth_max: float, limit: int) -> tuple[Tensor, Tensor]:
    """``spike_encode``'s counts as float32 integers, and vth."""
    x = x.to(torch.float32)
    if dynamic:
        rows = x.reshape(x.shape[0], -1) if sample else x.reshape(-1, x.shape[-1])
        kept = (x.shape[0],) + (1,) * (x.dim() - 1) if sample else x.shape[:-1] + (1,)
        mean = pairwise_abs_sum(rows) / float(rows.shape[-1])
        vth = (mean / k).clamp(vth_min, vth_max).reshape(kept)
    else:
        vth = threshold.to(torch.float32)
    counts = x / vth
    return torch.round(counts, out=counts).clamp_(-limit, limit), vth


def exact_product(op, counts: Tensor, peak: int, bound: int) -> Tensor:
    """``op`` (linear in its input: a convolution or matrix product with an integer weight of
    largest row |W| sum ``bound``) of float32 integer ``counts`` of peak |count| ``peak``,
    exactly, as float32 (or float64) integers. float32 when every partial sum stays below
    2^24; else counts = 2^s a + b split so that both products do (two float32 products,
    combined in float64); float64 when no split does."""
    if peak * bound < FLOAT32_EXACT:
        return op(counts)
    for s in range(1, 24):
        if 2 ** (s - 1) * bound < FLOAT32_EXACT and (peak // 2 ** s + 1) * bound < FLOAT32_EXACT:
            high = torch.round(counts / 2 ** s)
            low = counts - high * 2 ** s
            return op(high).double() * 2 ** s + op(low).double()
    return op(counts.double())


@spike_encode.register_fake
def _(x, threshold, dynamic, sample, k, vth_min, vth_max, limit):
    counts = x.new_empty(x.shape, dtype=torch.int32)
    if not dynamic:
        return counts, threshold.new_empty(threshold.shape, dtype=torch.float32)
    kept = (x.shape[0],) + (1,) * (x.dim() - 1) if sample else tuple(x.shape[:-1]) + (1,)
    return counts, x.new_empty(kept, dtype=torch.float32)


@torch.library.custom_op("sbcompile::spike_linear", mutates_args=())
def spike_linear(counts: Tensor, weight: Tensor, group_size: Optional[int]) -> Tensor:
    """acc [..., G, N] int32: each group's exact integer product of int32 counts [..., K] with
    int8 weight [N, K]."""
    n_out, channels = weight.shape
    group = group_size or channels
    lead = counts.shape[:-1]
    c = counts.reshape(-1, channels // group, group)
    w = weight.reshape(n_out, channels // group, group)
    peak = c.abs().amax() if c.numel() else torch.zeros((), dtype=torch.int32)
    dtype = exact_dtype(peak, w.to(torch.int32).abs().sum(dim=-1).amax())
    acc = torch.einsum("mgi,ngi->mgn", c.to(dtype), w.to(dtype))
    return acc.to(torch.int32).reshape(*lead, channels // group, n_out)


@spike_linear.register_fake
def _(counts, weight, group_size):
    n_out, channels = weight.shape
    groups = channels // (group_size or channels)
    return counts.new_empty(tuple(counts.shape[:-1]) + (groups, n_out), dtype=torch.int32)


def conv_padding(x: Tensor, pads: list[int]) -> tuple[Tensor, list[int]]:
    """``x`` padded where begin and end pads differ, and the symmetric pads left for F.conv."""
    n_sp = len(pads) // 2
    begin, end = pads[:n_sp], pads[n_sp:]
    if begin == end:
        return x, begin
    widths = []
    for b, e in zip(reversed(begin), reversed(end)):
        widths += [b, e]
    return F.pad(x, widths), [0] * n_sp


CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def conv_nd(x: Tensor, w: Tensor, b: Optional[Tensor], strides: list[int], pads: list[int],
            dilations: list[int], group: int) -> Tensor:
    """N-d cross-correlation with ONNX's [begin..., end...] pads (1-3 spatial dims)."""
    n_sp = x.dim() - 2
    x, pad = conv_padding(x, list(pads) or [0] * (2 * n_sp))
    return CONV[n_sp](x, w, b, list(strides) or [1] * n_sp, pad,
                      list(dilations) or [1] * n_sp, group)


@torch.library.custom_op("sbcompile::spike_conv", mutates_args=())
def spike_conv(counts: Tensor, weight: Tensor, strides: list[int], pads: list[int],
               dilations: list[int], group: int) -> Tensor:
    """The exact integer convolution of int32 counts with an int8 weight, int32."""
    peak = counts.abs().amax() if counts.numel() else torch.zeros((), dtype=torch.int32)
    dtype = exact_dtype(peak, weight.to(torch.int32).abs().flatten(1).sum(dim=1).amax())
    with torch.backends.cudnn.flags(enabled=False):  # no FFT or Winograd: exact sums
        acc = conv_nd(counts.to(dtype), weight.to(dtype), None, strides, pads, dilations, group)
    return acc.to(torch.int32)


@spike_conv.register_fake
def _(counts, weight, strides, pads, dilations, group):
    n_sp = counts.dim() - 2
    strides = list(strides) or [1] * n_sp
    pads = list(pads) or [0] * (2 * n_sp)
    dilations = list(dilations) or [1] * n_sp
    spatial = [(counts.shape[2 + i] + pads[i] + pads[i + n_sp] - dilations[i] *
                (weight.shape[2 + i] - 1) - 1) // strides[i] + 1 for i in range(n_sp)]
    return counts.new_empty([counts.shape[0], weight.shape[0]] + spatial, dtype=torch.int32)


@torch.library.custom_op("sbcompile::spike_scores", mutates_args=())
def spike_scores(q_counts: Tensor, k: Tensor) -> Tensor:
    """acc [B, Hq, Tq, Tk] int32 = q_counts . k^T exactly, KV heads shared by Hq / Hkv query
    heads (GQA)."""
    kk = k.repeat_interleave(q_counts.shape[1] // k.shape[1], dim=1)
    peak = q_counts.abs().amax() if q_counts.numel() else torch.zeros((), dtype=torch.int32)
    dtype = exact_dtype(peak, torch.tensor(128 * q_counts.shape[-1]))
    return torch.matmul(q_counts.to(dtype), kk.to(dtype).transpose(-1, -2)).to(torch.int32)


@spike_scores.register_fake
def _(q_counts, k):
    return q_counts.new_empty(tuple(q_counts.shape[:-1]) + (k.shape[2],), dtype=torch.int32)


# ---- fused chains: one encoder and every layer reading its counts ------------------------------
def decode_groups(acc: Tensor, vth: Tensor, scale: Tensor, bias: Optional[Tensor]) -> Tensor:
    """spike_decode, layout linear, in the op's float32 order (groups summed in order)."""
    prod = acc.to(torch.float32) * scale.to(torch.float32)
    total = prod[..., 0, :]
    for g in range(1, prod.shape[-2]):
        total = total + prod[..., g, :]
    y = total * vth
    return y + bias if bias is not None else y


def decode_conv(acc: Tensor, vth: Tensor, scale: Tensor, bias: Optional[Tensor],
                inplace: bool = False) -> Tensor:
    """spike_decode, layout conv: acc * scale[O] * vth + bias[O] in float32 (``inplace``: into
    acc itself, when it is a float32 tensor the caller no longer needs)."""
    shape = (1, -1) + (1,) * (acc.dim() - 2)
    y = acc if inplace and acc.dtype == torch.float32 else acc.to(torch.float32)
    y = y.mul_(scale.to(torch.float32).reshape(shape)) if y is acc else \
        y * scale.to(torch.float32).reshape(shape)
    y = y.mul_(vth)
    return y.add_(bias.reshape(shape)) if bias is not None else y


def linears_plain(x, threshold, weights, scales, biases, groups, dynamic, sample, k, vth_min,
                  vth_max, limit, store_acc):
    """``spiked_linears`` by the plain exact ops: the reference's steps."""
    counts, vth = spike_encode(x, threshold, dynamic, sample, k, vth_min, vth_max, limit)
    accs, ys = [], []
    for w, scale, bias, group in zip(weights, scales, biases, groups):
        acc = spike_linear(counts, w, group or None)
        ys.append(decode_groups(acc, vth, scale, bias) if scale is not None
                  else x.new_empty(0))
        accs.append(acc if store_acc or scale is None else x.new_empty(0, dtype=torch.int32))
    return counts, vth, accs, ys


def convs_cpu(x, threshold, float_weights, scales, biases, bounds, geometry, dynamic, sample, k,
              vth_min, vth_max, limit, store_acc):
    """``spiked_convs`` on the CPU: float32 integer counts straight into float32 convolutions
    (``exact_product``), decoded from the float result; the int32 counts and accumulators are
    made only when asked for (``store_acc``). Outputs channels-last (as on the GPU)."""
    counts, vth = float_counts(x, threshold, dynamic, sample, k, vth_min, vth_max, limit)
    given = counts
    peak = limit  # the encoder's own bound; the measured peak only where that bound is too loose
    if counts.numel() and limit * max(bounds, default=0) >= FLOAT32_EXACT:
        low, high = torch.aminmax(counts)
        peak = int(max(-low, high))
    counts = counts.contiguous(memory_format=torch.channels_last)  # oneDNN needs no reorder
    accs, ys = [], []
    for i, (w, scale, bias) in enumerate(zip(float_weights, scales, biases)):
        st, pd, dl = conv_geometry(geometry, i)
        acc = exact_product(lambda c, w=w: conv_nd(c, w.to(c.dtype), None, st, pd, dl, 1),
                            counts, peak, bounds[i]).contiguous(memory_format=torch.channels_last)
        keep = store_acc or scale is None
        accs.append(acc.to(torch.int32) if keep else x.new_empty(0, dtype=torch.int32))
        ys.append(decode_conv(acc, vth, scale, bias, inplace=True) if scale is not None
                  else x.new_empty(0))
    if store_acc:  # channels-last where a static threshold quantised channels-last input
        keep_last = not dynamic and x.is_contiguous(memory_format=torch.channels_last)
        counts = (counts if keep_last else given.contiguous()).to(torch.int32)
    return (counts if store_acc else x.new_empty(0, dtype=torch.int32),
            vth if dynamic else vth.clone(), accs, ys)


def convs_plain(x, threshold, weights, scales, biases, geometry, dynamic, sample, k, vth_min,
                vth_max, limit, store_acc):
    """``spiked_convs`` by the plain exact ops."""
    counts, vth = spike_encode(x, threshold, dynamic, sample, k, vth_min, vth_max, limit)
    accs, ys = [], []
    for i, (w, scale, bias) in enumerate(zip(weights, scales, biases)):
        st, pd, dl = conv_geometry(geometry, i)
        acc = spike_conv(counts, w, st, pd, dl, 1)
        ys.append(decode_conv(acc, vth, scale, bias) if scale is not None else x.new_empty(0))
        accs.append(acc if store_acc or scale is None else x.new_empty(0, dtype=torch.int32))
    return counts, vth, accs, ys


GEOMETRY = 8  # ints per 2-d convolution in a chain: strides (2), pads (4), dilations (2)


def conv_geometry(geometry: list[int], i: int) -> tuple[list[int], list[int], list[int]]:
    g = list(geometry[GEOMETRY * i:GEOMETRY * (i + 1)])
    return g[0:2], g[2:6], g[6:8]


@torch.library.custom_op("sbcompile::spiked_linears", mutates_args=())
def spiked_linears(x: Tensor, threshold: Optional[Tensor], weights: list[Tensor],
                   wts: list[Optional[Tensor]], scales: list[Optional[Tensor]],
                   biases: list[Optional[Tensor]], groups: list[int], dynamic: bool,
                   sample: bool, k: float, vth_min: float, vth_max: float, limit: int,
                   density: float, store_acc: bool
                   ) -> tuple[Tensor, Tensor, list[Tensor], list[Tensor]]:
    """One encoder and every ``spike_linear`` reading its counts, each with its
    ``spike_decode`` (scale [G, N], bias [N]; scale None: the layer is decoded elsewhere):
    counts, vth, each acc [..., G, N] (empty unless ``store_acc`` or undecoded) and y [..., N]
    (empty when undecoded). ``groups``: each layer's group size (0: one group); ``wts``,
    ``density``: the transposed weights and planned count density of the GPU's event path."""
    return linears_plain(x, threshold, weights, scales, biases, groups, dynamic, sample, k,
                         vth_min, vth_max, limit, store_acc)


@spiked_linears.register_fake
def _(x, threshold, weights, wts, scales, biases, groups, dynamic, sample, k, vth_min, vth_max,
      limit, density, store_acc):
    counts, vth = spike_encode(x, threshold, dynamic, sample, k, vth_min, vth_max, limit)
    lead = tuple(x.shape[:-1])
    accs, ys = [], []
    for w, scale, group in zip(weights, scales, groups):
        n_out, channels = w.shape
        g = channels // (group or channels)
        keep = store_acc or scale is None
        accs.append(x.new_empty(lead + (g, n_out) if keep else (0,), dtype=torch.int32))
        ys.append(x.new_empty(lead + (n_out,) if scale is not None else (0,),
                              dtype=torch.float32))
    return counts, vth, accs, ys


@torch.library.custom_op("sbcompile::spiked_convs", mutates_args=())
def spiked_convs(x: Tensor, threshold: Optional[Tensor], weights: list[Tensor],
                 prepared: list[Tensor], scales: list[Optional[Tensor]],
                 biases: list[Optional[Tensor]], bounds: list[int], geometry: list[int],
                 dynamic: bool, sample: bool, k: float, vth_min: float, vth_max: float,
                 limit: int, store_acc: bool
                 ) -> tuple[Tensor, Tensor, list[Tensor], list[Tensor]]:
    """One encoder and every 2-d ``spike_conv`` (group 1) reading its counts, each with its
    ``spike_decode`` (layout conv); ``geometry``: GEOMETRY ints per layer; ``prepared``: each
    weight in the device's compute form (CPU: float32; GPU: the int8 GEMM's layout);
    ``bounds``: each weight's largest row sum of |W|. Outputs as ``spiked_linears`` (the
    counts too are empty unless ``store_acc``, where the CPU does not need them)."""
    if prepared and prepared[0].is_floating_point():
        return convs_cpu(x, threshold, prepared, scales, biases, bounds, geometry, dynamic,
                         sample, k, vth_min, vth_max, limit, store_acc)
    return convs_plain(x, threshold, weights, scales, biases, geometry, dynamic, sample, k,
                       vth_min, vth_max, limit, store_acc)


@spiked_convs.register_fake
def _(x, threshold, weights, prepared, scales, biases, bounds, geometry, dynamic, sample, k,
      vth_min, vth_max, limit, store_acc):
    counts, vth = spike_encode(x, threshold, dynamic, sample, k, vth_min, vth_max, limit)
    last = torch.channels_last
    accs, ys = [], []
    for i, (w, scale) in enumerate(zip(weights, scales)):
        st, pd, dl = conv_geometry(geometry, i)
        acc = spike_conv(counts, w, st, pd, dl, 1)
        keep = store_acc or scale is None
        accs.append(torch.empty_like(acc, memory_format=last) if keep
                    else x.new_empty(0, dtype=torch.int32))
        ys.append(torch.empty_like(acc, dtype=torch.float32, memory_format=last)
                  if scale is not None else x.new_empty(0))
    if not store_acc:
        counts = x.new_empty(0, dtype=torch.int32)
    elif not dynamic and x.is_contiguous(memory_format=last):
        counts = torch.empty_like(counts, memory_format=last)
    return counts, vth, accs, ys
