"""Reference kernels of the float, shape and attention ops (docs/OPS.md).

Each kernel is ``kernel(attrs, *inputs)``; attrs already carry the op defaults. Float results keep
the input dtype; products, sums, norms and transcendental functions are computed in float64 and
rounded once, so the result is the correctly rounded value the op table specifies (this is what
keeps agreement with onnxruntime within 1e-5 relative). Integer inputs follow integer semantics
(exact products, division truncating toward zero).
"""
from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import special

from sbcompile.ir.ops import attention_keep
from sbcompile.ir.shapes import window_out


# ---- helpers ------------------------------------------------------------------------------------
def _wide(x: np.ndarray) -> np.ndarray:
    """float64 for float inputs (one rounding at the end), unchanged otherwise."""
    return x.astype(np.float64) if x.dtype.kind == "f" else x


def _like(y, x: np.ndarray) -> np.ndarray:
    """y as an array of x's dtype (0-d results stay arrays)."""
    return np.asarray(y).astype(x.dtype, copy=False)


def _float_only(fn):
    """A float function evaluated in float64 and rounded to the input dtype."""
    return lambda a, x: _like(fn(x.astype(np.float64)), x)


def _axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


# ---- linear algebra -----------------------------------------------------------------------------
CONV_CHUNK_BYTES = 32 << 20  # bound of the window matrix one contraction copies out


def conv_nd(x, w, b, strides, pads, dilations, group):
    """N-d cross-correlation, NC* layout, via windows + tensordot. Exact for integer dtypes.
    The window matrix a contraction copies out (output positions x C x kernel) is made a
    block of samples, or of one sample's output rows, at a time (``CONV_CHUNK_BYTES``): each
    output element is the same dot product whatever the block."""
    n_sp = x.ndim - 2
    x, strides, dilations = padded_geometry(x, strides, pads, dilations)
    kernel = w.shape[2:]
    span = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    win = sliding_window_view(x, span, axis=tuple(range(2, 2 + n_sp)))
    # win: [N, C, *out_full, *span]; take strides on out axes and dilations on span axes
    sl = (slice(None), slice(None)) + tuple(slice(None, None, s) for s in strides) + tuple(
        slice(None, None, d) for d in dilations)
    win = win[sl]
    c_per_group = w.shape[1]
    o_per_group = w.shape[0] // group
    out_shape = win.shape[2:2 + n_sp]
    y = np.empty((x.shape[0], w.shape[0]) + out_shape, np.result_type(x, w))
    # contract C and kernel axes: xg [n, C, *out, *k], wg [O, C, *k]
    axes_x = [1] + list(range(2 + n_sp, 2 + 2 * n_sp))
    axes_w = [1] + list(range(2, 2 + n_sp))
    row_bytes = c_per_group * int(np.prod(w.shape[2:])) * y.itemsize * \
        int(np.prod(out_shape[1:], dtype=np.int64))
    if c_per_group == 1 and group > 1:  # depthwise: every group's window matrix in one copy
        taps = int(np.prod(w.shape[2:]))
        wt = [w[g * o_per_group:(g + 1) * o_per_group].transpose(
            axes_w + [0]).reshape(taps, o_per_group) for g in range(group)]
        for n, rows in _conv_blocks(x.shape[0], out_shape[0], row_bytes * group):
            cols = np.ascontiguousarray(np.moveaxis(win[n, :, rows], 1, 0))  # [C, n, *out, *k]
            block = cols.shape[1:1 + n_sp + 1]
            for g in range(group):  # the 2-D product tensordot makes, minus its copy
                yg = np.dot(cols[g].reshape(-1, taps), wt[g]).reshape(block + (o_per_group,))
                y[n, g * o_per_group:(g + 1) * o_per_group, rows] = np.moveaxis(yg, -1, 1)
        group = 0
    for g in range(group):
        wg = w[g * o_per_group:(g + 1) * o_per_group]
        ys = y[:, g * o_per_group:(g + 1) * o_per_group]
        xg = win[:, g * c_per_group:(g + 1) * c_per_group]
        for n, rows in _conv_blocks(x.shape[0], out_shape[0], row_bytes):
            ys[n, :, rows] = np.moveaxis(np.tensordot(xg[n, :, rows], wg, axes=(axes_x, axes_w)),
                                         -1, 1)
    if b is not None:
        y += b.reshape((1, -1) + (1,) * n_sp)
    return y


def padded_geometry(x, strides, pads, dilations):
    """A convolution's input zero-padded, and its strides and dilations (ONNX defaults
    filled in)."""
    n_sp = x.ndim - 2
    pads = list(pads or [0] * (2 * n_sp))
    if any(pads):
        x = np.pad(x, [(0, 0), (0, 0)] + [(pads[i], pads[i + n_sp]) for i in range(n_sp)])
    return x, list(strides or [1] * n_sp), list(dilations or [1] * n_sp)


def _conv_blocks(samples: int, rows: int, row_bytes: int):
    """(sample slice, first-output-axis slice) blocks whose window matrix stays near
    CONV_CHUNK_BYTES: whole samples when one fits, else rows of one sample."""
    per_sample = max(rows * row_bytes, 1)
    if per_sample <= CONV_CHUNK_BYTES:
        step = max(1, CONV_CHUNK_BYTES // per_sample)
        for n in range(0, samples, step):
            yield slice(n, n + step), slice(None)
        return
    step = max(1, CONV_CHUNK_BYTES // max(row_bytes, 1))
    for n in range(samples):
        for r in range(0, rows, step):
            yield slice(n, n + 1), slice(r, r + step)


def _conv(a, x, w, b=None):
    y = conv_nd(_wide(x), _wide(w), None if b is None else _wide(b), a["strides"], a["pads"],
                a["dilations"], a["group"])
    return _like(y, x)


def _linear(a, x, w, b=None):
    y = _wide(x) @ _wide(w).T
    return _like(y if b is None else y + _wide(b), x)


def _matmul(a, x, y):
    return _like(np.matmul(_wide(x), _wide(y)), x)


# ---- pooling ------------------------------------------------------------------------------------
def _pool_geometry(spatial, kernel, strides, pads, dilations, ceil_mode):
    """Per spatial axis: (begin pad, end pad incl. ceil_mode overhang, output size). Under
    ceil_mode a window that would start inside the end pad is dropped (the ONNX rule)."""
    n_sp = len(kernel)
    strides = strides or [1] * n_sp
    dilations = dilations or [1] * n_sp
    pads = pads or [0] * (2 * n_sp)
    geometry = []
    for i, size in enumerate(spatial):
        begin, end = pads[i], pads[i + n_sp]
        span = (kernel[i] - 1) * dilations[i] + 1
        out = window_out(size, kernel[i], strides[i], begin, end, dilations[i], ceil_mode)
        geometry.append((begin, max(end, (out - 1) * strides[i] + span - size - begin), out))
    return geometry


def _windows(xp, kernel, strides, dilations, outs):
    """Windows [N, C, *out, *kernel] of an already padded array."""
    n_sp = len(kernel)
    strides = strides or [1] * n_sp
    dilations = dilations or [1] * n_sp
    spans = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    win = sliding_window_view(xp, spans, axis=tuple(range(2, 2 + n_sp)))
    sl = (slice(None), slice(None)) + tuple(slice(0, (o - 1) * s + 1, s)
                                            for o, s in zip(outs, strides))
    return win[sl + tuple(slice(None, None, d) for d in dilations)]


def _pool(a, x, fill):
    geometry = _pool_geometry(x.shape[2:], a["kernel"], a["strides"], a["pads"],
                              a["dilations"], a["ceil_mode"])
    widths = [(0, 0), (0, 0)] + [(b, e) for b, e, _ in geometry]
    xp = np.pad(x, widths, constant_values=fill)
    outs = [o for _, _, o in geometry]
    return _windows(xp, a["kernel"], a["strides"], a["dilations"], outs), geometry


def _max_pool(a, x):
    fill = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
    win, _ = _pool(a, x, fill)
    return _like(win.max(axis=tuple(range(-len(a["kernel"]), 0))), x)


def _avg_pool(a, x):
    """Window sums over the count of cells inside the input (plus the explicit pads when
    count_include_pad; the ceil_mode overhang never counts)."""
    axes = tuple(range(-len(a["kernel"]), 0))
    win, geometry = _pool(a, _wide(x), 0.0)
    n_sp = len(a["kernel"])
    pads = a["pads"] or [0] * (2 * n_sp)
    inside = np.ones((1, 1) + x.shape[2:])
    if a["count_include_pad"]:
        inside = np.pad(inside, [(0, 0), (0, 0)] + [(pads[i], pads[i + n_sp]) for i in range(n_sp)],
                        constant_values=1.0)
        overhang = [(0, 0), (0, 0)] + [(0, e - pads[i + n_sp]) for i, (_, e, _) in
                                       enumerate(geometry)]
    else:
        overhang = [(0, 0), (0, 0)] + [(b, e) for b, e, _ in geometry]
    inside = np.pad(inside, overhang)
    count = _windows(inside, a["kernel"], a["strides"], a["dilations"],
                     [o for _, _, o in geometry]).sum(axis=axes)
    return _like(win.sum(axis=axes) / count, x)


def _global_pool(reduce):
    return lambda a, x: _like(reduce(_wide(x), axis=tuple(range(2, x.ndim)), keepdims=True), x)


# ---- elementwise --------------------------------------------------------------------------------
def _div(a, x, y):
    if x.dtype.kind in "iu":
        q = np.abs(x) // np.where(y == 0, 1, np.abs(y))
        return _like(np.where((x < 0) != (y < 0), -q, q), x)
    return _like(_wide(x) / _wide(y), x)


def _mod(a, x, y):
    if a["fmod"]:
        return _like(np.fmod(x, y), x)
    return _like(np.mod(x, y), x)


def _pow(a, x, y):
    """Exact for integers with non-negative integer exponents; otherwise through float64
    (an integer result truncates toward zero)."""
    if x.dtype.kind in "iu" and y.dtype.kind in "iu" and np.all(y >= 0):
        return _like(np.power(x.astype(np.int64), y.astype(np.int64)), x)
    y64 = np.power(x.astype(np.float64), y.astype(np.float64))
    return _like(np.trunc(y64) if x.dtype.kind in "iu" else y64, x)


def _binary(fn):
    return lambda a, x, y: _like(fn(x, y), x)


def _compare(fn):
    return lambda a, x, y: np.asarray(fn(x, y))


def _cast(a, x):
    to = np.dtype(a["to"])
    if to.kind in "iu" and x.dtype.kind == "f":
        return np.asarray(np.trunc(x)).astype(to)
    return np.asarray(x).astype(to)


def _clip(a, x, lo=None, hi=None):
    y = x
    if lo is not None:
        y = np.maximum(y, lo)
    if hi is not None:
        y = np.minimum(y, hi)
    return _like(y, x)


# ---- activations --------------------------------------------------------------------------------
def _sigmoid64(x):
    return special.expit(x)


def _gelu(a, x):
    w = x.astype(np.float64)
    if a["approximate"] == "tanh":
        y = 0.5 * w * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (w + 0.044715 * w ** 3)))
    else:
        y = 0.5 * w * (1.0 + special.erf(w / math.sqrt(2.0)))
    return _like(y, x)


def _softmax(a, x):
    w = x.astype(np.float64)
    e = np.exp(w - w.max(axis=a["axis"], keepdims=True))
    return _like(e / e.sum(axis=a["axis"], keepdims=True), x)


def _log_softmax(a, x):
    w = x.astype(np.float64)
    s = w - w.max(axis=a["axis"], keepdims=True)
    return _like(s - np.log(np.exp(s).sum(axis=a["axis"], keepdims=True)), x)


# ---- normalisation ------------------------------------------------------------------------------
def _norm_axes(axis: int, rank: int) -> tuple[int, ...]:
    return tuple(range(_axis(axis, rank), rank))


def _layer_norm(a, x, scale, bias=None):
    w = x.astype(np.float64)
    axes = _norm_axes(a["axis"], x.ndim)
    mean = w.mean(axis=axes, keepdims=True)
    var = ((w - mean) ** 2).mean(axis=axes, keepdims=True)
    y = (w - mean) / np.sqrt(var + a["epsilon"]) * scale.astype(np.float64)
    return _like(y if bias is None else y + bias.astype(np.float64), x)


def _rms_norm(a, x, scale=None):
    w = x.astype(np.float64)
    axes = _norm_axes(a["axis"], x.ndim)
    y = w / np.sqrt((w * w).mean(axis=axes, keepdims=True) + a["epsilon"])
    return _like(y if scale is None else y * scale.astype(np.float64), x)


def _batch_norm(a, x, scale, bias, mean, var):
    shape = (1, -1) + (1,) * (x.ndim - 2)
    p = [t.astype(np.float64).reshape(shape) for t in (scale, bias, mean, var)]
    y = (x.astype(np.float64) - p[2]) / np.sqrt(p[3] + a["epsilon"]) * p[0] + p[1]
    return _like(y, x)


# ---- reductions ---------------------------------------------------------------------------------
def _reduce(fn, widen=True):
    """A reduction over `axes`; sums, means and products accumulate in float64 / int64."""
    def kernel(a, x, runtime_axes=None):
        axes = None if a["axes"] is None else tuple(a["axes"])
        if runtime_axes is not None and runtime_axes.size:
            axes = tuple(int(i) for i in runtime_axes)
        src = x
        if widen:
            src = x.astype(np.float64 if x.dtype.kind == "f" else np.int64)
        if fn in (np.max, np.min) and x.size == 0:  # empty: the identity of max / min
            return _like(fn(src, axis=axes, keepdims=bool(a["keepdims"]),
                            initial=_lowest(x.dtype, fn is np.min)), x)
        return _like(fn(src, axis=axes, keepdims=bool(a["keepdims"])), x)
    return kernel


def _lowest(dtype: np.dtype, negate: bool):
    """The smallest value of dtype (the largest when negate): -inf, the integer minimum, False."""
    if dtype.kind == "f":
        return np.inf if negate else -np.inf
    if dtype.kind == "b":
        return bool(negate)
    info = np.iinfo(dtype)
    return info.max if negate else info.min


def _argmax(a, x):
    y = np.argmax(x, axis=a["axis"])
    if a["keepdims"]:
        y = np.expand_dims(y, a["axis"])
    return np.asarray(y, dtype=np.int64)


# ---- shape and data movement --------------------------------------------------------------------
def _reshape(a, x, shape):
    shape = [int(s) for s in shape]
    if not a["allowzero"]:
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return x.reshape(shape)


def _flatten(a, x):
    axis = _axis(a["axis"], x.ndim)
    return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))


def _split(a, x, split=None):
    axis = _axis(a["axis"], x.ndim)
    if split is None:
        n, size = a["num_outputs"], x.shape[axis]
        chunk = -(-size // n)
        split = [min(chunk, size - i * chunk) for i in range(n)]
    bounds = np.cumsum([0] + [int(s) for s in split])
    return tuple(np.take(x, np.arange(bounds[i], bounds[i + 1]), axis=axis)
                 for i in range(len(split)))


def _slice(a, x, starts, ends, axes=None, steps=None):
    axes = range(len(starts)) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    index = [slice(None)] * x.ndim
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis, start, end, step = _axis(int(axis), x.ndim), int(start), int(end), int(step)
        dim = x.shape[axis]
        start = start + dim if start < 0 else start
        end = end + dim if end < 0 else end
        if step > 0:
            start, end = min(max(start, 0), dim), min(max(end, 0), dim)
        else:
            start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
        index[axis] = slice(start, None if end < 0 else end, step)
    return x[tuple(index)]


def _gather_elements(a, data, idx):
    axis = _axis(a["axis"], data.ndim)
    idx = np.where(idx < 0, idx + data.shape[axis], idx)
    return np.take_along_axis(data, idx, axis=axis)


def _unsqueeze(a, x, axes):
    axes = np.atleast_1d(axes)
    rank = x.ndim + len(axes)
    return x.reshape(_unsqueezed_shape(x.shape, [_axis(int(i), rank) for i in axes]))


def _unsqueezed_shape(shape, axes):
    dims = iter(shape)
    return tuple(1 if i in axes else next(dims) for i in range(len(shape) + len(axes)))


def _squeeze(a, x, axes=None):
    if axes is None:
        return np.squeeze(x)
    return np.squeeze(x, axis=tuple(_axis(int(i), x.ndim) for i in np.atleast_1d(axes)))


def _expand(a, x, shape):
    return np.array(np.broadcast_to(x, np.broadcast_shapes(x.shape, tuple(int(s) for s in shape))))


def _shape(a, x):
    return np.asarray(x.shape[a["start"]:a["end"]], dtype=np.int64)


def _constant_of_shape(a, shape):
    value = float(a["value"]) if isinstance(a["value"], str) else a["value"]
    return np.full(tuple(int(s) for s in shape), value, dtype=np.dtype(a["dtype"]))


def _range(a, start, limit, delta):
    n = max(int(math.ceil((float(limit) - float(start)) / float(delta))), 0)
    return (start + np.arange(n, dtype=np.int64).astype(start.dtype) * delta).astype(start.dtype)


def _trilu(a, x, k=None):
    k = 0 if k is None else int(k)
    return np.triu(x, k) if a["upper"] else np.tril(x, k)


def _pad(a, x, pads, value=None):
    n = x.ndim
    pads = [int(p) for p in pads]
    crop = tuple(slice(max(-pads[i], 0), x.shape[i] - max(-pads[i + n], 0)) for i in range(n))
    x_c = x[crop]
    widths = [(max(pads[i], 0), max(pads[i + n], 0)) for i in range(n)]
    mode = a["mode"]
    if mode == "constant":
        fill = 0 if value is None else np.asarray(value).item()
        return np.pad(x_c, widths, mode="constant", constant_values=fill)
    return np.pad(x_c, widths, mode={"reflect": "reflect", "edge": "edge", "wrap": "wrap"}[mode])


# ---- attention ----------------------------------------------------------------------------------
def _attention(a, q, k, v, mask=None):
    """softmax(q k^T * scale + masks) v with GQA, causal and sliding-window masks; a row whose every
    key is masked yields zeros."""
    rep = q.shape[1] // k.shape[1]
    kk = np.repeat(k.astype(np.float64), rep, axis=1)
    scale = a["scale"] if a["scale"] is not None else 1.0 / math.sqrt(q.shape[3])
    s = np.matmul(q.astype(np.float64), np.swapaxes(kk, -1, -2)) * scale
    return _like(attend(a, s, v, mask), q)


def attend(a, s, v, mask=None):
    """softmax(s + masks) v in float64: s [B, Hq, Tq, Tk] the scaled logits, v [B, Hkv, Tk, Dv]
    (GQA), with attention's mask input, causal and window attributes; a row whose every key is
    masked yields zeros."""
    vv = np.repeat(v.astype(np.float64), s.shape[1] // v.shape[1], axis=1)
    keep = attention_keep(s.shape[2], s.shape[3], a["causal"], a["window"])
    if mask is not None and mask.dtype == np.bool_:
        keep = keep & mask
    elif mask is not None:
        s = s + mask.astype(np.float64)
    s = np.where(keep, s, -np.inf)
    peak = s.max(axis=-1, keepdims=True)
    e = np.exp(s - np.where(np.isfinite(peak), peak, 0.0))
    total = e.sum(axis=-1, keepdims=True)
    p = np.divide(e, total, out=np.zeros_like(e), where=total > 0)
    return np.matmul(p, vv)


def _gla(a, q, k, v, g):
    """Gated linear attention, recurrent form (docs/OPS.md), layout [B, T, H, D]."""
    qw, kw, vw, gw = (t.astype(np.float64) for t in (q, k, v, g))
    b, t, h, dk = q.shape
    scale = a["scale"] if a["scale"] is not None else dk ** -0.5
    state = np.zeros((b, h, dk, v.shape[-1]))
    y = np.empty(v.shape[:3] + (v.shape[-1],))
    for step in range(t):
        decay = np.exp(gw[:, step])[..., None]
        state = decay * state + kw[:, step, :, :, None] * vw[:, step, :, None, :]
        y[:, step] = scale * np.einsum("bhk,bhkv->bhv", qw[:, step], state)
    return _like(y, q)


# ---- real-model coverage: scans, selection, einsum, transposed conv, resize -------------------------
def _argmin(a, x):
    y = np.argmin(x, axis=a["axis"])
    if a["keepdims"]:
        y = np.expand_dims(y, a["axis"])
    return np.asarray(y, dtype=np.int64)


def _running(accumulate, identity):
    """cumsum / cumprod: ``accumulate`` along the axis held by the scalar input, in float64 for
    floats; exclusive shifts in ``identity``, reverse runs from the end."""
    def kernel(a, x, axis):
        axis = _axis(int(np.asarray(axis).reshape(())), x.ndim)
        w = np.flip(_wide(x), axis) if a["reverse"] else _wide(x)
        y = accumulate(w, axis=axis)
        if a["exclusive"]:
            first = np.full_like(np.take(y, [0], axis=axis), identity)
            y = np.concatenate([first, np.take(y, np.arange(y.shape[axis] - 1), axis=axis)],
                               axis=axis)
        return _like(np.flip(y, axis) if a["reverse"] else y, x)
    return kernel


def _topk(a, x, k):
    """A stable sort (ties: lower index first) on a key that orders as wanted; ``~x`` reverses
    integers without overflow, ``-x`` floats exactly."""
    axis, k = _axis(a["axis"], x.ndim), int(np.asarray(k).reshape(-1)[0])
    key = x if not a["largest"] else (~x if x.dtype.kind in "iu" else -x)
    order = np.take(np.argsort(key, axis=axis, kind="stable"), np.arange(k), axis=axis)
    return np.take_along_axis(x, order, axis=axis), order.astype(np.int64)


def _einsum(a, *xs):
    return _like(np.einsum(a["equation"], *[_wide(x) for x in xs]), xs[0])


def _conv_transpose(a, x, w, b=None):
    """The transposed convolution as a convolution: x dilated by the strides (zeros between
    samples), padded by (kernel - 1) * dilation minus the pads (plus output_padding at the end;
    a negative amount crops), correlated with the kernel flipped and its in/out channels swapped
    per group."""
    n_sp, group = x.ndim - 2, a["group"]
    strides = list(a["strides"] or [1] * n_sp)
    dilations = list(a["dilations"] or [1] * n_sp)
    pads = list(a["pads"] or [0] * (2 * n_sp))
    extra = list(a["output_padding"] or [0] * n_sp)
    xw = _wide(x)
    dilated = np.zeros(x.shape[:2] + tuple((d - 1) * s + 1 for d, s in zip(x.shape[2:], strides)))
    dilated[(slice(None), slice(None)) + tuple(slice(None, None, s) for s in strides)] = xw
    reach = [(k - 1) * d for k, d in zip(w.shape[2:], dilations)]
    begin = [r - p for r, p in zip(reach, pads[:n_sp])]
    end = [r - p + e for r, p, e in zip(reach, pads[n_sp:], extra)]
    dilated = np.pad(dilated, [(0, 0), (0, 0)] + [(max(b_, 0), max(e, 0))
                                                  for b_, e in zip(begin, end)])
    crop = tuple(slice(max(-b_, 0), dilated.shape[2 + i] - max(-e, 0))
                 for i, (b_, e) in enumerate(zip(begin, end)))
    dilated = dilated[(slice(None), slice(None)) + crop]
    c_per_group = w.shape[0] // group
    flipped = np.flip(_wide(w), axis=tuple(range(2, w.ndim)))
    kernel = np.concatenate([np.swapaxes(flipped[g * c_per_group:(g + 1) * c_per_group], 0, 1)
                             for g in range(group)], axis=0)
    y = conv_nd(dilated, kernel, None if b is None else _wide(b), None, None, dilations, group)
    return _like(y, x)


def _resize(a, x, roi=None, scales=None, sizes=None):
    """Separable resize (docs/OPS.md): one [out, in] weight matrix per resized axis."""
    rank = x.ndim
    axes = [_axis(int(i), rank) for i in (a["axes"] if a["axes"] is not None else range(rank))]
    scales = None if scales is None or scales.size == 0 else [float(s) for s in scales]
    sizes = None if sizes is None or sizes.size == 0 else [int(s) for s in sizes]
    roi = None if roi is None or roi.size == 0 else [float(r) for r in roi]
    if sizes is not None:
        ratios = [sizes[i] / x.shape[ax] for i, ax in enumerate(axes)]
        policy = a["keep_aspect_ratio_policy"]
        if policy != "stretch":
            ratio = min(ratios) if policy == "not_larger" else max(ratios)
            ratios = [ratio] * len(axes)
            sizes = [int(ratio * x.shape[ax] + 0.5) for ax in axes]
    else:
        ratios = scales
        sizes = [int(math.floor(s * x.shape[ax])) for s, ax in zip(scales, axes)]
    y = _wide(x)
    outside = np.zeros((1,) * rank, bool)
    for i, ax in enumerate(axes):
        span = (roi[i], roi[i + len(axes)]) if roi is not None else (0.0, 1.0)
        weights, extrapolated = _resize_weights(a, x.shape[ax], sizes[i], ratios[i], span)
        y = np.moveaxis(np.tensordot(weights, np.moveaxis(y, ax, 0), axes=1), 0, ax)
        if extrapolated is not None:
            outside = outside | extrapolated.reshape((1,) * ax + (-1,) + (1,) * (rank - ax - 1))
    if outside.any():
        y = np.where(outside, a["extrapolation_value"], y)
    return _like(y, x)


def _source_coordinates(a, size: int, out: int, scale: float, span) -> np.ndarray:
    """Input coordinate of every output index under coordinate_transformation_mode."""
    mode = a["coordinate_transformation_mode"]
    o = np.arange(out, dtype=np.float64)
    width = scale * size  # the unrounded output length the modes are defined on
    if mode == "half_pixel":
        return (o + 0.5) / scale - 0.5
    if mode == "half_pixel_symmetric":
        return size / 2 * (1 - out / width) + (o + 0.5) / scale - 0.5
    if mode == "pytorch_half_pixel":
        return (o + 0.5) / scale - 0.5 if width != 1 else np.full(out, -0.5)
    if mode == "align_corners":
        return o * (size - 1) / (width - 1) if width != 1 else np.zeros(out)
    if mode == "asymmetric":
        return o / scale
    if mode == "tf_half_pixel_for_nn":
        return (o + 0.5) / scale
    if mode == "tf_crop_and_resize":
        start, stop = span
        if width == 1:
            return np.full(out, (stop - start) * (size - 1) / 2 + start * (size - 1))
        return o * (stop - start) * (size - 1) / (width - 1) + start * (size - 1)
    raise ValueError(f"coordinate_transformation_mode '{mode}'")


def _keys_cubic(u: np.ndarray, coeff: float) -> np.ndarray:
    u = np.abs(u)
    near = ((coeff + 2) * u - (coeff + 3)) * u * u + 1
    far = ((coeff * u - 5 * coeff) * u + 8 * coeff) * u - 4 * coeff
    return np.where(u <= 1, near, np.where(u < 2, far, 0.0))


def _resize_weights(a, size: int, out: int, scale: float, span):
    """The [out, size] interpolation matrix of one axis, and (tf_crop_and_resize) which outputs
    fall outside the input."""
    coords = _source_coordinates(a, size, out, scale, span)
    weights = np.zeros((out, size))
    rows = np.arange(out)
    extrapolated = None
    if a["coordinate_transformation_mode"] == "tf_crop_and_resize":
        extrapolated = (coords < 0) | (coords > size - 1)
    if a["mode"] == "nearest":
        pick = {"round_prefer_floor": lambda c: np.ceil(c - 0.5),
                "round_prefer_ceil": lambda c: np.floor(c + 0.5),
                "floor": np.floor, "ceil": np.ceil}[a["nearest_mode"]](coords)
        weights[rows, np.clip(pick, 0, size - 1).astype(np.int64)] = 1.0
        return weights, extrapolated
    radius = 1.0 if a["mode"] == "linear" else 2.0
    stretch = min(scale, 1.0) if a["antialias"] else 1.0  # filters widen when downsampling
    reach = int(math.ceil(radius / stretch))
    taps = np.floor(coords)[:, None] + np.arange(1 - reach, reach + 1)[None, :]
    u = (taps - coords[:, None]) * stretch
    w = (np.clip(1 - np.abs(u), 0, 1) if a["mode"] == "linear"
         else _keys_cubic(u, a["cubic_coeff_a"]))
    inside = (taps >= 0) & (taps <= size - 1)
    if a["exclude_outside"]:
        w = np.where(inside, w, 0.0)
    if a["exclude_outside"] or a["antialias"]:
        total = w.sum(axis=1, keepdims=True)
        w = w / np.where(total == 0, 1.0, total)
    np.add.at(weights, (np.repeat(rows, taps.shape[1]),
                        np.clip(taps, 0, size - 1).astype(np.int64).ravel()), w.ravel())
    return weights, extrapolated


def _gather_nd(a, data, indices):
    b = a["batch_dims"]
    lead = data.shape[:b]
    depth = indices.shape[-1]
    flat_data = data.reshape((-1,) + data.shape[b:])
    flat_idx = indices.reshape((-1,) + indices.shape[b:])
    picked = []
    for d, idx in zip(flat_data, flat_idx):
        tuples = idx.reshape(-1, depth)
        tuples = np.where(tuples < 0, tuples + np.array(d.shape[:depth]), tuples)
        picked.append(np.stack([d[tuple(t)] for t in tuples]) if len(tuples) else
                      np.zeros((0,) + d.shape[depth:], d.dtype))
    rest = data.shape[b + depth:]
    return np.stack(picked).reshape(lead + indices.shape[b:-1] + rest)


_SCATTER = {"add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}


def _scatter_into(y, index: tuple, update, reduction: str) -> None:
    y[index] = update if reduction == "none" else _SCATTER[reduction](y[index], update)


def _scatter_elements(a, data, indices, updates):
    axis = _axis(a["axis"], data.ndim)
    y = data.copy()
    idx = np.where(indices < 0, indices + data.shape[axis], indices)
    for pos in np.ndindex(*idx.shape):
        target = pos[:axis] + (int(idx[pos]),) + pos[axis + 1:]
        _scatter_into(y, target, updates[pos], a["reduction"])
    return y


def _scatter_nd(a, data, indices, updates):
    y = data.copy()
    depth = indices.shape[-1]
    tuples = indices.reshape(-1, depth)
    rows = updates.reshape((-1,) + updates.shape[indices.ndim - 1:])
    for t, u in zip(tuples, rows):
        t = tuple(int(i) + data.shape[k] if i < 0 else int(i) for k, i in enumerate(t))
        _scatter_into(y, t, u, a["reduction"])
    return y


FLOAT_KERNELS = {
    "linear": _linear,
    "matmul": _matmul,
    "conv": _conv,
    "max_pool": _max_pool,
    "avg_pool": _avg_pool,
    "global_avg_pool": _global_pool(np.mean),
    "global_max_pool": _global_pool(np.max),
    "add": _binary(lambda x, y: _wide(x) + _wide(y)),
    "sub": _binary(lambda x, y: _wide(x) - _wide(y)),
    "mul": _binary(lambda x, y: _wide(x) * _wide(y)),
    "div": _div,
    "pow": _pow,
    "max": _binary(np.maximum),
    "min": _binary(np.minimum),
    "mod": _mod,
    "equal": _compare(np.equal),
    "less": _compare(np.less),
    "greater": _compare(np.greater),
    "and": _compare(np.logical_and),
    "or": _compare(np.logical_or),
    "where": lambda a, c, x, y: np.asarray(np.where(c, x, y)).astype(x.dtype, copy=False),
    "neg": lambda a, x: _like(-x, x),
    "abs": lambda a, x: _like(np.abs(x), x),
    "sqrt": _float_only(np.sqrt),
    "reciprocal": _float_only(lambda w: 1.0 / w),
    "exp": _float_only(np.exp),
    "log": _float_only(np.log),
    "erf": _float_only(special.erf),
    "sin": _float_only(np.sin),
    "cos": _float_only(np.cos),
    "floor": lambda a, x: _like(np.floor(x), x),
    "ceil": lambda a, x: _like(np.ceil(x), x),
    "not": lambda a, x: np.asarray(np.logical_not(x)),
    "identity": lambda a, x: x,
    "cast": _cast,
    "clip": _clip,
    "relu": lambda a, x: _like(np.maximum(x, 0), x),
    "leaky_relu": lambda a, x: _like(np.where(x >= 0, _wide(x), _wide(x) * a["alpha"]), x),
    "prelu": lambda a, x, s: _like(np.where(x >= 0, _wide(x), _wide(x) * _wide(s)), x),
    "gelu": _gelu,
    "silu": _float_only(lambda w: w * _sigmoid64(w)),
    "sigmoid": _float_only(_sigmoid64),
    "tanh": _float_only(np.tanh),
    "softmax": _softmax,
    "log_softmax": _log_softmax,
    "layer_norm": _layer_norm,
    "rms_norm": _rms_norm,
    "batch_norm": _batch_norm,
    "reduce_mean": _reduce(np.mean),
    "reduce_sum": _reduce(np.sum),
    "reduce_max": _reduce(np.max, widen=False),
    "reduce_min": _reduce(np.min, widen=False),
    "reduce_prod": _reduce(np.prod),
    "argmax": _argmax,
    "reshape": _reshape,
    "transpose": lambda a, x: np.transpose(x, a["perm"]),
    "flatten": _flatten,
    "concat": lambda a, *xs: np.concatenate(xs, axis=a["axis"]),
    "split": _split,
    "slice": _slice,
    "gather": lambda a, d, i: np.take(d, i, axis=a["axis"]),
    "gather_elements": _gather_elements,
    "unsqueeze": _unsqueeze,
    "squeeze": _squeeze,
    "expand": _expand,
    "tile": lambda a, x, r: np.tile(x, [int(i) for i in r]),
    "shape": _shape,
    "constant_of_shape": _constant_of_shape,
    "range": _range,
    "trilu": _trilu,
    "pad": _pad,
    "attention": _attention,
    "gla": _gla,
    "tan": _float_only(np.tan),
    "asin": _float_only(np.arcsin),
    "acos": _float_only(np.arccos),
    "atan": _float_only(np.arctan),
    "sinh": _float_only(np.sinh),
    "cosh": _float_only(np.cosh),
    "asinh": _float_only(np.arcsinh),
    "acosh": _float_only(np.arccosh),
    "atanh": _float_only(np.arctanh),
    "round": lambda a, x: _like(np.round(x), x),
    "sign": lambda a, x: _like(np.sign(x), x),
    "softplus": _float_only(lambda w: np.maximum(w, 0) + np.log1p(np.exp(-np.abs(w)))),
    "argmin": _argmin,
    "cumsum": _running(np.cumsum, 0),
    "topk": _topk,
    "einsum": _einsum,
    "conv_transpose": _conv_transpose,
    "resize": _resize,
    "cumprod": _running(np.cumprod, 1),
    "det": _float_only(np.linalg.det),
    "gather_nd": _gather_nd,
    "scatter_elements": _scatter_elements,
    "scatter_nd": _scatter_nd,
}
