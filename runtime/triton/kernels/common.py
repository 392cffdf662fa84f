"""Device helpers shared by the kernels: numpy's float32 row sum, round half to even, the
quantiser, and the signed base-128 digits that feed int8 tensor cores."""
import triton
import triton.language as tl

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
def buffer_abs_sum(row_ptr, starts_ptr, lengths_ptr, b, S: tl.constexpr, D: tl.constexpr):
    """numpy's pairwise float32 sum of |x| over buffer b of a row (see ``pairwise.py``): leaves
    in parallel over S = 2**D slots, 8 lanes each, then pairwise over slots."""
    slot = tl.arange(0, S)
    lane = tl.arange(0, 8)
    start = tl.load(starts_ptr + b * S + slot)
    length = tl.load(lengths_ptr + b * S + slot)
    n_blocks = length // 8
    lanes = tl.zeros([S, 8], tl.float32)
    for i in tl.static_range(16):
        m = (i < n_blocks)[:, None]
        v = tl.load(row_ptr + start[:, None] + i * 8 + lane[None, :], mask=m, other=0.0)
        lanes += tl.abs(v)
    for _ in tl.static_range(3):
        lanes = pairwise_pairs(lanes)
    leaf = tl.reshape(lanes, [S])
    tail = start + n_blocks * 8
    for t in tl.static_range(7):
        v = tl.load(row_ptr + tail + t, mask=t < length - n_blocks * 8, other=0.0)
        leaf = leaf + tl.abs(v)
    for _ in tl.static_range(D):
        leaf = pairwise_pairs(leaf)
    return tl.sum(leaf, axis=0)  # one element left: the sum is exact


@triton.jit
def row_abs_sum(row_ptr, starts_ptr, lengths_ptr, n_buffers, S: tl.constexpr, D: tl.constexpr):
    """sum(|row|) in float32 in exactly numpy's order: buffer sums added in order from 0."""
    total = tl.zeros([], tl.float32)
    for b in range(n_buffers):
        total = total + buffer_abs_sum(row_ptr, starts_ptr, lengths_ptr, b, S, D)
    return total


@triton.jit
def vth_of_sum(total, row_len, k, vth_min, vth_max):
    """clip(total / row_len / k, vth_min, vth_max) with correctly rounded float32 divisions."""
    mean = tl.math.div_rn(total, row_len.to(tl.float32))
    vth = tl.math.div_rn(mean, k)
    return tl.minimum(tl.maximum(vth, vth_min), vth_max)


@triton.jit
def dynamic_vth(row_ptr, row_len, starts_ptr, lengths_ptr, n_buffers, k, vth_min, vth_max,
                S: tl.constexpr, D: tl.constexpr):
    """clip(mean(|row|) / k, vth_min, vth_max) with correctly rounded float32 divisions."""
    total = row_abs_sum(row_ptr, starts_ptr, lengths_ptr, n_buffers, S, D)
    return vth_of_sum(total, row_len, k, vth_min, vth_max)


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


@triton.jit
def low_digit(c):
    """The low signed base-128 digit of c: c itself when |c| <= 127, else ((c + 64) & 127) - 64;
    (c - low_digit(c)) >> 7 is exact and carries the rest."""
    return tl.where(tl.abs(c) <= 127, c, ((c + 64) & 127) - 64)


@triton.jit
def int_to_float_small(v):
    """int32 -> float32 for |v| < 2**22 with one integer add and one float subtract (the I2F
    conversion runs at a quarter of the float rate)."""
    return (v + 0x4B400000).to(tl.float32, bitcast=True) - 12582912.0
