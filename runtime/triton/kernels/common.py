"""Device helpers shared by the kernels: the threshold's pairwise float32 row sum, round half to
even, the quantiser, and the signed base-128 digits that feed int8 tensor cores."""
from types import FunctionType

import triton
import triton.language as tl

from sbcompile.runtime.triton import digits

TWO23 = tl.constexpr(8388608.0)


@triton.jit
def pairwise_pairs(v):
    """Sum adjacent pairs along the last axis (size must be even)."""
    shape: tl.constexpr = v.shape
    if len(shape) == 1:
        v = tl.reshape(v, [shape[0] // 2, 2])
    else:
        v = tl.reshape(v, [shape[0], shape[1] // 2, 2])
    a, b = tl.split(v)
    return a + b


@triton.jit
def tree_sum(v, LOG: tl.constexpr):
    """Sum along the last axis of 2**LOG values in the op's order (docs/OPS.md, spike_encode):
    adjacent pairs added level by level."""
    for _ in tl.static_range(LOG):
        v = pairwise_pairs(v)
    return tl.sum(v, axis=len(v.shape) - 1)  # one element left: the sum is exact


@triton.jit
def row_abs_sum(row_ptr, row_len, BLOCK: tl.constexpr, LOG_BLOCK: tl.constexpr,
                NB: tl.constexpr, LOG_NB: tl.constexpr):
    """sum(|row|) in the op's pairwise order: blocks of BLOCK = 2**LOG_BLOCK values (the row
    zero-padded) each by ``tree_sum``, then the NB = 2**LOG_NB block sums (zero-padded) by the
    same tree. Any power-of-two BLOCK gives the same bits: the padded tree over BLOCK * NB values
    holds the tree over the next power of two of row_len as its leftmost subtree, zeros else."""
    slot = tl.arange(0, NB)
    sums = tl.zeros([NB], tl.float32)
    for j in range(0, tl.cdiv(row_len, BLOCK)):
        offs = j * BLOCK + tl.arange(0, BLOCK)
        v = tl.abs(tl.load(row_ptr + offs, mask=offs < row_len, other=0.0))
        sums = tl.where(slot == j, tree_sum(v, LOG_BLOCK), sums)
    return tree_sum(sums, LOG_NB)


@triton.jit
def vth_of_sum(total, row_len, k, vth_min, vth_max):
    """clip(total / row_len / k, vth_min, vth_max) with correctly rounded float32 divisions."""
    mean = tl.math.div_rn(total, row_len.to(tl.float32))
    vth = tl.math.div_rn(mean, k)
    return tl.minimum(tl.maximum(vth, vth_min), vth_max)


@triton.jit
def round_half_even(q):
    """rint for float32 without libdevice: below 2**23, adding and subtracting 2**23 rounds to an
    integer under IEEE round-to-nearest-even; at or above it every float32 is an integer."""
    a = tl.abs(q)
    r = tl.where(a < TWO23, (a + TWO23) - TWO23, a)
    return tl.where(q < 0, -r, r)


@triton.jit
def quantize(x, vth, limit):
    """counts = clip(round_half_even(x / vth), -limit, limit) as int32 (limit <= 2**20)."""
    r = round_half_even(tl.math.div_rn(x, vth))
    return tl.minimum(tl.maximum(r, -limit), limit).to(tl.int32)


# (low signed base-128 digit, carry): the one split of digits.py, jitted with this module's
# globals (Triton's interpreter looks for triton.language there; digits.py imports no Triton,
# so that PyTorch-only code importing it leaves Triton's mode unchosen)
split_digit = triton.jit(FunctionType(digits.split_digit.__code__, globals(), "split_digit"))


@triton.jit
def int_to_float_small(v):
    """int32 -> float32 for |v| < 2**22 with one integer add and one float subtract (the I2F
    conversion runs at a quarter of the float rate)."""
    return (v + 0x4B400000).to(tl.float32, bitcast=True) - 12582912.0


@triton.jit
def slice_total(part, part_ptr, offs, mask, plane, lock_ptr, tile, ps, n_slices,
                SB: tl.constexpr):
    """Combine the partial results of the n_slices programs of one output tile without timing
    dependence: each stores its partial [R, BN] at ``part_ptr + ps * plane + offs`` and takes an
    atomic ticket; the last to arrive sums all partials in slice order (SB at a time) and resets
    the ticket. Returns (total, whether this program is the last)."""
    tl.store(part_ptr + ps * plane + offs, part, mask=mask)
    tl.debug_barrier()
    ticket = tl.atomic_add(lock_ptr + tile, 1, sem="acq_rel")
    last = ticket == n_slices - 1
    total = tl.zeros(part.shape, part.dtype)
    if last:
        sl = tl.arange(0, SB)
        for s0 in range(0, n_slices, SB):
            tile_ptrs = part_ptr + (s0 + sl[:, None, None]) * plane + offs[None, :, :]
            vals = tl.load(tile_ptrs, cache_modifier=".cg", other=0,
                           mask=(s0 + sl < n_slices)[:, None, None] & mask[None, :, :])
            total += tl.sum(vals, axis=0)
        tl.atomic_xchg(lock_ptr + tile, 0)
    return total, last


@triton.jit
def linear_epilogue(carry, rm, rn, M, N, scale_ptr, vth, bias_ptr, acc_ptr, y_ptr,
                    GROUPED: tl.constexpr, DECODE: tl.constexpr, HAS_BIAS: tl.constexpr,
                    STORE_ACC: tl.constexpr):
    """The finished tile: per-channel acc (one group) and y = vth * (acc * scale | y) + bias;
    ``vth`` [BM] holds the rows' thresholds."""
    mask = (rm < M)[:, None] & (rn < N)[None, :]
    y = carry
    if not GROUPED:
        if STORE_ACC:
            tl.store(acc_ptr + rm[:, None].to(tl.int64) * N + rn[None, :], carry, mask=mask)
        if DECODE:
            y = carry.to(tl.float32) * tl.load(scale_ptr + rn, mask=rn < N, other=0.0)[None, :]
    if DECODE:
        y = y * vth[:, None]
        if HAS_BIAS:
            y = y + tl.load(bias_ptr + rn, mask=rn < N, other=0.0)[None, :]
        tl.store(y_ptr + rm[:, None].to(tl.int64) * N + rn[None, :], y, mask=mask)


@triton.jit
def finish_tile(carry, rm, rn, M, N, scale_ptr, vth, bias_ptr, acc_ptr, y_ptr, part_ptr,
                lock_ptr, tile, ps, GROUPED: tl.constexpr, DECODE: tl.constexpr,
                HAS_BIAS: tl.constexpr, STORE_ACC: tl.constexpr, SPLIT: tl.constexpr):
    """The epilogue of a (possibly K-split) GEMM tile: with SPLIT > 1 the last slice of the
    tile to finish combines the slices (``slice_total``) and writes it."""
    if SPLIT > 1:
        mask = (rm < M)[:, None] & (rn < N)[None, :]
        total, last = slice_total(carry, part_ptr, rm[:, None] * N + rn[None, :], mask, M * N,
                                  lock_ptr, tile, ps, tl.num_programs(1), 4)
        if last:
            linear_epilogue(total, rm, rn, M, N, scale_ptr, vth, bias_ptr, acc_ptr, y_ptr,
                            GROUPED, DECODE, HAS_BIAS, STORE_ACC)
    else:
        linear_epilogue(carry, rm, rn, M, N, scale_ptr, vth, bias_ptr, acc_ptr, y_ptr,
                        GROUPED, DECODE, HAS_BIAS, STORE_ACC)
