"""PyTorch kernels of the float, shape and attention ops (docs/OPS.md), one per IR op.

Each kernel is ``kernel(a, *inputs)`` like the reference's (``runtime/reference_float.py``);
``a`` holds the op's attributes plus ``_wide``: True follows the reference's float order
(products, sums, norms and transcendental functions in float64, rounded once to the input's
dtype), False computes in the input's dtype (float32 on a GPU). One float32 add, subtract,
multiply, divide or square root already equals the float64 result rounded once, so those run
in the input's dtype either way. Integer inputs follow integer semantics. Shape operands
(``reshape``'s shape, ``slice``'s starts, ...) may be tensors or Python lists.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from sbcompile.ir.ops import attention_keep
from sbcompile.runtime.torch.spike_ops import conv_nd, decode_conv, decode_groups

# ---- helpers ------------------------------------------------------------------------------------


def ints(v) -> list[int]:
    """A shape operand as a list of Python ints."""
    if isinstance(v, torch.Tensor):
        return [int(i) for i in v.reshape(-1).tolist()]
    return [int(i) for i in v]


def _w(a, x):
    """x in the compute dtype: float64 for floats when following the reference."""
    return x.double() if a["_wide"] and x.is_floating_point() else x


def _like(y, x):
    return y.to(x.dtype)


def _axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def _float_fn(fn):
    """A float function in the compute dtype, rounded to the input dtype."""
    return lambda a, x: _like(fn(_w(a, x)), x)


def _same(fn):
    """An op exact in the input's dtype (one correctly rounded operation, or a selection)."""
    return lambda a, *xs: fn(*xs)


# ---- linear algebra -----------------------------------------------------------------------------
def _conv(a, x, w, b=None):
    y = conv_nd(_w(a, x), _w(a, w), None if b is None else _w(a, b), a["strides"] or [],
                a["pads"] or [], a["dilations"] or [], a["group"])
    return _like(y, x)


def _linear(a, x, w, b=None):
    y = F.linear(_w(a, x), _w(a, w), None if b is None else _w(a, b))
    return _like(y, x)


def _matmul(a, x, y):
    return _like(torch.matmul(_w(a, x), _w(a, y)), x)


def _conv_transpose(a, x, w, b=None):
    n_sp = x.dim() - 2
    pads = a["pads"] or [0] * (2 * n_sp)
    if pads[:n_sp] != pads[n_sp:]:
        raise NotImplementedError("conv_transpose with asymmetric pads")
    fn = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[n_sp]
    y = fn(_w(a, x), _w(a, w), None if b is None else _w(a, b), a["strides"] or 1,
           pads[:n_sp], a["output_padding"] or 0, a["group"], a["dilations"] or 1)
    return _like(y, x)


# ---- pooling ------------------------------------------------------------------------------------
def _pool_args(a, x):
    n_sp = x.dim() - 2
    pads = a["pads"] or [0] * (2 * n_sp)
    return n_sp, pads, a["strides"] or a["kernel"], a["dilations"] or [1] * n_sp


def _padded(x, pads, fill):
    n_sp = len(pads) // 2
    widths = []
    for i in reversed(range(n_sp)):
        widths += [pads[i], pads[i + n_sp]]
    return F.pad(x, widths, value=fill) if any(widths) else x


def _max_pool(a, x):
    n_sp, pads, strides, dilations = _pool_args(a, x)
    fill = float("-inf") if x.is_floating_point() else torch.iinfo(x.dtype).min
    if pads[:n_sp] != pads[n_sp:] or any(2 * p > k for p, k in zip(pads, a["kernel"])):
        x, pads = _padded(x, pads, fill), [0] * (2 * n_sp)
    fn = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[n_sp]
    return fn(x, a["kernel"], strides, pads[:n_sp], dilations, bool(a["ceil_mode"]))


def _avg_pool(a, x):
    n_sp, pads, strides, dilations = _pool_args(a, x)
    if any(d != 1 for d in dilations) or pads[:n_sp] != pads[n_sp:] or \
            any(2 * p > k for p, k in zip(pads, a["kernel"])):
        raise NotImplementedError("avg_pool with dilations or asymmetric pads")
    fn = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[n_sp]
    y = fn(_w(a, x), a["kernel"], strides, pads[:n_sp], bool(a["ceil_mode"]),
           bool(a["count_include_pad"]))
    return _like(y, x)


def _global(reduce):
    def kernel(a, x):
        dims = tuple(range(2, x.dim()))
        if reduce == "mean":
            return _like(_w(a, x).mean(dim=dims, keepdim=True), x)
        return x.amax(dim=dims, keepdim=True)
    return kernel


# ---- elementwise --------------------------------------------------------------------------------
def _div(a, x, y):
    if not x.is_floating_point():
        safe = torch.where(y == 0, torch.ones_like(y), y)
        return torch.div(x, safe, rounding_mode="trunc").to(x.dtype)
    return x / y


def _arith(fn):
    """add / sub / mul: exact in float32; integers keep x's dtype (wrapping like numpy)."""
    return lambda a, x, y: fn(x, y).to(x.dtype)


def _pow(a, x, y):
    if not x.is_floating_point() and not y.is_floating_point() and bool((y >= 0).all()):
        return torch.pow(x.long(), y.long()).to(x.dtype)
    z = torch.pow(x.double(), y.double())
    return (torch.trunc(z) if not x.is_floating_point() else z).to(x.dtype)


def _mod(a, x, y):
    return (torch.fmod(x, y) if a["fmod"] else torch.remainder(x, y)).to(x.dtype)


def _cast(a, x):
    to = getattr(torch, a["to"]) if a["to"] != "bool" else torch.bool
    if not to.is_floating_point and to != torch.bool and x.is_floating_point():
        return torch.trunc(x).to(to)
    return x.to(to)


def _clip(a, x, lo=None, hi=None):
    y = x
    if lo is not None:
        y = torch.maximum(y, lo.to(x.dtype))
    if hi is not None:
        y = torch.minimum(y, hi.to(x.dtype))
    return y


def _where(a, c, x, y):
    return torch.where(c, x, y.to(x.dtype))


# ---- activations --------------------------------------------------------------------------------
def _gelu(a, x):
    return _like(F.gelu(_w(a, x), approximate=a["approximate"]), x)


def _softmax(a, x):
    return _like(torch.softmax(_w(a, x), dim=a["axis"]), x)


def _log_softmax(a, x):
    return _like(torch.log_softmax(_w(a, x), dim=a["axis"]), x)


def _leaky_relu(a, x):
    return _like(torch.where(x >= 0, _w(a, x), _w(a, x) * a["alpha"]), x)


def _prelu(a, x, s):
    return _like(torch.where(x >= 0, _w(a, x), _w(a, x) * _w(a, s)), x)


# ---- normalisation ------------------------------------------------------------------------------
def _norm_dims(axis: int, rank: int) -> tuple[int, ...]:
    return tuple(range(_axis(axis, rank), rank))


def _layer_norm(a, x, scale, bias=None):
    w = _w(a, x)
    dims = _norm_dims(a["axis"], x.dim())
    mean = w.mean(dim=dims, keepdim=True)
    var = ((w - mean) ** 2).mean(dim=dims, keepdim=True)
    y = (w - mean) / torch.sqrt(var + a["epsilon"]) * _w(a, scale)
    return _like(y if bias is None else y + _w(a, bias), x)


def _rms_norm(a, x, scale=None):
    w = _w(a, x)
    dims = _norm_dims(a["axis"], x.dim())
    y = w / torch.sqrt((w * w).mean(dim=dims, keepdim=True) + a["epsilon"])
    return _like(y if scale is None else y * _w(a, scale), x)


def _batch_norm(a, x, scale, bias, mean, var):
    shape = (1, -1) + (1,) * (x.dim() - 2)
    s, b, m, v = (_w(a, t).reshape(shape) for t in (scale, bias, mean, var))
    return _like((_w(a, x) - m) / torch.sqrt(v + a["epsilon"]) * s + b, x)


# ---- reductions ---------------------------------------------------------------------------------
def _reduce(kind: str):
    def kernel(a, x, runtime_axes=None):
        axes = a["axes"]
        if runtime_axes is not None and len(ints(runtime_axes)):
            axes = ints(runtime_axes)
        dims = tuple(range(x.dim())) if axes is None else tuple(_axis(i, x.dim()) for i in axes)
        keep = bool(a["keepdims"])
        if kind in ("max", "min"):
            if x.numel() == 0:
                raise NotImplementedError(f"reduce_{kind} over no elements")
            fn = torch.amax if kind == "max" else torch.amin
            return fn(x, dim=dims, keepdim=keep) if dims else x
        src = _w(a, x) if x.is_floating_point() else x.long()
        if kind == "prod":
            y = src
            for d in sorted(dims, reverse=True):
                y = torch.prod(y, dim=d, keepdim=keep)
        elif kind == "sum":
            y = src.sum(dim=dims, keepdim=keep) if dims else src
        else:
            y = src.mean(dim=dims, keepdim=keep) if dims else src
        return y.to(x.dtype)
    return kernel


def _arg(fn):
    """argmax / argmin: torch returns the first extreme, as numpy does."""
    def kernel(a, x):
        axis = _axis(a["axis"], x.dim())
        y = fn(x, dim=axis, keepdim=bool(a["keepdims"]))
        return y.to(torch.int64)
    return kernel


# ---- shape and data movement --------------------------------------------------------------------
def _reshape(a, x, shape):
    shape = ints(shape)
    if not a["allowzero"]:
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return x.reshape(shape)


def _transpose(a, x):
    perm = a["perm"] if a["perm"] is not None else list(reversed(range(x.dim())))
    return x.permute(perm)


def _flatten(a, x):
    axis = _axis(a["axis"], x.dim())
    return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))


def _concat(a, *xs):
    return torch.cat([t.to(xs[0].device) for t in xs], dim=a["axis"])


def _split(a, x, split=None):
    axis = _axis(a["axis"], x.dim())
    if split is None:
        n, size = a["num_outputs"], x.shape[axis]
        chunk = -(-size // n)
        sizes = [min(chunk, size - i * chunk) for i in range(n)]
    else:
        sizes = ints(split)
    return tuple(torch.split(x, sizes, dim=axis))


def _slice(a, x, starts, ends, axes=None, steps=None):
    starts, ends = ints(starts), ints(ends)
    axes = list(range(len(starts))) if axes is None else ints(axes)
    steps = [1] * len(starts) if steps is None else ints(steps)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis = _axis(axis, x.dim())
        dim = x.shape[axis]
        start = start + dim if start < 0 else start
        end = end + dim if end < 0 else end
        if step > 0:
            start, end = min(max(start, 0), dim), min(max(end, 0), dim)
            x = x.narrow(axis, start, max(end - start, 0))
            if step > 1:
                x = x[(slice(None),) * axis + (slice(None, None, step),)]
        else:
            start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
            idx = torch.arange(start, end, step, device=x.device)
            x = x.index_select(axis, idx)
    return x


def _gather(a, data, idx):
    axis = _axis(a["axis"], data.dim())
    idx = idx.to(data.device).long()
    idx = torch.where(idx < 0, idx + data.shape[axis], idx)
    out = data.index_select(axis, idx.reshape(-1))
    return out.reshape(tuple(data.shape[:axis]) + tuple(idx.shape) + tuple(data.shape[axis + 1:]))


def _gather_elements(a, data, idx):
    axis = _axis(a["axis"], data.dim())
    idx = idx.long()
    return torch.gather(data, axis, torch.where(idx < 0, idx + data.shape[axis], idx))


def _unsqueeze(a, x, axes):
    axes = ints(axes)
    rank = x.dim() + len(axes)
    axes = sorted(_axis(i, rank) for i in axes)
    for i in axes:
        x = x.unsqueeze(i)
    return x


def _squeeze(a, x, axes=None):
    if axes is None:
        return x.squeeze()
    dims = tuple(_axis(i, x.dim()) for i in ints(axes))
    return x.squeeze(dims)


def _expand(a, x, shape):
    shape = ints(shape)
    target = torch.broadcast_shapes(tuple(x.shape), tuple(shape))
    return x.expand(target).contiguous()


def _tile(a, x, repeats):
    return x.repeat(ints(repeats))


def _shape(a, x):
    return torch.tensor(list(x.shape)[a["start"]:a["end"]], dtype=torch.int64)


def _constant_of_shape(a, shape):
    value = float(a["value"]) if isinstance(a["value"], str) else a["value"]
    dtype = getattr(torch, a["dtype"]) if a["dtype"] != "bool" else torch.bool
    device = shape.device if isinstance(shape, torch.Tensor) else None
    return torch.full(ints(shape), value, dtype=dtype, device=device)


def _range(a, start, limit, delta):
    s, lim, d = (t.item() for t in (start, limit, delta))
    n = max(int(math.ceil((float(lim) - float(s)) / float(d))), 0)
    return (s + torch.arange(n, dtype=torch.int64, device=start.device).to(start.dtype) * d
            ).to(start.dtype)


def _trilu(a, x, k=None):
    k = 0 if k is None else int(ints(k)[0])
    return torch.triu(x, k) if a["upper"] else torch.tril(x, k)


def _pad(a, x, pads, value=None):
    pads = ints(pads)
    n = x.dim()
    widths = []
    for i in reversed(range(n)):
        widths += [pads[i], pads[i + n]]
    mode = a["mode"]
    if mode == "constant":
        fill = 0 if value is None else value.reshape(-1)[0].item()
        return F.pad(x, widths, value=fill)
    if any(p < 0 for p in pads):
        raise NotImplementedError(f"pad mode {mode} with negative pads")
    mode = {"reflect": "reflect", "edge": "replicate", "wrap": "circular"}[mode]
    return F.pad(x, widths[:2 * (n - 2)] if n > 2 else widths, mode=mode)


# ---- attention ----------------------------------------------------------------------------------
_KEEP: dict[tuple, torch.Tensor] = {}


def _keep(tq: int, tk: int, causal: int, window: int, device) -> torch.Tensor:
    """``attention_keep`` on ``device``, made once per shape (no host copy inside a CUDA graph
    capture)."""
    key = (tq, tk, causal, window, str(device))
    if key not in _KEEP:
        _KEEP[key] = torch.from_numpy(attention_keep(tq, tk, causal, window)).to(device)
    return _KEEP[key]


def attend(a, s, v, mask=None):
    """softmax(s + masks) v in s's dtype: s [B, Hq, Tq, Tk] scaled logits, v [B, Hkv, Tk, Dv]
    (GQA); a row whose every key is masked yields zeros."""
    vv = v.to(s.dtype).repeat_interleave(s.shape[1] // v.shape[1], dim=1)
    keep = _keep(s.shape[2], s.shape[3], a["causal"], a["window"], s.device)
    if mask is not None and mask.dtype == torch.bool:
        keep = keep & mask
    elif mask is not None:
        s = s + mask.to(s.dtype)
    s = s.masked_fill(~keep, float("-inf"))
    peak = s.amax(dim=-1, keepdim=True)
    e = torch.exp(s - torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak)))
    total = e.sum(dim=-1, keepdim=True)
    p = torch.where(total > 0, e / torch.where(total > 0, total, torch.ones_like(total)),
                    torch.zeros_like(e))
    return torch.matmul(p, vv)


def _attention(a, q, k, v, mask=None):
    rep = q.shape[1] // k.shape[1]
    kk = _w(a, k).repeat_interleave(rep, dim=1)
    scale = a["scale"] if a["scale"] is not None else 1.0 / math.sqrt(q.shape[3])
    s = torch.matmul(_w(a, q), kk.transpose(-1, -2)) * scale
    return _like(attend(a, s, v, mask), q)


def _gla(a, q, k, v, g):
    """Gated linear attention, recurrent form, [B, T, H, D]."""
    qw, kw, vw, gw = (_w(a, t) for t in (q, k, v, g))
    b, t, h, dk = q.shape
    scale = a["scale"] if a["scale"] is not None else dk ** -0.5
    state = qw.new_zeros((b, h, dk, v.shape[-1]))
    ys = []
    for step in range(t):
        decay = torch.exp(gw[:, step])[..., None]
        state = decay * state + kw[:, step, :, :, None] * vw[:, step, :, None, :]
        ys.append(scale * torch.einsum("bhk,bhkv->bhv", qw[:, step], state))
    return _like(torch.stack(ys, dim=1), q)


def _spike_attention(a, acc, q_vth, k_scale, v, v_scale, mask=None):
    """Logits in float32 from the integer scores (docs/OPS.md), then ``attend``."""
    rep = acc.shape[1] // k_scale.shape[1]
    ks = k_scale.to(torch.float32).repeat_interleave(rep, dim=1).transpose(-1, -2)
    logits = acc.to(torch.float32) * (q_vth.to(torch.float32) * a["scale"]) * ks
    values = v.to(torch.float32) * v_scale.to(torch.float32)
    return attend(a, _w(a, logits), values, mask).to(torch.float32)


def _spike_decode(a, acc, vth, scale=None, bias=None):
    """The float reconstruction in the op's float32 order (``spike_ops``)."""
    vth = vth.to(torch.float32)
    if scale is None:
        y = acc.to(torch.float32) * vth
        if bias is not None:
            shape = (-1,) if a["layout"] != "conv" else (1, -1) + (1,) * (acc.dim() - 2)
            y = y + bias.to(torch.float32).reshape(shape)
        return y
    if a["layout"] == "linear":
        return decode_groups(acc, vth, scale, None if bias is None else bias.to(torch.float32))
    return decode_conv(acc, vth, scale, None if bias is None else bias.to(torch.float32))


# ---- real-model coverage ------------------------------------------------------------------------
def _running(kind: str):
    def kernel(a, x, axis):
        axis = _axis(ints(axis)[0], x.dim())
        w = _w(a, x) if x.is_floating_point() else x.long()
        w = torch.flip(w, (axis,)) if a["reverse"] else w
        y = torch.cumsum(w, axis) if kind == "sum" else torch.cumprod(w, axis)
        if a["exclusive"]:
            first = torch.full_like(y.narrow(axis, 0, 1), 0 if kind == "sum" else 1)
            y = torch.cat([first, y.narrow(axis, 0, y.shape[axis] - 1)], dim=axis)
        y = torch.flip(y, (axis,)) if a["reverse"] else y
        return y.to(x.dtype)
    return kernel


def _topk(a, x, k):
    axis, k = _axis(a["axis"], x.dim()), ints(k)[0]
    key = x if not a["largest"] else (~x if not x.is_floating_point() else -x)
    order = torch.sort(key, dim=axis, stable=True).indices.narrow(axis, 0, k)
    return torch.gather(x, axis, order), order.to(torch.int64)


def _einsum(a, *xs):
    return _like(torch.einsum(a["equation"], *[_w(a, x) for x in xs]), xs[0])


TORCH_KERNELS = {
    "linear": _linear,
    "matmul": _matmul,
    "conv": _conv,
    "conv_transpose": _conv_transpose,
    "max_pool": _max_pool,
    "avg_pool": _avg_pool,
    "global_avg_pool": _global("mean"),
    "global_max_pool": _global("max"),
    "add": _arith(torch.add),
    "sub": _arith(torch.sub),
    "mul": _arith(torch.mul),
    "div": _div,
    "pow": _pow,
    "max": _same(torch.maximum),
    "min": _same(torch.minimum),
    "mod": _mod,
    "equal": _same(torch.eq),
    "less": _same(torch.lt),
    "greater": _same(torch.gt),
    "and": _same(torch.logical_and),
    "or": _same(torch.logical_or),
    "where": _where,
    "neg": _same(torch.neg),
    "abs": _same(torch.abs),
    "sqrt": _same(torch.sqrt),
    "reciprocal": _same(torch.reciprocal),
    "exp": _float_fn(torch.exp),
    "log": _float_fn(torch.log),
    "erf": _float_fn(torch.erf),
    "sin": _float_fn(torch.sin),
    "cos": _float_fn(torch.cos),
    "tan": _float_fn(torch.tan),
    "asin": _float_fn(torch.asin),
    "acos": _float_fn(torch.acos),
    "atan": _float_fn(torch.atan),
    "sinh": _float_fn(torch.sinh),
    "cosh": _float_fn(torch.cosh),
    "asinh": _float_fn(torch.asinh),
    "acosh": _float_fn(torch.acosh),
    "atanh": _float_fn(torch.atanh),
    "floor": _same(torch.floor),
    "ceil": _same(torch.ceil),
    "round": _same(torch.round),
    "sign": _same(torch.sign),
    "not": _same(torch.logical_not),
    "identity": _same(lambda x: x),
    "cast": _cast,
    "clip": _clip,
    "relu": _same(torch.relu),
    "leaky_relu": _leaky_relu,
    "prelu": _prelu,
    "gelu": _gelu,
    "silu": _float_fn(F.silu),
    "sigmoid": _float_fn(torch.sigmoid),
    "tanh": _float_fn(torch.tanh),
    "softplus": _float_fn(lambda w: torch.clamp(w, min=0) + torch.log1p(torch.exp(-w.abs()))),
    "softmax": _softmax,
    "log_softmax": _log_softmax,
    "layer_norm": _layer_norm,
    "rms_norm": _rms_norm,
    "batch_norm": _batch_norm,
    "reduce_mean": _reduce("mean"),
    "reduce_sum": _reduce("sum"),
    "reduce_max": _reduce("max"),
    "reduce_min": _reduce("min"),
    "reduce_prod": _reduce("prod"),
    "argmax": _arg(torch.argmax),
    "argmin": _arg(torch.argmin),
    "reshape": _reshape,
    "transpose": _transpose,
    "flatten": _flatten,
    "concat": _concat,
    "split": _split,
    "slice": _slice,
    "gather": _gather,
    "gather_elements": _gather_elements,
    "unsqueeze": _unsqueeze,
    "squeeze": _squeeze,
    "expand": _expand,
    "tile": _tile,
    "shape": _shape,
    "constant_of_shape": _constant_of_shape,
    "range": _range,
    "trilu": _trilu,
    "pad": _pad,
    "attention": _attention,
    "gla": _gla,
    "cumsum": _running("sum"),
    "cumprod": _running("prod"),
    "topk": _topk,
    "einsum": _einsum,
    "det": _float_fn(torch.linalg.det),
    "spike_attention": _spike_attention,
    "spike_decode": _spike_decode,
}
# Operand slots read as Python ints (shapes, axes, sizes): a small integer parameter read only
# there stays on the host, so a shape never costs a device sync.
SHAPE_SLOTS = {"reshape": {1}, "slice": {1, 2, 3, 4}, "unsqueeze": {1}, "squeeze": {1},
               "expand": {1}, "tile": {1}, "split": {1}, "pad": {1}, "constant_of_shape": {0},
               "trilu": {1}, "topk": {1}, "cumsum": {1}, "cumprod": {1},
               **{f"reduce_{r}": {1} for r in ("mean", "sum", "max", "min", "prod")}}
