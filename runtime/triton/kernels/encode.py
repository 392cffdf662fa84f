"""The spike encoder: per-row threshold, quantised int32 counts, and either base-128 digit
planes (for the int8 tensor-core GEMM) or a device-side compaction of the nonzero channels into
an event list (for the event GEMV). Nothing here synchronises with the host."""
import triton
import triton.language as tl

from .common import quantize, split_digit, row_abs_sum, tree_sum, vth_of_sum


@triton.jit
def compact_block(c, chan, valid, running, idx_ptr, ev_ptr, bptr_ptr,
                  BLOCK_CH: tl.constexpr, M_PAD: tl.constexpr):
    """Append the channels of one block whose counts are nonzero in any row to the event list.

    c: int32 [M_PAD, BLOCK] counts of channels ``chan``; events keep channel order. Writes the
    channel id to ``idx``, its M_PAD counts to ``ev`` and, for each channel that opens a block of
    BLOCK_CH channels, the block's first event position to ``bptr``. Returns the new length."""
    rows = tl.arange(0, M_PAD)
    nz = ((tl.max(tl.abs(c), axis=0) > 0) & valid).to(tl.int32)
    pos = running + tl.cumsum(nz, axis=0) - nz
    keep = nz > 0
    tl.store(idx_ptr + pos, chan, mask=keep)
    tl.store(ev_ptr + pos[None, :] * M_PAD + rows[:, None], c, mask=keep[None, :])
    tl.store(bptr_ptr + chan // BLOCK_CH, pos, mask=valid & (chan % BLOCK_CH == 0))
    return running + tl.sum(nz, axis=0)


@triton.jit
def quantize_block(x_ptr, counts_ptr, digits_ptr, offs, valid, vth, limit, total,
                   N_DIGITS: tl.constexpr):
    """Counts of one block of a row (and their int8 digit planes); returns them."""
    x = tl.load(x_ptr + offs, mask=valid, other=0.0)
    c = quantize(x, vth, limit)
    tl.store(counts_ptr + offs, c, mask=valid)
    rest = c
    for p in tl.static_range(N_DIGITS):
        digit = rest
        if p < N_DIGITS - 1:
            digit, rest = split_digit(rest)
        tl.store(digits_ptr + p * total + offs, digit.to(tl.int8), mask=valid)
    return c


@triton.jit
def block_sums_kernel(x_ptr, partial_ptr, xmax_ptr, n_sum_blocks, row_len,
                      SUM_BLOCK: tl.constexpr, LOG_SUM: tl.constexpr, MAX: tl.constexpr):
    """Program (row, b): the pairwise sum of |x| over block b (SUM_BLOCK values) of the row,
    and (MAX) the block's largest |x|."""
    row = tl.program_id(0)
    b = tl.program_id(1)
    offs = b * SUM_BLOCK + tl.arange(0, SUM_BLOCK)
    v = tl.abs(tl.load(x_ptr + row.to(tl.int64) * row_len + offs, mask=offs < row_len,
                       other=0.0))
    tl.store(partial_ptr + row * n_sum_blocks + b, tree_sum(v, LOG_SUM))
    if MAX:
        tl.store(xmax_ptr + row * n_sum_blocks + b, tl.max(v, axis=0))


@triton.jit
def quantize_kernel(x_ptr, partial_ptr, vth_ptr, counts_ptr, digits_ptr, peak_ptr,
                    n_sum_blocks, row_len, k, vth_min, vth_max, limit,
                    DYNAMIC: tl.constexpr, NB: tl.constexpr, LOG_NB: tl.constexpr,
                    BLOCK: tl.constexpr, N_DIGITS: tl.constexpr):
    """Program (row, block): the row's vth from its block sums (the rest of the pairwise tree;
    every program computes the same bits, block 0 stores it), then the counts and digit planes
    of one block of the row."""
    row = tl.program_id(0)
    blk = tl.program_id(1)
    if DYNAMIC:
        slot = tl.arange(0, NB)
        sums = tl.load(partial_ptr + row * n_sum_blocks + slot, mask=slot < n_sum_blocks,
                       other=0.0)
        vth = vth_of_sum(tree_sum(sums, LOG_NB), row_len, k, vth_min, vth_max)
        if blk == 0:
            tl.store(vth_ptr + row, vth)
    else:
        vth = tl.load(vth_ptr)
    offs = row.to(tl.int64) * row_len + blk * BLOCK + tl.arange(0, BLOCK)
    valid = blk * BLOCK + tl.arange(0, BLOCK) < row_len
    c = quantize_block(x_ptr, counts_ptr, digits_ptr, offs, valid, vth, limit,
                       row_len.to(tl.int64) * tl.num_programs(0), N_DIGITS)
    if N_DIGITS > 1:
        tl.atomic_max(peak_ptr, tl.max(tl.abs(c), axis=0))


@triton.jit
def encode_rows_kernel(x_ptr, vth_ptr, counts_ptr, digits_ptr, peak_ptr,
                       idx_ptr, ev_ptr, bptr_ptr, n_blocks, row_len, k, vth_min, vth_max, limit,
                       DYNAMIC: tl.constexpr, NB: tl.constexpr, LOG_NB: tl.constexpr,
                       BLOCK: tl.constexpr, LOG_BLOCK: tl.constexpr, N_DIGITS: tl.constexpr,
                       COMPACT: tl.constexpr, BLOCK_CH: tl.constexpr):
    """One program per row of ``row_len`` values: vth (dynamic: mean|x|/k with the op's pairwise
    sum, stored; static: read), counts, then N_DIGITS int8 digit planes (with the peak |count|
    folded into ``peak`` by atomic max) or, for a single row, the event list (COMPACT)."""
    row = tl.program_id(0)
    base = row.to(tl.int64) * row_len
    if DYNAMIC:
        total = row_abs_sum(x_ptr + base, row_len, BLOCK, LOG_BLOCK, NB, LOG_NB)
        vth = vth_of_sum(total, row_len, k, vth_min, vth_max)
        tl.store(vth_ptr + row, vth)
    else:
        vth = tl.load(vth_ptr)
    total = row_len.to(tl.int64) * tl.num_programs(0)
    peak = tl.zeros([BLOCK], tl.int32)
    running = tl.zeros([], tl.int32)
    for start in range(0, row_len, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        valid = offs < row_len
        c = quantize_block(x_ptr, counts_ptr, digits_ptr, base + offs, valid, vth, limit, total,
                           N_DIGITS)
        peak = tl.maximum(peak, tl.abs(c))
        if COMPACT:
            running = compact_block(c[None, :], offs, valid, running, idx_ptr, ev_ptr, bptr_ptr,
                                    BLOCK_CH, 1)
    if N_DIGITS > 1:
        tl.atomic_max(peak_ptr, tl.max(peak, axis=0))
    if COMPACT:
        tl.store(bptr_ptr + n_blocks, running)


@triton.jit
def compact_kernel(counts_ptr, M, K, idx_ptr, ev_ptr, bptr_ptr, n_blocks,
                   M_PAD: tl.constexpr, BLOCK: tl.constexpr, BLOCK_CH: tl.constexpr):
    """One program: the union of the nonzero channels of M count rows as one event list."""
    rows = tl.arange(0, M_PAD)
    running = tl.zeros([], tl.int32)
    for start in range(0, K, BLOCK):
        chan = start + tl.arange(0, BLOCK)
        valid = chan < K
        c = tl.load(counts_ptr + rows[:, None] * K + chan[None, :],
                    mask=(rows < M)[:, None] & valid[None, :], other=0)
        running = compact_block(c, chan, valid, running, idx_ptr, ev_ptr, bptr_ptr,
                                BLOCK_CH, M_PAD)
    tl.store(bptr_ptr + n_blocks, running)
