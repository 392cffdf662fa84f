"""Host side of the kernels: buffers, launch configurations and the two linear paths.

``encode`` turns float rows into counts (and the form the chosen path consumes); ``event_linear``
and ``gemm_linear`` multiply them with a packed weight and optionally decode. Every launch is
asynchronous and nothing reads device memory back, so a sequence of them can be captured in a
CUDA graph.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from types import ModuleType

import torch

from sbcompile.runtime.triton.digits import digits_for

EVENT_MAX_ROWS = 4  # the event GEMV packs rows x blocks x 4 digits into one int8 dot tile
EVENT_BLOCK = 128  # channels per block when a layer has one weight group
QUANT_BLOCK = 1024  # channels per program of the split encoder
SUM_BLOCK = 1024  # values per partial sum of the split encoder (any power of two: same bits)
SINGLE_MAX = 2048  # longest single row the one-program encoder takes by default (the split
# form was faster on the H200 at 3584 and 18944 values: 8.3 vs 9.3 us, 19.2 vs 35.7 us)
DENSE_MAX_ROWS = 16  # the dense-count GEMV's row tile


@dataclass
class Encoded:
    """Counts of ``rows`` tokens of ``channels`` inputs, plus what the chosen path needs."""
    counts: torch.Tensor  # int32 [rows, channels]
    vth: torch.Tensor  # float32: one threshold per encoded row (dynamic) or the static one
    vth_rows: torch.Tensor  # float32 [rows]: the threshold of each count row
    events: tuple | None = None  # (idx, ev, bptr, m_pad, unit)
    digits: tuple | None = None  # (planes [n, rows, channels] int8, peak int32 [1], n)
    dense: dict | None = None  # the dense-count GEMV quantises x itself: its inputs

    @property
    def rows(self) -> int:
        return self.counts.shape[0]

    @property
    def fast(self) -> bool:
        """Whether a kernel path reads this encoding (else its layers take the reference)."""
        return self.events is not None or self.digits is not None or self.dense is not None


def _log2_up(n: int) -> int:
    """The exponent of the smallest power of two >= n (n >= 1)."""
    return max(n - 1, 0).bit_length()


_device_cache: dict = {}


def _on(device: torch.device, key, make):
    """A per-device constant (lock arrays, dummies): built once, reused by every launch."""
    k = (str(device), key)
    if k not in _device_cache:
        _device_cache[k] = make()
    return _device_cache[k]


def _dummy(device, dtype=torch.int32):
    return _on(device, ("dummy", dtype), lambda: torch.zeros(1, dtype=dtype, device=device))


def encode(kern: ModuleType, x: torch.Tensor, channels: int, *, dynamic: bool, k: float,
           vth_min: float, vth_max: float, limit: int, threshold: torch.Tensor | None,
           path: str, unit: int = EVENT_BLOCK, split: bool | None = None,
           block: int | None = None) -> Encoded:
    """Spike-encode ``x`` (float32 [R, L], one threshold per row of L; ``threshold``: a float32
    tensor of one element when static) into counts viewed as [R * L / channels, channels].
    ``path``: 'event' also compacts the nonzero channels (union over rows; unit = channels per
    block pointer), 'gemm' also writes int8 digit planes; 'dense' (rows of exactly ``channels``
    values, at most DENSE_MAX_ROWS) only sums the row blocks: the dense-count GEMV quantises x
    itself and fills counts and vth (``dense_linear``).
    ``split``: block sums, then quantisation, in parallel programs (two launches, plus the
    compaction); otherwise one program per row does everything (one launch, ``block`` values
    per step). By default split unless there is a single row of at most SINGLE_MAX values."""
    dev = x.device
    n_rows, row_len = x.shape
    if path == "dense":
        return _dense_encoded(kern, x, dynamic=dynamic, k=k, vth_min=vth_min, vth_max=vth_max,
                              limit=limit, threshold=threshold)
    if split is None:
        split = n_rows > 1 or row_len > SINGLE_MAX
    counts = torch.empty((n_rows, row_len), dtype=torch.int32, device=dev)
    vth = torch.empty(n_rows, dtype=torch.float32, device=dev) if dynamic else threshold
    m = n_rows * row_len // channels
    dummy = _dummy(dev)
    fused_compact = path == "event" and m == 1
    n_units = math.ceil(channels / unit)
    idx = ev = bptr = planes = peak = dummy
    n_digits = 0
    m_pad = 1
    if path == "event":
        m_pad = 1 << (m - 1).bit_length()
        idx = torch.empty(channels, dtype=torch.int32, device=dev)
        ev = torch.empty((channels, m_pad), dtype=torch.int32, device=dev)
        bptr = torch.empty(n_units + 1, dtype=torch.int32, device=dev)
    elif path == "gemm":
        n_digits = digits_for(limit)
        planes = torch.empty((n_digits, m, channels), dtype=torch.int8, device=dev)
        peak = torch.zeros(1, dtype=torch.int32, device=dev)
    if split:
        n_sums = math.ceil(row_len / SUM_BLOCK)
        partial = dummy
        if dynamic:
            partial, n_sums, _ = _block_sums(kern, x)
        kern.encode.quantize_kernel[(n_rows, math.ceil(row_len / QUANT_BLOCK))](
            x, partial, vth, counts, planes, peak, n_sums, row_len, float(k),
            float(vth_min), float(vth_max), float(limit), DYNAMIC=dynamic,
            NB=1 << _log2_up(n_sums), LOG_NB=_log2_up(n_sums), BLOCK=QUANT_BLOCK,
            N_DIGITS=n_digits, num_warps=4)
    else:
        block = block or (2048 if fused_compact else 1024)
        n_steps = math.ceil(row_len / block)
        kern.encode.encode_rows_kernel[(n_rows,)](
            x, vth, counts, planes, peak, idx, ev, bptr, n_units, row_len, float(k),
            float(vth_min), float(vth_max), float(limit), DYNAMIC=dynamic,
            NB=1 << _log2_up(n_steps), LOG_NB=_log2_up(n_steps), BLOCK=block,
            LOG_BLOCK=_log2_up(block), N_DIGITS=n_digits, COMPACT=fused_compact,
            BLOCK_CH=unit, num_warps=8)
    if path == "event" and not (fused_compact and not split):
        kern.encode.compact_kernel[(1,)](
            counts, m, channels, idx, ev, bptr, n_units, M_PAD=m_pad,
            BLOCK=4096 // m_pad, BLOCK_CH=unit, num_warps=8)
    if not dynamic:
        vth_rows = vth.reshape(1).expand(m).contiguous()
    elif m > n_rows:
        vth_rows = vth.repeat_interleave(m // n_rows)
    else:
        vth_rows = vth
    enc = Encoded(counts.view(m, channels), vth, vth_rows)
    if path == "event":
        enc.events = (idx, ev, bptr, m_pad, unit)
    elif path == "gemm":
        enc.digits = (planes, peak, n_digits)
    return enc


def _block_sums(kern: ModuleType, x: torch.Tensor, with_max: bool = False):
    """Partial sums of |x| per row over blocks of SUM_BLOCK values (the first level of the
    threshold's pairwise tree above SUM_BLOCK), their count, and (with_max) the blocks'
    largest |x| (else None)."""
    n_rows, row_len = x.shape
    n_sums = math.ceil(row_len / SUM_BLOCK)
    partial = torch.empty((n_rows, n_sums), dtype=torch.float32, device=x.device)
    xmax = torch.empty_like(partial) if with_max else None
    kern.encode.block_sums_kernel[(n_rows, n_sums)](
        x, partial, xmax if with_max else partial, n_sums, row_len, SUM_BLOCK=SUM_BLOCK,
        LOG_SUM=_log2_up(SUM_BLOCK), MAX=with_max, num_warps=4)
    return partial, n_sums, xmax


def _dense_encoded(kern, x, *, dynamic, k, vth_min, vth_max, limit, threshold) -> Encoded:
    n_rows, row_len = x.shape
    if n_rows > DENSE_MAX_ROWS:
        raise ValueError(f"the dense-count GEMV takes at most {DENSE_MAX_ROWS} rows")
    n_digits = digits_for(limit)
    if dynamic:
        partial, n_sums, xmax = _block_sums(kern, x, with_max=n_digits > 1)
    else:  # one 'block' per row: its largest |x|, if the peak count is needed
        partial, n_sums, xmax = _dummy(x.device, torch.float32), 1, None
        if n_digits > 1:
            xmax = x.abs().amax(dim=1, keepdim=True)
    counts = torch.empty((n_rows, row_len), dtype=torch.int32, device=x.device)
    vth = torch.empty(n_rows, dtype=torch.float32, device=x.device) if dynamic else threshold
    vth_rows = vth if dynamic else vth.reshape(1).expand(n_rows).contiguous()
    return Encoded(counts, vth, vth_rows, dense={
        "x": x, "partial": partial, "xmax": xmax, "n_sums": n_sums, "dynamic": dynamic,
        "k": float(k), "vth_min": float(vth_min), "vth_max": float(vth_max),
        "limit": float(limit), "n_digits": n_digits, "threshold": threshold,
        "counts_written": False})


@dataclass(frozen=True)
class EventConfig:
    bn: int = 256
    e: int = 64
    gps: int = 4
    num_warps: int = 4
    num_stages: int = 2
    prefetch: bool = False  # load the next chunk's event ids during this chunk's weight rows
    # (measured 1-5 % slower on the H200, benchmarks/triton_decode.py: kept as an option)


@dataclass(frozen=True)
class GemmConfig:
    bm: int = 128
    bn: int = 128
    bk: int = 64  # channels per dot; a loop step is sub dots (one weight group when grouped)
    sub: int = 2
    group_m: int = 8
    num_warps: int = 8
    num_stages: int = 3
    split: int = 1  # K slices per column tile (the dense-count GEMV of few rows)


def event_config(n_out: int, rows: int) -> EventConfig:
    """Tiles for the event GEMV, from the H200 sweep (benchmarks/triton_linear.py --sweep): wide
    column tiles (the A tile's cost is shared by more weight bytes) and the smallest A tile,
    rows x blocks x 4 digits = 16 (the smallest int8 dot)."""
    m_pad = 1 << (rows - 1).bit_length()
    bn = 256 if n_out >= 2048 else 64 if n_out >= 512 else 32
    return EventConfig(bn=bn, e=64, gps=max(1, 4 // m_pad))


def event_linear(kern: ModuleType, enc: Encoded, wt: torch.Tensor, group_size: int | None,
                 scale: torch.Tensor | None, bias: torch.Tensor | None, *, store_acc: bool,
                 decode: bool, cfg: EventConfig | None = None):
    """acc [rows, G, N] int32 (store_acc) and y [rows, N] float32 (decode) from the event list.
    ``wt``: W^T, int8 [K, N]; ``scale``: float32 [G, N]."""
    idx, ev, bptr, m_pad, unit = enc.events
    channels, n_out = wt.shape
    dev = wt.device
    grouped = group_size is not None and group_size < channels
    block = group_size if grouped else EVENT_BLOCK
    cfg = cfg or event_config(n_out, enc.rows)
    n_blocks = math.ceil(channels / block)
    n_units = math.ceil(channels / unit)
    n_tiles = math.ceil(n_out / cfg.bn)
    n_slices = math.ceil(n_blocks / cfg.gps)
    split = n_slices > 1 and (decode or not grouped)
    acc = torch.empty((enc.rows, n_blocks if grouped else 1, n_out), dtype=torch.int32,
                      device=dev) if store_acc else _dummy(dev)
    y = torch.empty((enc.rows, n_out), dtype=torch.float32, device=dev) if decode else \
        _dummy(dev, torch.float32)
    part = torch.empty((n_slices, m_pad, n_out), dtype=torch.float32 if grouped else torch.int32,
                       device=dev) if split else _dummy(dev)
    locks = _on(dev, ("locks", n_tiles), lambda: torch.zeros(n_tiles, dtype=torch.int32,
                                                             device=dev)) if split else _dummy(dev)
    kern.event_gemv.event_gemv_kernel[(n_tiles, n_slices)](
        idx, ev, bptr, wt, scale if scale is not None else _dummy(dev, torch.float32),
        enc.vth_rows, bias if bias is not None else _dummy(dev, torch.float32),
        acc, y, part, locks, enc.rows, n_out, n_blocks, n_units, n_slices,
        BLOCK_CH=block, UPB=block // unit, GPS=cfg.gps, M_PAD=m_pad, BN=cfg.bn, E=cfg.e,
        GROUPED=grouped, DECODE=decode, HAS_BIAS=bias is not None, STORE_ACC=store_acc,
        SPLIT=split, NUM_STAGES=cfg.num_stages, PREFETCH=cfg.prefetch,
        num_warps=cfg.num_warps)
    return (acc if store_acc else None), (y if decode else None)


def gemm_step(channels: int, group_size: int | None) -> tuple[int, int] | None:
    """(bk, sub) for the int8 GEMM: a loop step of bk * sub channels is one weight group (or
    divides K for one group); bk >= 32 for int8 dots. None when K or the group is not a multiple
    of 32 (those layers run on the event path or the reference)."""
    grouped = group_size is not None and group_size < channels
    span = group_size if grouped else channels
    for bk in (64, 32):
        if span % bk == 0 and channels % bk == 0:
            if grouped:
                return bk, span // bk
            return bk, 2 if span % (2 * bk) == 0 else 1
    return None


GEMV_PROGRAMS = 512  # programs a few-row GEMM aims for (about four per H200 multiprocessor)
FUSED_MAX_WEIGHTS = 8 << 20  # up to this many weights the fused dense-count GEMV is faster
FUSED_PROGRAMS = 264  # the fused GEMV's target (each program also quantises its K slice)


def gemm_config(rows: int, n_out: int, channels: int, group_size: int | None,
                store_acc: bool = False) -> GemmConfig:
    """Tiles for the int8 GEMM. Up to 64 rows (decode on dense counts) it streams the weight
    like a GEMV: 16- or 64-row tiles, narrow column tiles, and K split so that about
    GEMV_PROGRAMS programs read the weight at once (H200, benchmarks/triton_decode.py)."""
    bk, sub = gemm_step(channels, group_size)
    if rows <= 64:
        bm = 16 if rows <= 16 else 64
        bn = 64 if n_out >= 8192 else 32
        n_tiles = math.ceil(rows / bm) * math.ceil(n_out / bn)
        n_steps = channels // (bk * sub)
        split = max(1, min(n_steps, GEMV_PROGRAMS // n_tiles))
        return GemmConfig(bm=bm, bn=bn, bk=bk, sub=sub, num_warps=4, num_stages=4, split=split)
    if store_acc and group_size is not None and group_size < channels:
        # storing every group's acc needs a layout-conversion buffer per store: 128-row tiles
        # ask for more shared memory than the H200 has (345 KB with Triton 3.6)
        return GemmConfig(bm=64, bn=128, bk=bk, sub=sub, num_warps=4)
    return GemmConfig(bm=128, bn=128 if n_out >= 128 else 64, bk=bk, sub=sub, num_warps=8)


def gemm_linear(kern: ModuleType, enc: Encoded, w: torch.Tensor, group_size: int | None,
                scale: torch.Tensor | None, bias: torch.Tensor | None, *, store_acc: bool,
                decode: bool, cfg: GemmConfig | None = None):
    """acc [rows, G, N] int32 (store_acc) and y [rows, N] float32 (decode) on int8 tensor cores.
    ``w``: int8 [N, K] (K-major)."""
    planes, peak, n_digits = enc.digits
    n_out, channels = w.shape
    dev = w.device
    grouped = group_size is not None and group_size < channels
    cfg = cfg or gemm_config(enc.rows, n_out, channels, group_size, store_acc)
    n_groups = channels // group_size if grouped else 1
    acc = torch.empty((enc.rows, n_groups, n_out), dtype=torch.int32, device=dev) \
        if store_acc else _dummy(dev)
    y = torch.empty((enc.rows, n_out), dtype=torch.float32, device=dev) if decode else \
        _dummy(dev, torch.float32)
    n_tiles = math.ceil(enc.rows / cfg.bm) * math.ceil(n_out / cfg.bn)
    n_steps = channels // (cfg.bk * cfg.sub)
    per_split = math.ceil(n_steps / cfg.split)
    split = math.ceil(n_steps / per_split)
    part = locks = _dummy(dev)
    if split > 1:
        part = torch.empty((split, enc.rows, n_out), device=dev,
                           dtype=torch.float32 if grouped else torch.int32)
        locks = _on(dev, ("gemm_locks", n_tiles),
                    lambda: torch.zeros(n_tiles, dtype=torch.int32, device=dev))
    kern.int8_gemm.int8_gemm_kernel[(n_tiles, split)](
        planes, w, peak, scale if scale is not None else _dummy(dev, torch.float32),
        enc.vth_rows, bias if bias is not None else _dummy(dev, torch.float32), acc, y,
        part, locks, enc.rows, n_out, channels, n_groups, enc.rows * channels, per_split,
        BM=cfg.bm, BN=cfg.bn, BK=cfg.bk, SUB=cfg.sub, GROUPED=grouped, N_DIGITS=n_digits,
        DECODE=decode, HAS_BIAS=bias is not None, STORE_ACC=store_acc,
        GROUP_M=cfg.group_m, NUM_STAGES=cfg.num_stages, SPLIT=split, num_warps=cfg.num_warps)
    return (acc if store_acc else None), (y if decode else None)


@dataclass(frozen=True)
class DenseConfig:
    bn: int = 32
    bk: int = 128  # channels per step (the group size when grouped)
    split: int = 1
    num_warps: int = 4
    num_stages: int = 4
    one_row: bool = True  # a single row is quantised as a vector, not as the padded tile


def dense_step(channels: int, group_size: int | None) -> int | None:
    """Channels per step of the dense-count GEMV: the group (a power of two from 32 to 256), or
    128 for one group (any K); None when the groups do not fit a step."""
    if group_size is None or group_size >= channels:
        return 128
    if group_size in (32, 64, 128, 256) and channels % group_size == 0:
        return group_size
    return None


def dense_config(n_out: int, channels: int, group_size: int | None) -> DenseConfig:
    """Narrow column tiles and K split so that about FUSED_PROGRAMS programs stream the weight
    (the tiles of the final H200 table, benchmarks/results/triton_decode_small_final.json)."""
    bk = dense_step(channels, group_size)
    bn = 64 if n_out >= 8192 else 32
    n_tiles = math.ceil(n_out / bn)
    split = max(1, min(math.ceil(channels / bk), FUSED_PROGRAMS // n_tiles))
    return DenseConfig(bn=bn, bk=bk, split=split)


def dense_linear(kern: ModuleType, enc: Encoded, w: torch.Tensor, group_size: int | None,
                 scale: torch.Tensor | None, bias: torch.Tensor | None, *, store_acc: bool,
                 decode: bool, cfg: DenseConfig | None = None):
    """acc and y like ``gemm_linear`` from x itself (``encode(path='dense')``): the first call
    on an encoding also writes its counts and vth. ``w``: int8 [N, K] (K-major)."""
    d = enc.dense
    n_out, channels = w.shape
    dev = w.device
    grouped = group_size is not None and group_size < channels
    cfg = cfg or dense_config(n_out, channels, group_size)
    n_groups = channels // group_size if grouped else 1
    rows = enc.rows
    acc = torch.empty((rows, n_groups, n_out), dtype=torch.int32, device=dev) \
        if store_acc else _dummy(dev)
    y = torch.empty((rows, n_out), dtype=torch.float32, device=dev) if decode else \
        _dummy(dev, torch.float32)
    n_tiles = math.ceil(n_out / cfg.bn)
    n_steps = math.ceil(channels / cfg.bk)
    per_split = math.ceil(n_steps / cfg.split)
    split = math.ceil(n_steps / per_split)
    part = locks = _dummy(dev)
    if split > 1:
        part = torch.empty((split, rows, n_out), device=dev,
                           dtype=torch.float32 if grouped else torch.int32)
        locks = _on(dev, ("dense_locks", n_tiles),
                    lambda: torch.zeros(n_tiles, dtype=torch.int32, device=dev))
    store_counts = not d["counts_written"]
    d["counts_written"] = True
    n_sums = d["n_sums"]
    threshold = d["threshold"] if d["threshold"] is not None else _dummy(dev, torch.float32)
    kern.dense_gemv.dense_gemv_kernel[(n_tiles, split)](
        d["x"], d["partial"], d["xmax"] if d["xmax"] is not None else d["partial"], threshold,
        w, scale if scale is not None else
        _dummy(dev, torch.float32), bias if bias is not None else _dummy(dev, torch.float32),
        enc.vth if d["dynamic"] else _dummy(dev, torch.float32), enc.counts, acc, y, part,
        locks, rows, n_out, channels, n_groups, n_sums, per_split, d["k"], d["vth_min"],
        d["vth_max"], d["limit"], BM=DENSE_MAX_ROWS, BN=cfg.bn, BK=cfg.bk, GROUPED=grouped,
        DYNAMIC=d["dynamic"], NB=1 << _log2_up(n_sums), LOG_NB=_log2_up(n_sums),
        N_DIGITS=d["n_digits"], DECODE=decode, HAS_BIAS=bias is not None, STORE_ACC=store_acc,
        STORE_COUNTS=store_counts, SPLIT=split, NUM_STAGES=cfg.num_stages,
        ONE_ROW=rows == 1 and cfg.one_row, num_warps=cfg.num_warps)
    return (acc if store_acc else None), (y if decode else None)


@dataclass(frozen=True)
class ScoresConfig:
    bm: int
    bn: int
    bd: int
    num_warps: int


def scores_config(rows: int, keys: int, head_dim: int) -> ScoresConfig:
    """Tiles of the score GEMM: rows are the query heads x tokens of one KV head (at least 16, the
    dot's smallest tile), keys its columns, the head dimension its K steps (at least 32: int8
    tensor cores)."""
    bm = min(128, max(16, 1 << _log2_up(rows)))
    bn = min(128, max(16, 1 << _log2_up(keys)))
    bd = min(128, max(32, 1 << _log2_up(head_dim)))
    return ScoresConfig(bm, bn, bd, num_warps=8 if bm * bn >= 128 * 128 else 4)


def attention_scores(kern: ModuleType, q_counts: torch.Tensor, k: torch.Tensor,
                     cfg: ScoresConfig | None = None) -> torch.Tensor:
    """int32 scores [B, Hq, Tq, Tk] of int32 query counts [B, Hq, Tq, D] and int8 keys
    [B, Hkv, Tk, D] (``spike_scores``)."""
    b, hq, tq, d = q_counts.shape
    hkv, tk = k.shape[1], k.shape[2]
    rows = hq // hkv * tq  # the query rows that read one KV head: one GEMM per (batch, KV head)
    cfg = cfg or scores_config(rows, tk, d)
    acc = torch.empty((b, hq, tq, tk), dtype=torch.int32, device=k.device)
    grid = (b * hkv, math.ceil(rows / cfg.bm), math.ceil(tk / cfg.bn))
    kern.attention_scores.scores_kernel[grid](
        q_counts.contiguous(), k.contiguous(), acc, rows, tk, d, BM=cfg.bm, BN=cfg.bn,
        BD=cfg.bd, num_warps=cfg.num_warps)
    return acc
