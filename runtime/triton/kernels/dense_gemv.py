"""The dense-count GEMV of decode (up to 16 rows): the encoder's quantisation fused into an int8
x int8 tensor-core GEMV that streams the K-major weight once, for counts too dense to skip.

Program (pn, ps) owns BN outputs and the K steps [ps * steps_per_split, ...) of BK channels (a
step is one weight group when grouped). The dynamic threshold comes from the encoder's block
sums (``encode.block_sums_kernel``; the program finishes the pairwise tree itself, so every
program has the same bits); each step loads its slice of x, quantises it to counts in registers
(``pn == 0`` programs store them), and multiplies base-128 digit 0 with the weight tile on int8
tensor cores. The higher digits take a second sweep only when some count exceeds 127, which the
program knows beforehand from the rows' largest |x| (the encoder's block maxima).
Slices of a column tile combine through ``common.slice_total`` (in slice order)."""
import triton
import triton.language as tl

from .common import finish_tile, quantize, split_digit, tree_sum, vth_of_sum


@triton.jit
def _dense_pass(x_ptr, w_ptr, scale_ptr, counts_ptr, acc_ptr, carry, vth_tile, rm, rn, M, N, K,
                G, step_lo, step_hi, pn, limit, HIGH: tl.constexpr, ONE_ROW: tl.constexpr,
                BK: tl.constexpr,
                GROUPED: tl.constexpr, DECODE: tl.constexpr, STORE_ACC: tl.constexpr,
                STORE_COUNTS: tl.constexpr, NUM_STAGES: tl.constexpr):
    """One sweep over the program's K steps: quantise x, multiply digit 0 (HIGH=False) or the
    higher digits, 128 * (d1 + 128 * d2) (HIGH=True), with the weight tile; fold each step into
    ``carry`` (int32 sums, or y when grouped, the group's acc stored or added)."""
    rk = tl.arange(0, BK)
    rmask = rm < M
    nmask = rn < N
    for ks in tl.range(step_lo, step_hi, num_stages=NUM_STAGES):
        kk = ks * BK + rk
        kmask = kk < K
        xmask = rmask[:, None] & kmask[None, :]
        if ONE_ROW:  # quantise the one real row only, then place it in row 0 of the tile
            x1 = tl.load(x_ptr + kk, mask=kmask, other=0.0)
            c = tl.where(rm[:, None] == 0, quantize(x1, vth_tile, limit)[None, :], 0)
        else:
            x = tl.load(x_ptr + rm[:, None] * K + kk[None, :], mask=xmask, other=0.0)
            c = quantize(x, vth_tile, limit)
        w = tl.trans(tl.load(w_ptr + rn[:, None].to(tl.int64) * K + kk[None, :],
                             mask=nmask[:, None] & kmask[None, :], other=0))
        d0, rest = split_digit(c)
        if HIGH:
            d1, top = split_digit(rest)
            d = tl.dot(top.to(tl.int8), w, out_dtype=tl.int32) << 7
            d = tl.dot(d1.to(tl.int8), w, acc=d, out_dtype=tl.int32) << 7
        else:
            if STORE_COUNTS:
                if pn == 0:
                    tl.store(counts_ptr + rm[:, None] * K + kk[None, :], c, mask=xmask)
            d = tl.dot(d0.to(tl.int8), w, out_dtype=tl.int32)
        if GROUPED:
            if STORE_ACC:
                ptrs = acc_ptr + (rm[:, None] * G + ks) * N + rn[None, :]
                amask = rmask[:, None] & nmask[None, :]
                if HIGH:
                    tl.store(ptrs, d + tl.load(ptrs, mask=amask, other=0), mask=amask)
                else:
                    tl.store(ptrs, d, mask=amask)
            if DECODE:
                carry += d.to(tl.float32) * tl.load(scale_ptr + ks * N + rn, mask=nmask,
                                                    other=0.0)[None, :]
        else:
            carry += d
    return carry


@triton.jit
def dense_gemv_kernel(x_ptr, partial_ptr, xmax_ptr, thr_ptr, w_ptr, scale_ptr, bias_ptr,
                      vth_ptr, counts_ptr, acc_ptr, y_ptr, part_ptr, lock_ptr,
                      M, N, K, G, n_sums, steps_per_split, k, vth_min, vth_max, limit,
                      BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
                      GROUPED: tl.constexpr, DYNAMIC: tl.constexpr, NB: tl.constexpr,
                      LOG_NB: tl.constexpr, N_DIGITS: tl.constexpr, DECODE: tl.constexpr,
                      HAS_BIAS: tl.constexpr, STORE_ACC: tl.constexpr,
                      STORE_COUNTS: tl.constexpr, SPLIT: tl.constexpr,
                      NUM_STAGES: tl.constexpr, ONE_ROW: tl.constexpr):
    pn = tl.program_id(0)
    ps = tl.program_id(1)
    rm = tl.arange(0, BM)
    rn = pn * BN + tl.arange(0, BN)
    rmask = rm < M
    slot = tl.arange(0, NB)
    smask = rmask[:, None] & (slot < n_sums)[None, :]
    if DYNAMIC:
        sums = tl.load(partial_ptr + rm[:, None] * n_sums + slot[None, :], mask=smask, other=0.0)
        vth = vth_of_sum(tree_sum(sums, LOG_NB), K, k, vth_min, vth_max)
        if (pn == 0) & (ps == 0):
            tl.store(vth_ptr + rm, vth, mask=rmask)
    else:
        vth = tl.zeros([BM], tl.float32) + tl.load(thr_ptr)
    if ONE_ROW:
        vth_tile = tl.broadcast_to(tl.max(tl.where(rm == 0, vth, 0.0), axis=0), (BK,))
    else:
        vth_tile = tl.broadcast_to(vth[:, None], (BM, BK))
    n_steps = tl.cdiv(K, BK)
    step_lo = ps * steps_per_split
    step_hi = tl.minimum(step_lo + steps_per_split, n_steps)
    if GROUPED:
        carry = tl.zeros([BM, BN], tl.float32)
    else:
        carry = tl.zeros([BM, BN], tl.int32)
    carry = _dense_pass(x_ptr, w_ptr, scale_ptr, counts_ptr, acc_ptr, carry, vth_tile, rm, rn,
                        M, N, K, G, step_lo, step_hi, pn, limit, False, ONE_ROW, BK, GROUPED,
                        DECODE,
                        STORE_ACC, STORE_COUNTS, NUM_STAGES)
    if N_DIGITS > 1:
        # the largest |count| of the rows is the quantised largest |x| (division is monotonic)
        xmax = tl.max(tl.load(xmax_ptr + rm[:, None] * n_sums + slot[None, :], mask=smask,
                              other=0.0), axis=1)
        peak = tl.max(quantize(xmax, vth, limit), axis=0)
        if peak > 127:
            carry = _dense_pass(x_ptr, w_ptr, scale_ptr, counts_ptr, acc_ptr, carry, vth_tile,
                                rm, rn, M, N, K, G, step_lo, step_hi, pn, limit, True, ONE_ROW,
                                BK,
                                GROUPED, DECODE, STORE_ACC, STORE_COUNTS, NUM_STAGES)
    finish_tile(carry, rm, rn, M, N, scale_ptr, vth, bias_ptr, acc_ptr, y_ptr, part_ptr,
                lock_ptr, pn, ps, GROUPED, DECODE, HAS_BIAS, STORE_ACC, SPLIT)
