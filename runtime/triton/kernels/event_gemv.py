"""The event-driven GEMV: reads only the weight rows (W^T, input-major int8) of the channels in
the event list and multiplies them on int8 tensor cores.

Program (pn, ps) owns BN outputs and GPS consecutive blocks of BLOCK_CH channels (a block is a
weight group, or 128 channels when the layer has one group); the event list marks where each
unit of BLOCK_CH / UPB channels starts (``bptr``, n_units + 1 entries). It walks its blocks'
events in chunks of E and builds an int8 A tile whose rows are (token m, block j, digit p): row
(m, j, p) holds digit p of token m's count for events of block j and 0 elsewhere, so one
``tl.dot`` sorts the chunk's products into per-block, per-digit int32 sums. Digits (base 128, see
``common.split_digit``) make any count up to 2**20 exact on int8 units. Per-block sums become the
group accumulators; partial outputs of the slices of one column tile are combined by the last
slice to finish (an atomic ticket), in slice order, so the result does not depend on timing."""
import triton
import triton.language as tl

from .common import split_digit


@triton.jit
def _a_tile(c, block, GPS: tl.constexpr, M_PAD: tl.constexpr, E: tl.constexpr):
    """The int8 A tile [M_PAD * GPS * 4, E] of one chunk: row (m, j, p) holds base-128 digit p
    of token m's counts ``c`` [M_PAD, E] where the event is in block j (``block`` [E])."""
    d0, rest = split_digit(c)
    d1, d2 = split_digit(rest)
    q = tl.arange(0, GPS * 4)
    p = (q % 4)[None, :, None]
    digit = tl.where(p == 0, d0[:, None, :], tl.where(p == 1, d1[:, None, :],
                                                       tl.where(p == 2, d2[:, None, :], 0)))
    a = tl.where((q // 4)[None, :, None] == block[None, None, :], digit, 0)
    return tl.reshape(a, [M_PAD * GPS * 4, E]).to(tl.int8)


@triton.jit
def _finish(total, rows_m, cols, M, N, scale_ptr, vth_ptr, bias_ptr, acc_ptr, y_ptr,
            GROUPED: tl.constexpr, DECODE: tl.constexpr, HAS_BIAS: tl.constexpr,
            STORE_ACC: tl.constexpr):
    """Write the finished column tile: the single-group accumulator (int32 total) and/or
    y = vth * total (* scale for a single group) + bias."""
    rmask = rows_m < M
    cmask = cols < N
    mask = rmask[:, None] & cmask[None, :]
    offs = rows_m[:, None] * N + cols[None, :]
    if not GROUPED:
        if STORE_ACC:
            tl.store(acc_ptr + offs, total, mask=mask)
        if DECODE:
            total = total.to(tl.float32) * tl.load(scale_ptr + cols, mask=cmask, other=0.0)[None, :]
    if DECODE:
        y = total * tl.load(vth_ptr + rows_m, mask=rmask, other=0.0)[:, None]
        if HAS_BIAS:
            y = y + tl.load(bias_ptr + cols, mask=cmask, other=0.0)[None, :]
        tl.store(y_ptr + offs, y, mask=mask)


@triton.jit
def event_gemv_kernel(idx_ptr, ev_ptr, bptr_ptr, wt_ptr, scale_ptr, vth_ptr, bias_ptr,
                      acc_ptr, y_ptr, part_ptr, lock_ptr,
                      M, N, n_blocks, n_units, n_slices,
                      BLOCK_CH: tl.constexpr, UPB: tl.constexpr, GPS: tl.constexpr,
                      M_PAD: tl.constexpr,
                      BN: tl.constexpr, E: tl.constexpr, GROUPED: tl.constexpr,
                      DECODE: tl.constexpr, HAS_BIAS: tl.constexpr, STORE_ACC: tl.constexpr,
                      SPLIT: tl.constexpr, NUM_STAGES: tl.constexpr, PREFETCH: tl.constexpr):
    pn = tl.program_id(0)
    ps = tl.program_id(1)
    cols = pn * BN + tl.arange(0, BN)
    cmask = cols < N
    ROWS: tl.constexpr = M_PAD * GPS * 4
    rows_m = tl.arange(0, M_PAD)
    b0 = ps * GPS
    e_lo = tl.load(bptr_ptr + b0 * UPB)
    e_hi = tl.load(bptr_ptr + tl.minimum((b0 + GPS) * UPB, n_units))
    sums = tl.zeros([ROWS, BN], tl.int32)
    if PREFETCH:
        # event ids and counts of the next chunk load while this chunk's weight rows do, so
        # the weight loads do not wait on a dependent id load each step
        ev = e_lo + tl.arange(0, E)
        ch = tl.load(idx_ptr + ev, mask=ev < e_hi, other=0)
        c = tl.load(ev_ptr + ev[None, :] * M_PAD + rows_m[:, None], mask=(ev < e_hi)[None, :],
                    other=0)
        for e0 in range(e_lo, e_hi, E):
            emask = e0 + tl.arange(0, E) < e_hi
            w = tl.load(wt_ptr + ch[:, None].to(tl.int64) * N + cols[None, :],
                        mask=emask[:, None] & cmask[None, :], other=0)
            nxt = e0 + E + tl.arange(0, E)
            ch_next = tl.load(idx_ptr + nxt, mask=nxt < e_hi, other=0)
            c_next = tl.load(ev_ptr + nxt[None, :] * M_PAD + rows_m[:, None],
                             mask=(nxt < e_hi)[None, :], other=0)
            sums += tl.dot(_a_tile(c, ch // BLOCK_CH - b0, GPS, M_PAD, E), w,
                           out_dtype=tl.int32)
            ch = ch_next
            c = c_next
    else:
        for e0 in tl.range(e_lo, e_hi, E, num_stages=NUM_STAGES):
            ev = e0 + tl.arange(0, E)
            emask = ev < e_hi
            ch = tl.load(idx_ptr + ev, mask=emask, other=0)
            c = tl.load(ev_ptr + ev[None, :] * M_PAD + rows_m[:, None], mask=emask[None, :],
                        other=0)
            w = tl.load(wt_ptr + ch[:, None].to(tl.int64) * N + cols[None, :],
                        mask=emask[:, None] & cmask[None, :], other=0)
            sums += tl.dot(_a_tile(c, ch // BLOCK_CH - b0, GPS, M_PAD, E), w,
                           out_dtype=tl.int32)
    # combine digits: acc = d0 + 128 d1 + 16384 d2 (int32, wrapping is exact when the sum fits)
    p4 = tl.arange(0, 4)
    weights = tl.where(p4 == 0, 1, tl.where(p4 == 1, 128, tl.where(p4 == 2, 16384, 0)))
    acc = tl.sum(tl.reshape(sums, [M_PAD * GPS, 4, BN]) * weights[None, :, None], axis=1)
    acc = tl.reshape(acc, [M_PAD, GPS, BN])
    blocks = b0 + tl.arange(0, GPS)
    if GROUPED:
        if STORE_ACC:
            bmask = (rows_m < M)[:, None, None] & (blocks < n_blocks)[None, :, None] & \
                cmask[None, None, :]
            offs = (rows_m[:, None, None] * n_blocks + blocks[None, :, None]) * N + \
                cols[None, None, :]
            tl.store(acc_ptr + offs, acc, mask=bmask)
        if DECODE:
            scale = tl.load(scale_ptr + blocks[:, None] * N + cols[None, :],
                            mask=(blocks < n_blocks)[:, None] & cmask[None, :], other=0.0)
            part = tl.sum(acc.to(tl.float32) * scale[None, :, :], axis=1)
        else:
            part = tl.zeros([M_PAD, BN], tl.float32)
    else:
        part = tl.sum(acc, axis=1)
    if SPLIT:
        # slice partials [n_slices, M_PAD, N]; the last slice to arrive sums them in order
        tl.store(part_ptr + (ps * M_PAD + rows_m[:, None]) * N + cols[None, :], part,
                 mask=cmask[None, :])
        tl.debug_barrier()
        ticket = tl.atomic_add(lock_ptr + pn, 1, sem="acq_rel")
        if ticket == n_slices - 1:
            SB: tl.constexpr = 32 // M_PAD
            sl = tl.arange(0, SB)
            total = tl.zeros([M_PAD, BN], part.dtype)
            for s0 in range(0, n_slices, SB):
                poffs = ((s0 + sl[:, None, None]) * M_PAD + rows_m[None, :, None]) * N + \
                    cols[None, None, :]
                tile = tl.load(part_ptr + poffs, cache_modifier=".cg",
                               mask=(s0 + sl < n_slices)[:, None, None] & cmask[None, None, :],
                               other=0)
                total += tl.sum(tile, axis=0)
            _finish(total, rows_m, cols, M, N, scale_ptr, vth_ptr, bias_ptr, acc_ptr, y_ptr,
                    GROUPED, DECODE, HAS_BIAS, STORE_ACC)
            tl.atomic_xchg(lock_ptr + pn, 0)
    else:
        _finish(part, rows_m, cols, M, N, scale_ptr, vth_ptr, bias_ptr, acc_ptr, y_ptr,
                GROUPED, DECODE, HAS_BIAS, STORE_ACC)
