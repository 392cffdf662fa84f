"""Baselines of the Triton benchmarks on the same weights: a weight-only int8 GEMV written in
Triton (bf16 activations, int8 weights [N, K] K-major, per-channel scale, tensor-core dots on
weights upcast to bf16, optional split-K), cuBLAS bf16 and torch._int_mm."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import triton
import triton.language as tl


@triton.jit
def w8a16_gemv_kernel(x_ptr, w_ptr, s_ptr, y_ptr, M, N, K, k_per_split,
                      BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
                      SPLIT: tl.constexpr):
    pn = tl.program_id(0)
    pk = tl.program_id(1)
    rm = tl.arange(0, BM)
    rn = pn * BN + tl.arange(0, BN)
    rk = tl.arange(0, BK)
    acc = tl.zeros([BM, BN], tl.float32)
    k_lo = pk * k_per_split
    for k in tl.range(k_lo, tl.minimum(k_lo + k_per_split, K), BK, num_stages=4):
        kmask = (k + rk < K)[None, :]
        w = tl.load(w_ptr + rn[:, None] * K + k + rk[None, :], mask=(rn < N)[:, None] & kmask,
                    other=0)
        x = tl.load(x_ptr + rm[:, None] * K + k + rk[None, :], mask=(rm < M)[:, None] & kmask,
                    other=0.0)
        acc = tl.dot(x, tl.trans(w.to(tl.bfloat16)), acc=acc)
    y = acc * tl.load(s_ptr + rn, mask=rn < N, other=0.0)[None, :]
    mask = (rm < M)[:, None] & (rn < N)[None, :]
    if SPLIT > 1:
        tl.atomic_add(y_ptr + rm[:, None] * N + rn[None, :], y, mask=mask)
    else:
        tl.store(y_ptr + rm[:, None] * N + rn[None, :], y, mask=mask)


W8_CONFIGS = [(bn, bk, split) for bn in (32, 64) for bk in (128, 256) for split in (1, 4)]


def w8a16_linear(x_bf16: torch.Tensor, w_int8: torch.Tensor, scale: torch.Tensor,
                 cfg=(64, 256, 1)) -> torch.Tensor:
    """y = (x @ W^T) * scale for M <= 16 rows; x bf16 [M, K], W int8 [N, K]."""
    bn, bk, split = cfg
    m, k = x_bf16.shape
    n = w_int8.shape[0]
    y = (torch.zeros if split > 1 else torch.empty)((m, n), dtype=torch.float32,
                                                    device=x_bf16.device)
    k_per_split = math.ceil(k / split / bk) * bk
    w8a16_gemv_kernel[(triton.cdiv(n, bn), split)](
        x_bf16, w_int8, scale, y, m, n, k, k_per_split, BM=16, BN=bn, BK=bk, SPLIT=split,
        num_warps=4)
    return y


def bf16_linear(x_bf16: torch.Tensor, w_bf16: torch.Tensor) -> torch.Tensor:
    return F.linear(x_bf16, w_bf16)


def int_mm_padded(a_int8: torch.Tensor, w_int8: torch.Tensor) -> torch.Tensor:
    """torch._int_mm on rows padded to a multiple of 8 and at least 32 (it rejects M <= 16); the
    weight goes in as the K-major view W^T of W [N, K]."""
    return torch._int_mm(a_int8, w_int8.t())


def pad_rows(m: int) -> int:
    return max(32, math.ceil(m / 8) * 8)
