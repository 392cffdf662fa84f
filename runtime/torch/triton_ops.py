"""The Triton kernels behind the spiking custom operators on a GPU (and on Triton's CPU
interpreter, for tests).

A spiked layer costs one encoder launch and one matrix launch with the decode fused in:
``spiked_linears`` encodes its input once for every linear reading the counts and picks, from the
number of count rows and the density the compile planned, the event GEMV (few sparse rows), the
dense-count GEMV (few dense rows of small layers) or the int8 tensor-core GEMM (batches);
``spiked_convs`` encodes to int8 digit planes and runs each convolution as the same int8 GEMM
over the planes' im2col in channels-last order (exact: int8 x int8 -> int32), its output a
channels-last view. Nothing here reads device memory back, so a whole model can be captured in
one CUDA graph. The integer semantics are those of ``spike_ops`` (docs/OPS.md) bit for bit.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from sbcompile.runtime.torch import spike_ops
from sbcompile.runtime.triton import launch
from sbcompile.runtime.triton.loader import kernels

MAX_UNION_DENSITY = 0.5  # above this expected union density of M rows the dense paths win
# (H200, benchmarks/triton_linear.py: event GEMV vs dense-count GEMV at M=1 by density)


def _kern(t: Tensor):
    return kernels(interpret=t.device.type == "cpu")


def event_rows(density: float) -> int:
    """The most count rows whose expected union density 1 - (1 - d)^M stays under the
    crossover to the dense paths (0 when even one row is denser)."""
    rows = 0
    while rows < launch.EVENT_MAX_ROWS and 1 - (1 - density) ** (rows + 1) <= MAX_UNION_DENSITY:
        rows += 1
    return rows


def _kept(x: Tensor, sample: bool) -> tuple:
    return (x.shape[0],) + (1,) * (x.dim() - 1) if sample else tuple(x.shape[:-1]) + (1,)


def _encode(x: Tensor, threshold: Optional[Tensor], dynamic: bool, sample: bool, k: float,
            vth_min: float, vth_max: float, limit: int, channels: int, path: str,
            unit: int = launch.EVENT_BLOCK) -> launch.Encoded:
    x = x.to(torch.float32).contiguous()
    row_len = (x.numel() // x.shape[0] if sample else x.shape[-1]) if dynamic else channels
    return launch.encode(_kern(x), x.view(-1, row_len), channels, dynamic=dynamic, k=k,
                         vth_min=vth_min, vth_max=vth_max, limit=limit,
                         threshold=None if dynamic else threshold.reshape(1).float(),
                         path=path, unit=unit)


def _vth_out(enc: launch.Encoded, x: Tensor, threshold: Optional[Tensor], dynamic: bool,
             sample: bool) -> Tensor:
    if dynamic:
        return enc.vth.view(_kept(x, sample))
    return threshold.to(torch.float32).clone()


def linear_path(rows: int, row_len: int, channels: int, density: float, weights: list[Tensor],
                groups: list[Optional[int]]) -> str:
    """event | dense | gemm | plain for ``rows`` count rows (the executor's dispatch)."""
    if rows <= event_rows(density):
        return "event"
    dense = all(launch.dense_step(w.shape[1], g) is not None and
                w.numel() <= launch.FUSED_MAX_WEIGHTS for w, g in zip(weights, groups))
    if rows <= launch.DENSE_MAX_ROWS and row_len == channels and dense:
        return "dense"
    if all(launch.gemm_step(w.shape[1], g) is not None for w, g in zip(weights, groups)):
        return "gemm"
    return "event" if rows <= launch.EVENT_MAX_ROWS else "plain"


def spiked_linears(x: Tensor, threshold: Optional[Tensor], weights: list[Tensor],
                   wts: list[Optional[Tensor]], scales: list[Optional[Tensor]],
                   biases: list[Optional[Tensor]], groups: list[int], dynamic: bool,
                   sample: bool, k: float, vth_min: float, vth_max: float, limit: int,
                   density: float, store_acc: bool
                   ) -> tuple[Tensor, Tensor, list[Tensor], list[Tensor]]:
    """``spike_ops.spiked_linears`` on the kernels; ``wts``: each weight's transpose [K, N]
    (input-major, for the event GEMV; None where the plan gives it no event rows)."""
    groups = [g or None for g in groups]
    channels = weights[0].shape[1]
    rows = x.numel() // channels
    row_len = (x.numel() // x.shape[0] if sample else x.shape[-1]) if dynamic else channels
    path = linear_path(rows, row_len, channels, density if all(t is not None for t in wts)
                       else 1.0, weights, groups)
    if path == "plain" or (not dynamic and threshold.numel() != 1):
        return spike_ops.linears_plain(x, threshold, weights, scales, biases, groups, dynamic,
                                       sample, k, vth_min, vth_max, limit, store_acc)
    unit = math.gcd(*[g if g and g < channels else launch.EVENT_BLOCK for g in groups],
                    launch.EVENT_BLOCK)
    enc = _encode(x, threshold, dynamic, sample, k, vth_min, vth_max, limit, channels, path,
                  unit)
    kern = _kern(x)
    lead = tuple(x.shape[:-1])
    accs, ys = [], []
    for w, wt, scale, bias, group in zip(weights, wts, scales, biases, groups):
        decode = scale is not None
        keep = store_acc or not decode
        grouped = group is not None and group < channels
        if path == "event":
            acc, y = launch.event_linear(kern, enc, wt, group if grouped else None, scale, bias,
                                         store_acc=keep, decode=decode)
        elif path == "dense":
            acc, y = launch.dense_linear(kern, enc, w, group if grouped else None, scale, bias,
                                         store_acc=keep, decode=decode)
        else:
            acc, y = launch.gemm_linear(kern, enc, w, group if grouped else None, scale, bias,
                                        store_acc=keep, decode=decode)
        accs.append(acc.view(lead + tuple(acc.shape[1:])) if acc is not None else x.new_empty(0))
        ys.append(y.view(lead + (y.shape[-1],)) if y is not None else x.new_empty(0))
    counts = enc.counts.view(x.shape)
    return counts, _vth_out(enc, x, threshold, dynamic, sample), accs, ys


# ---- convolutions -------------------------------------------------------------------------------
def im2col_planes(planes: Tensor, shape: tuple, nhwc: bool, kernel: tuple,
                  strides: list[int], pads: list[int], dilations: list[int],
                  k_pad: int) -> tuple[Tensor, tuple]:
    """int8 digit planes [D, N, C, H, W] (``nhwc``: [D, N, H, W, C]) as GEMM rows
    [D, N * H' * W', k_pad]: each row the window's (kh, kw, C) values, zero-padded to k_pad;
    and (H', W'). A 1x1 stride-1 convolution of channels-last planes reads them as they are."""
    d, (n, c, h, w) = planes.shape[0], shape
    kh, kw = kernel
    p = planes.view(d, n, h, w, c) if nhwc else planes.view(d, n, c, h, w).permute(0, 1, 3, 4, 2)
    if (kh, kw) == (1, 1) and list(strides) == [1, 1] and not any(pads) and k_pad == c:
        return p.reshape(d, n * h * w, c), (h, w)
    p = F.pad(p, (0, 0, pads[1], pads[3], pads[0], pads[2]))
    span_h, span_w = (kh - 1) * dilations[0] + 1, (kw - 1) * dilations[1] + 1
    win = p.unfold(2, span_h, strides[0]).unfold(3, span_w, strides[1])
    win = win[..., ::dilations[0], ::dilations[1]].permute(0, 1, 2, 3, 5, 6, 4)
    ho, wo = win.shape[2], win.shape[3]
    if k_pad == kh * kw * c:
        return win.reshape(d, n * ho * wo, k_pad), (ho, wo)
    cols = torch.zeros((d, n * ho * wo, k_pad), dtype=torch.int8, device=planes.device)
    cols[..., :kh * kw * c].view(d, n, ho, wo, kh, kw, c).copy_(win)
    return cols, (ho, wo)


def conv_weight(weight: Tensor) -> Tensor:
    """int8 [O, C, kh, kw] as the GEMM's K-major [O, k_pad] in (kh, kw, C) order, K padded with
    zeros to a multiple of 64 (what the int8 GEMM's steps take)."""
    o = weight.shape[0]
    flat = weight.permute(0, 2, 3, 1).reshape(o, -1)
    k_pad = -(-flat.shape[1] // 64) * 64
    return F.pad(flat, (0, k_pad - flat.shape[1])).contiguous()


def spiked_convs(x: Tensor, threshold: Optional[Tensor], weights: list[Tensor],
                 gemm_weights: list[Tensor], scales: list[Optional[Tensor]],
                 biases: list[Optional[Tensor]], bounds: list[int], geometry: list[int],
                 dynamic: bool, sample: bool, k: float, vth_min: float, vth_max: float,
                 limit: int, store_acc: bool
                 ) -> tuple[Tensor, Tensor, list[Tensor], list[Tensor]]:
    """``spike_ops.spiked_convs`` on the kernels: x [N, C, H, W] encoded once to counts and
    int8 digit planes, then each 2-d convolution (group 1) as an int8 GEMM over the planes'
    im2col (``gemm_weights``: ``conv_weight`` of each weight), its decode fused: outputs are
    channels-last views."""
    if not dynamic and threshold.numel() != 1:
        return spike_ops.convs_plain(x, threshold, weights, scales, biases, geometry, dynamic,
                                     sample, k, vth_min, vth_max, limit, store_acc)
    n = x.shape[0]
    row = x.numel() // n
    # a static threshold quantises each value alone: channels-last input is encoded as it lies
    nhwc = not dynamic and x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
    enc = _encode(x.permute(0, 2, 3, 1) if nhwc else x, threshold, dynamic, sample, k, vth_min,
                  vth_max, limit, row, "gemm")
    planes, peak, n_digits = enc.digits
    kern = _kern(x)
    accs, ys = [], []
    for i, (w, wk, scale, bias) in enumerate(zip(weights, gemm_weights, scales, biases)):
        st, pd, dl = spike_ops.conv_geometry(geometry, i)
        cols, (ho, wo) = im2col_planes(planes, tuple(x.shape), nhwc, tuple(w.shape[2:]), st,
                                       pd, dl, wk.shape[1])
        per = ho * wo
        vth_rows = enc.vth.repeat_interleave(per) if dynamic else \
            enc.vth.reshape(1).expand(n * per).contiguous()
        # gemm_linear reads the rows (M) from ``counts`` and the operands from ``digits``
        rows = launch.Encoded(cols[0], enc.vth, vth_rows, digits=(cols, peak, n_digits))
        decode = scale is not None
        acc, y = launch.gemm_linear(kern, rows, wk, None, None if scale is None else
                                    scale.reshape(1, -1).float(), bias, store_acc=store_acc or
                                    not decode, decode=decode)
        o = w.shape[0]
        accs.append(acc.view(n, ho, wo, o).permute(0, 3, 1, 2) if acc is not None
                    else x.new_empty(0))
        ys.append(y.view(n, ho, wo, o).permute(0, 3, 1, 2) if y is not None else x.new_empty(0))
    counts = enc.counts.view(x.shape[0], *x.shape[2:], x.shape[1]).permute(0, 3, 1, 2) if nhwc \
        else enc.counts.view(x.shape)
    if not store_acc:
        counts = x.new_empty(0, dtype=torch.int32)
    return counts, _vth_out(enc, x, threshold, dynamic, sample), accs, ys


def scores(q_counts: Tensor, k: Tensor) -> Tensor:
    """``spike_scores`` on the int8 tensor cores."""
    return launch.attention_scores(_kern(k), q_counts.contiguous(), k.contiguous())


spike_ops.spiked_linears.register_kernel("cuda")(spiked_linears)
spike_ops.spiked_convs.register_kernel("cuda")(spiked_convs)
spike_ops.spike_scores.register_kernel("cuda")(scores)
# the direct calls of interpreter runs, by the custom op's name
DIRECT = {"spiked_linears": spiked_linears, "spiked_convs": spiked_convs,
          "spike_scores": scores}
