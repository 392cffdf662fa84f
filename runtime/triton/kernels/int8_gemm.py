"""The int8 x int8 -> int32 tensor-core GEMM for batches, with the decode fused as epilogue.

A is the encoder's digit planes ([N_DIGITS, M, K] int8, base 128), W the K-major int8 weight
[N, K]. The main pass multiplies digit plane 0 only; when the encoder's peak |count| shows that
some count needs more digits (rare: > 127), a second pass adds 128 * (plane 1 + 128 * plane 2).
A loop step covers SUB dots of BK channels. GROUPED: a step is one weight group, whose int32 sum
is stored (the acc output) and/or scaled into the float output at once; otherwise one group
spans all of K (per-channel scales) and is decoded once after the loop. Offsets are int32: the
host keeps M * K, N * K and the digit planes under 2**31 elements.

SPLIT > 1 (the dense-count GEMV of decode: few rows, so few column tiles): program (tile, ps)
takes steps [ps * steps_per_split, ...) of K only, and the slices of a tile are combined by the
last one to finish (``common.slice_total``, in slice order): int32 sums per channel (exact),
float partial outputs per group."""
import triton
import triton.language as tl

from .common import finish_tile, int_to_float_small


@triton.jit
def _group_end(d, g, rm, rn, M, N, G, y, scale_ptr, acc_ptr,
               DECODE: tl.constexpr, STORE_ACC: tl.constexpr, ADD_ACC: tl.constexpr,
               SMALL: tl.constexpr):
    """Store (or add into) group g's int32 sums and fold them, scaled, into y."""
    if STORE_ACC:
        mask = (rm < M)[:, None] & (rn < N)[None, :]
        ptrs = acc_ptr + (rm[:, None].to(tl.int64) * G + g) * N + rn[None, :]
        if ADD_ACC:
            d_all = d + tl.load(ptrs, mask=mask, other=0)
        else:
            d_all = d
        tl.store(ptrs, d_all, mask=mask)
    if DECODE:
        if SMALL:
            f = int_to_float_small(d)
        else:
            f = d.to(tl.float32)
        y += f * tl.load(scale_ptr + g * N + rn, mask=rn < N, other=0.0)[None, :]
    return y


@triton.jit
def _step_product(a_ptrs, w_ptrs, k0, plane_stride, amask, wmask, HIGH: tl.constexpr,
                  N_DIGITS: tl.constexpr, BK: tl.constexpr, SUB: tl.constexpr):
    """Sums over the SUB * BK channels from k0: plane 0 times W (HIGH=False), or
    128 * (plane 1 + 128 * plane 2) times W (HIGH=True)."""
    d = tl.zeros([a_ptrs.shape[0], w_ptrs.shape[0]], tl.int32)
    for s in tl.static_range(SUB):
        b = tl.trans(tl.load(w_ptrs + k0 + s * BK, mask=wmask, other=0))
        if HIGH:
            if N_DIGITS > 2:
                a2 = tl.load(a_ptrs + 2 * plane_stride + k0 + s * BK, mask=amask, other=0)
                d = tl.dot(a2, b, acc=d, out_dtype=tl.int32)
        else:
            a = tl.load(a_ptrs + k0 + s * BK, mask=amask, other=0)
            d = tl.dot(a, b, acc=d, out_dtype=tl.int32)
    if HIGH:
        d = d << 7
        for s in tl.static_range(SUB):
            b = tl.trans(tl.load(w_ptrs + k0 + s * BK, mask=wmask, other=0))
            a = tl.load(a_ptrs + plane_stride + k0 + s * BK, mask=amask, other=0)
            d = tl.dot(a, b, acc=d, out_dtype=tl.int32)
        d = d << 7
    return d


@triton.jit
def _gemm_pass(a_ptr, w_ptr, plane_stride, rm, rn, M, N, K, G, carry, scale_ptr, acc_ptr,
               step_lo, step_hi, HIGH: tl.constexpr, N_DIGITS: tl.constexpr, BK: tl.constexpr, SUB: tl.constexpr,
               GROUPED: tl.constexpr, DECODE: tl.constexpr, STORE_ACC: tl.constexpr,
               NUM_STAGES: tl.constexpr):
    """One sweep over K in steps of SUB * BK channels (one weight group when GROUPED).
    ``carry`` is the int32 total (one group) or the float output y (groups)."""
    rk = tl.arange(0, BK)
    a_ptrs = a_ptr + rm[:, None] * K + rk[None, :]
    w_ptrs = w_ptr + rn[:, None] * K + rk[None, :]
    amask = (rm < M)[:, None]
    wmask = (rn < N)[:, None]
    for ks in tl.range(step_lo, step_hi, num_stages=NUM_STAGES):
        if GROUPED:
            d = _step_product(a_ptrs, w_ptrs, ks * BK * SUB, plane_stride, amask, wmask, HIGH,
                              N_DIGITS, BK, SUB)
            carry = _group_end(d, ks, rm, rn, M, N, G, carry, scale_ptr, acc_ptr, DECODE,
                               STORE_ACC, HIGH, not HIGH)
        elif HIGH:
            carry += _step_product(a_ptrs, w_ptrs, ks * BK * SUB, plane_stride, amask, wmask,
                                   HIGH, N_DIGITS, BK, SUB)
        else:
            for s in tl.static_range(SUB):
                b = tl.trans(tl.load(w_ptrs + (ks * SUB + s) * BK, mask=wmask, other=0))
                a = tl.load(a_ptrs + (ks * SUB + s) * BK, mask=amask, other=0)
                carry = tl.dot(a, b, acc=carry, out_dtype=tl.int32)
    return carry


@triton.jit
def int8_gemm_kernel(a_ptr, w_ptr, peak_ptr, scale_ptr, vth_ptr, bias_ptr, acc_ptr, y_ptr,
                     part_ptr, lock_ptr, M, N, K, G, plane_stride, steps_per_split,
                     BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, SUB: tl.constexpr,
                     GROUPED: tl.constexpr, N_DIGITS: tl.constexpr,
                     DECODE: tl.constexpr, HAS_BIAS: tl.constexpr, STORE_ACC: tl.constexpr,
                     GROUP_M: tl.constexpr, NUM_STAGES: tl.constexpr, SPLIT: tl.constexpr):
    pid = tl.program_id(0)
    ps = tl.program_id(1)
    grid_m = tl.cdiv(M, BM)
    grid_n = tl.cdiv(N, BN)
    width = GROUP_M * grid_n  # L2-friendly order: GROUP_M row tiles sweep the columns together
    first_m = (pid // width) * GROUP_M
    size_m = tl.minimum(grid_m - first_m, GROUP_M)
    pm = first_m + (pid % width) % size_m
    pn = (pid % width) // size_m
    rm = pm * BM + tl.arange(0, BM)
    rn = pn * BN + tl.arange(0, BN)
    if SPLIT > 1:
        step_lo = ps * steps_per_split
        step_hi = tl.minimum(step_lo + steps_per_split, K // (BK * SUB))
    else:
        step_lo = 0
        step_hi = K // (BK * SUB)
    if GROUPED:
        carry = tl.zeros([BM, BN], tl.float32)  # y, group by group
    else:
        carry = tl.zeros([BM, BN], tl.int32)  # the one group's sums
    carry = _gemm_pass(a_ptr, w_ptr, plane_stride, rm, rn, M, N, K, G, carry, scale_ptr,
                       acc_ptr, step_lo, step_hi, False, N_DIGITS, BK, SUB, GROUPED, DECODE,
                       STORE_ACC, NUM_STAGES)
    if N_DIGITS > 1:
        peak = tl.load(peak_ptr)
        if peak > 127:
            carry = _gemm_pass(a_ptr, w_ptr, plane_stride, rm, rn, M, N, K, G, carry,
                               scale_ptr, acc_ptr, step_lo, step_hi, True, N_DIGITS, BK, SUB,
                               GROUPED, DECODE, STORE_ACC, NUM_STAGES)
    vth = tl.load(vth_ptr + rm, mask=rm < M, other=0.0)
    finish_tile(carry, rm, rn, M, N, scale_ptr, vth, bias_ptr, acc_ptr, y_ptr, part_ptr,
                lock_ptr, pid, ps, GROUPED, DECODE, HAS_BIAS, STORE_ACC, SPLIT)
