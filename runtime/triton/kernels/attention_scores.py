"""The integer attention scores (``spike_scores``): int32 query counts times int8 keys -> int32
on int8 tensor cores.

GQA is a batched GEMM: the Hq/Hkv query heads that read one KV head are contiguous in
[B, Hq, Tq, D], so their rows (heads x tokens, M of them) form one matrix A_g against that
head's keys K_g [Tk, D], and the scores of the group are the contiguous [M, Tk] block
A_g K_g^T. Counts take one int8 digit (the tile's peak |count| <= 127, the common case) or, when
a tile holds a larger count, signed base-128 digits (``common.split_digit``) whose products are
combined exactly in int32: the result is exact whenever the true score fits int32 (the host
checks that bound and has the reference refuse what would not)."""
import triton
import triton.language as tl

from .common import split_digit


@triton.jit
def scores_kernel(q_ptr, k_ptr, acc_ptr, M, N, D,
                  BM: tl.constexpr, BN: tl.constexpr, BD: tl.constexpr):
    g = tl.program_id(0).to(tl.int64)
    rm = tl.program_id(1) * BM + tl.arange(0, BM)
    rn = tl.program_id(2) * BN + tl.arange(0, BN)
    q_base = q_ptr + g * M * D
    k_base = k_ptr + g * N * D
    acc = tl.zeros([BM, BN], tl.int32)
    for d0 in range(0, D, BD):
        rd = d0 + tl.arange(0, BD)
        c = tl.load(q_base + rm[:, None] * D + rd[None, :],
                    mask=(rm < M)[:, None] & (rd < D)[None, :], other=0)
        keys = tl.load(k_base + rn[:, None] * D + rd[None, :],
                       mask=(rn < N)[:, None] & (rd < D)[None, :], other=0)
        b = tl.trans(keys)
        low, rest = split_digit(c)
        acc = tl.dot(low.to(tl.int8), b, acc=acc, out_dtype=tl.int32)
        if tl.max(tl.abs(c)) > 127:
            mid, top = split_digit(rest)
            high = tl.dot(top.to(tl.int8), b, out_dtype=tl.int32) << 7
            high = tl.dot(mid.to(tl.int8), b, acc=high, out_dtype=tl.int32)
            acc += high << 7
    tl.store(acc_ptr + g * M * N + rm[:, None] * N + rn[None, :], acc,
             mask=(rm < M)[:, None] & (rn < N)[None, :])
