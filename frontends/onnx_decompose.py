"""Converters that spell one ONNX node as several IR ops, where that is exact (up to one float
rounding per op) and cheap: the piecewise activations, the Lp reductions and norms, the
normalisations over groups and instances, DepthToSpace / SpaceToDepth as reshape and transpose,
OneHot as a comparison, Xor as not-equal.

Every intermediate is computed in the input's dtype, as the ONNX function bodies of these ops do
(onnx defines most of them as such functions), so the decomposition rounds where onnxruntime
rounds.
"""
from __future__ import annotations

import numpy as np

from sbcompile.frontends.onnx_lowering import NodeView
from sbcompile.frontends.onnx_ops import _window_attrs, reduce_axes
from sbcompile.frontends.onnx_registry import _converter


class _Expr:
    """Elementwise helpers over values shaped like the node's first input."""

    def __init__(self, n: NodeView, like: str | None = None):
        self.n = n
        self.x = like or n.inputs[0]
        self.value = n.type(self.x)

    def const(self, v, suffix: str = "c") -> str:
        return self.n.param(np.array(v, dtype=self.value.dtype), suffix)

    def op(self, op: str, *inputs: str, out: str | None = None, dtype: str | None = None,
           **attrs) -> str:
        """One IR node; the node's own output when ``out`` is "y"."""
        target = self.n.outputs[0] if out == "y" else out or self.n.temp(
            self.value.shape, dtype or self.value.dtype)
        return self.n.emit(op, list(inputs), target, **attrs)

    def compare(self, op: str, a: str, b: str) -> str:
        return self.op(op, a, b, dtype="bool")


def _float_input(n: NodeView) -> None:
    if n.type(n.inputs[0]).dtype not in ("float32", "float64", "float16"):
        raise n.refuse(f"input of dtype {n.type(n.inputs[0]).dtype} is not supported")


# ---- activations --------------------------------------------------------------------------------
def _hard_sigmoid(e: _Expr, alpha: float, beta: float, out: str | None) -> str:
    affine = e.op("add", e.op("mul", e.x, e.const(alpha, "alpha")), e.const(beta, "beta"))
    return e.op("clip", affine, e.const(0.0, "zero"), e.const(1.0, "one"), out=out)


@_converter("HardSigmoid", attrs=("alpha", "beta"))
def _hardsigmoid(n: NodeView) -> None:
    """max(0, min(1, alpha * x + beta))."""
    _float_input(n)
    _hard_sigmoid(_Expr(n), float(n.attr("alpha", 0.2)), float(n.attr("beta", 0.5)), "y")


@_converter("HardSwish")
def _hardswish(n: NodeView) -> None:
    """x * HardSigmoid(x; alpha=1/6, beta=1/2)."""
    _float_input(n)
    e = _Expr(n)
    e.op("mul", e.x, _hard_sigmoid(e, 1.0 / 6.0, 0.5, None), out="y")


@_converter("Mish")
def _mish(n: NodeView) -> None:
    """x * tanh(softplus(x))."""
    _float_input(n)
    e = _Expr(n)
    e.op("mul", e.x, e.op("tanh", e.op("softplus", e.x)), out="y")


@_converter("Softsign")
def _softsign(n: NodeView) -> None:
    """x / (1 + |x|)."""
    _float_input(n)
    e = _Expr(n)
    e.op("div", e.x, e.op("add", e.op("abs", e.x), e.const(1.0, "one")), out="y")


@_converter("Swish", attrs=("alpha",))
def _swish(n: NodeView) -> None:
    """x * sigmoid(alpha * x); alpha = 1 is silu."""
    _float_input(n)
    e, alpha = _Expr(n), float(n.attr("alpha", 1.0))
    if alpha == 1.0:
        e.op("silu", e.x, out="y")
        return
    e.op("mul", e.x, e.op("sigmoid", e.op("mul", e.x, e.const(alpha, "alpha"))), out="y")


def _exp_minus_one(e: _Expr, x: str, alpha: float) -> str:
    """alpha * (exp(x) - 1)."""
    return e.op("mul", e.op("sub", e.op("exp", x), e.const(1.0, "one")), e.const(alpha, "alpha"))


@_converter("Elu", attrs=("alpha",))
def _elu(n: NodeView) -> None:
    """x if x >= 0 else alpha * (exp(x) - 1)."""
    _float_input(n)
    e = _Expr(n)
    negative = e.compare("less", e.x, e.const(0.0, "zero"))
    e.op("where", negative, _exp_minus_one(e, e.x, float(n.attr("alpha", 1.0))), e.x, out="y")


@_converter("Selu", attrs=("alpha", "gamma"))
def _selu(n: NodeView) -> None:
    """gamma * (x if x > 0 else alpha * exp(x) - alpha)."""
    _float_input(n)
    e = _Expr(n)
    alpha = float(n.attr("alpha", 1.67326319217681884765625))
    gamma = float(n.attr("gamma", 1.05070102214813232421875))
    positive = e.compare("greater", e.x, e.const(0.0, "zero"))
    low = e.op("sub", e.op("mul", e.op("exp", e.x), e.const(alpha, "alpha")),
               e.const(alpha, "alpha"))
    e.op("mul", e.op("where", positive, e.x, low), e.const(gamma, "gamma"), out="y")


@_converter("Celu", attrs=("alpha",))
def _celu(n: NodeView) -> None:
    """max(0, x) + min(0, alpha * (exp(x / alpha) - 1))."""
    _float_input(n)
    e, alpha = _Expr(n), float(n.attr("alpha", 1.0))
    zero = e.const(0.0, "zero")
    scaled = e.op("div", e.x, e.const(alpha, "alpha"))
    e.op("add", e.op("max", e.x, zero), e.op("min", _exp_minus_one(e, scaled, alpha), zero),
         out="y")


@_converter("ThresholdedRelu", attrs=("alpha",))
def _thresholded_relu(n: NodeView) -> None:
    """x if x > alpha else 0."""
    _float_input(n)
    e = _Expr(n)
    above = e.compare("greater", e.x, e.const(float(n.attr("alpha", 1.0)), "alpha"))
    e.op("where", above, e.x, e.const(0.0, "zero"), out="y")


@_converter("Shrink", attrs=("bias", "lambd"))
def _shrink(n: NodeView) -> None:
    """x + bias if x < -lambd, x - bias if x > lambd, else 0."""
    e = _Expr(n)
    lambd, bias = float(n.attr("lambd", 0.5)), float(n.attr("bias", 0.0))
    low = e.compare("less", e.x, e.const(-lambd, "low"))
    high = e.compare("greater", e.x, e.const(lambd, "high"))
    inner = e.op("where", high, e.op("sub", e.x, e.const(bias, "bias")), e.const(0.0, "zero"))
    e.op("where", low, e.op("add", e.x, e.const(bias, "bias")), inner, out="y")


@_converter("Xor")
def _xor(n: NodeView) -> None:
    """a != b on booleans."""
    out = n.type(n.outputs[0])
    n.emit("not", [n.emit("equal", n.inputs, n.temp(out.shape, "bool"))])


# ---- reductions and Lp norms --------------------------------------------------------------------
def _kept_shape(n: NodeView, axes: list[int] | None, runtime: list[str] = ()) -> tuple:
    shape = n.type(n.inputs[0]).shape
    if runtime:
        return ("?",) * len(shape)
    if axes is None:
        return (1,) * len(shape)
    picked = {a % len(shape) for a in axes}
    return tuple(1 if i in picked else d for i, d in enumerate(shape))


@_converter("ReduceL1", "ReduceL2", "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp",
            attrs=("axes", "keepdims", "noop_with_empty_axes"))
def _reduce_composite(n: NodeView) -> None:
    """L1: sum |x|; L2: sqrt(sum x^2); SumSquare: sum x^2; LogSum: log(sum x); LogSumExp:
    log(sum exp(x - max)) + max (the max keeps exp from overflowing)."""
    op = n.op_type
    e = _Expr(n)
    axes = reduce_axes(n)
    if axes == "noop":  # the elementwise part still applies, over no axes
        elementwise = {"ReduceL1": ("abs", e.x), "ReduceL2": ("abs", e.x),
                       "ReduceSumSquare": ("mul", e.x, e.x), "ReduceLogSum": ("log", e.x),
                       "ReduceLogSumExp": ("identity", e.x)}[op]
        e.op(*elementwise, out="y")
        return
    runtime, attr = axes
    if op in ("ReduceLogSum", "ReduceLogSumExp"):
        _float_input(n)
    keepdims = int(n.attr("keepdims", 1))
    out = n.type(n.outputs[0])

    def reduce(kind: str, value: str, target: str | None, keep: int = keepdims) -> str:
        return n.emit(kind, [value, *runtime], target, axes=attr, keepdims=keep)

    reduced = n.temp(out.shape, out.dtype)
    if op == "ReduceL1":
        reduce("reduce_sum", e.op("abs", e.x), None)
    elif op == "ReduceSumSquare":
        reduce("reduce_sum", e.op("mul", e.x, e.x), None)
    elif op == "ReduceL2":
        n.emit("sqrt", [reduce("reduce_sum", e.op("mul", e.x, e.x), reduced)])
    elif op == "ReduceLogSum":
        n.emit("log", [reduce("reduce_sum", e.x, reduced)])
    else:
        peak = reduce("reduce_max", e.x, n.temp(_kept_shape(n, attr, runtime), out.dtype), 1)
        total = reduce("reduce_sum", e.op("exp", e.op("sub", e.x, peak)), reduced)
        if not keepdims:
            peak = reduce("reduce_max", e.x, n.temp(out.shape, out.dtype))
        n.emit("add", [n.emit("log", [total], n.temp(out.shape, out.dtype)), peak])


@_converter("LpNormalization", attrs=("axis", "p"))
def _lp_normalization(n: NodeView) -> None:
    """x / ||x||_p along `axis` (p = 1 or 2); a zero norm leaves the zeros as they are."""
    _float_input(n)
    p, axis = int(n.attr("p", 2)), int(n.attr("axis", -1))
    if p not in (1, 2):
        raise n.refuse(f"p={p} is not supported (1 or 2)")
    e = _Expr(n)
    kept = _kept_shape(n, [axis])
    part = e.op("abs", e.x) if p == 1 else e.op("mul", e.x, e.x)
    norm = n.emit("reduce_sum", [part], n.temp(kept, e.value.dtype), axes=[axis], keepdims=1)
    if p == 2:
        norm = n.emit("sqrt", [norm], n.temp(kept, e.value.dtype))
    zero = n.emit("equal", [norm, e.const(0.0, "zero")], n.temp(kept, "bool"))
    norm = n.emit("where", [zero, e.const(1.0, "one"), norm], n.temp(kept, e.value.dtype))
    e.op("div", e.x, norm, out="y")


# ---- normalisation over instances and groups ----------------------------------------------------
def _normalise(n: NodeView, x: str, shape: tuple, axes: list[int], eps: float) -> str:
    """(x - mean) / sqrt(var + eps) over ``axes`` (biased variance)."""
    dtype = n.type(x).dtype
    kept = tuple(1 if i in axes else d for i, d in enumerate(shape))
    mean = n.emit("reduce_mean", [x], n.temp(kept, dtype), axes=axes, keepdims=1)
    d = n.emit("sub", [x, mean], n.temp(shape, dtype))
    var = n.emit("reduce_mean", [n.emit("mul", [d, d], n.temp(shape, dtype))],
                 n.temp(kept, dtype), axes=axes, keepdims=1)
    root = n.emit("sqrt", [n.emit("add", [var, n.param(np.array(eps, dtype), "epsilon")],
                                  n.temp(kept, dtype))], n.temp(kept, dtype))
    return n.emit("div", [d, root], n.temp(shape, dtype))


def _per_channel(n: NodeView, y: str, scale: str, bias: str, rank: int) -> None:
    """y * scale[C] + bias[C] along axis 1."""
    x = n.type(n.inputs[0])
    shape = np.array([-1] + [1] * (rank - 2), np.int64)
    s = n.emit("reshape", [scale, n.param(shape, "channel_shape")],
               n.temp((n.type(scale).shape[0],) + (1,) * (rank - 2), n.type(scale).dtype))
    b = n.emit("reshape", [bias, n.param(shape, "channel_shape")],
               n.temp((n.type(bias).shape[0],) + (1,) * (rank - 2), n.type(bias).dtype))
    n.emit("add", [n.emit("mul", [y, s], n.temp(x.shape, x.dtype)), b])


@_converter("InstanceNormalization", attrs=("epsilon",))
def _instance_norm(n: NodeView) -> None:
    """Normalised over the spatial axes of each sample and channel, then scale and bias per
    channel."""
    _float_input(n)
    x = n.type(n.inputs[0])
    rank = len(x.shape)
    y = _normalise(n, n.inputs[0], x.shape, list(range(2, rank)), float(n.attr("epsilon", 1e-5)))
    _per_channel(n, y, n.inputs[1], n.inputs[2], rank)


@_converter("GroupNormalization", attrs=("epsilon", "num_groups", "stash_type"))
def _group_norm(n: NodeView) -> None:
    """Normalised over each group of channels (with their spatial axes), then scale and bias per
    channel. Opset 18's per-group scale and bias ([num_groups]) are repeated per channel."""
    _float_input(n)
    if n.attr("stash_type", 1) != 1:
        raise n.refuse(f"stash_type={n.attr('stash_type')} is not supported")
    x = n.type(n.inputs[0])
    groups, rank = int(n.attr("num_groups")), len(x.shape)
    channels = x.shape[1]
    if not isinstance(channels, int):
        raise n.refuse("the channel dim must be static")
    rest = x.shape[1:]
    grouped_shape = (x.shape[0], groups, int(np.prod(rest)) // groups
                     if all(isinstance(d, int) for d in rest) else "?")
    grouped = n.emit("reshape", [n.inputs[0], n.param(np.array([0, groups, -1], np.int64),
                                                      "grouped")],
                     n.temp(grouped_shape, x.dtype))
    y = _normalise(n, grouped, grouped_shape, [2], float(n.attr("epsilon", 1e-5)))
    y = n.emit("reshape", [y, n.emit("shape", [n.inputs[0]], n.temp((rank,), "int64"))],
               n.temp(x.shape, x.dtype))
    scale, bias = n.inputs[1], n.inputs[2]
    if n.type(scale).shape[0] != channels:
        scale, bias = (_repeat_per_channel(n, v, channels // groups) for v in (scale, bias))
    _per_channel(n, y, scale, bias, rank)


def _repeat_per_channel(n: NodeView, name: str, repeat: int) -> str:
    arr = n.const(n.inputs.index(name))
    if arr is None:
        raise n.refuse("a per-group scale or bias must be a constant")
    return n.param(np.repeat(arr, repeat), "per_channel")


# ---- data movement ------------------------------------------------------------------------------
def _block_move(n: NodeView, steps: list[tuple[list[int], str]]) -> None:
    x = n.type(n.inputs[0])
    value = n.inputs[0]
    for i, (dims, kind) in enumerate(steps):
        last = i == len(steps) - 1
        if kind == "reshape":
            value = n.emit("reshape", [value, n.param(np.array(dims, np.int64), "shape")],
                           None if last else n.temp(tuple(dims), x.dtype))
        else:
            shape = n.type(value).shape
            value = n.emit("transpose", [value], None if last else n.temp(
                tuple(shape[p] for p in dims), x.dtype), perm=dims)


@_converter("DepthToSpace", attrs=("blocksize", "mode"))
def _depth_to_space(n: NodeView) -> None:
    """[N, C, H, W] -> [N, C/b^2, H*b, W*b]: DCR reads the channel as (b, b, C/b^2), CRD as
    (C/b^2, b, b)."""
    b = int(n.attr("blocksize"))
    nb, c, h, w = _static_nchw(n)
    if n.attr("mode", "DCR") == "DCR":
        split, perm = [nb, b, b, c // (b * b), h, w], [0, 3, 4, 1, 5, 2]
    else:
        split, perm = [nb, c // (b * b), b, b, h, w], [0, 1, 4, 2, 5, 3]
    _block_move(n, [(split, "reshape"), (perm, "transpose"),
                    ([nb, c // (b * b), h * b, w * b], "reshape")])


@_converter("SpaceToDepth", attrs=("blocksize", "mode"))
def _space_to_depth(n: NodeView) -> None:
    """[N, C, H, W] -> [N, C*b^2, H/b, W/b], the channel written as (b, b, C) (DCR) or
    (C, b, b) (CRD)."""
    b = int(n.attr("blocksize"))
    nb, c, h, w = _static_nchw(n)
    perm = [0, 3, 5, 1, 2, 4] if n.attr("mode", "DCR") == "DCR" else [0, 1, 3, 5, 2, 4]
    _block_move(n, [([nb, c, h // b, b, w // b, b], "reshape"), (perm, "transpose"),
                    ([nb, c * b * b, h // b, w // b], "reshape")])


def _static_nchw(n: NodeView) -> tuple[int, int, int, int]:
    shape = n.type(n.inputs[0]).shape
    if len(shape) != 4 or not all(isinstance(d, int) for d in shape):
        raise n.refuse(f"needs a static 4-D input, got {list(shape)}")
    return shape


@_converter("OneHot", attrs=("axis",))
def _one_hot(n: NodeView) -> None:
    """values[1] where the index (a negative one counted from depth) equals the position along
    the new axis, else values[0] (out-of-range indices hit nothing)."""
    idx, out = n.type(n.inputs[0]), n.type(n.outputs[0])
    rank = len(idx.shape) + 1
    axis = int(n.attr("axis", -1)) % rank
    index_dtype = "int64" if idx.dtype.startswith("float") else idx.dtype
    depth = n.emit("cast", [n.inputs[1]], n.temp(n.type(n.inputs[1]).shape, index_dtype),
                   to=index_dtype)
    index = n.emit("cast", [n.inputs[0]], n.temp(idx.shape, index_dtype), to=index_dtype)
    negative = n.emit("less", [index, n.param(np.array(0, index_dtype), "zero")],
                      n.temp(idx.shape, "bool"))
    wrapped = n.emit("where", [negative, n.emit("add", [index, depth],
                                                n.temp(idx.shape, index_dtype)), index],
                     n.temp(idx.shape, index_dtype))
    expanded = n.emit("unsqueeze", [wrapped, n.param(np.array([axis], np.int64), "axis")],
                      n.temp(idx.shape[:axis] + (1,) + idx.shape[axis:], index_dtype))
    positions = n.emit("range", [n.param(np.array(0, index_dtype), "start"),
                                 n.emit("reshape", [depth, n.param(np.zeros(0, np.int64),
                                                                    "scalar")],
                                        n.temp((), index_dtype)),
                                 n.param(np.array(1, index_dtype), "delta")],
                       n.temp(("depth",), index_dtype))
    column = n.param(np.array([-1] + [1] * (rank - 1 - axis), np.int64), "column")
    positions = n.emit("reshape", [positions, column],
                       n.temp(("depth",) + (1,) * (rank - 1 - axis), index_dtype))
    hit = n.emit("equal", [expanded, positions], n.temp(out.shape, "bool"))
    on_off = [n.emit("gather", [n.inputs[2], n.param(np.array(i, np.int64), "pick")],
                     n.temp((), out.dtype), axis=0) for i in (1, 0)]
    n.emit("where", [hit, *on_off])


# ---- losses (exported with the models that were trained through them) ---------------------------
def _nll(n: NodeView, log_prob: str, target: str, weight: str, loss_out: str) -> None:
    """-log_prob[n, target[n, ...], ...] (times weight[target]), ignore_index scoring 0, then
    the reduction: none, sum, or mean = sum / (sum of the weights counted)."""
    scores, labels = n.type(log_prob), n.type(target)
    dtype, shape = scores.dtype, labels.shape
    reduction = n.attr("reduction", "mean")
    if reduction not in ("none", "sum", "mean"):
        raise n.refuse(f"reduction '{reduction}' is not supported")
    ignore = n.attr("ignore_index")
    ignored = None
    if ignore is not None:
        ignored = n.emit("equal", [target, n.param(np.array(ignore, labels.dtype), "ignore")],
                         n.temp(shape, "bool"))
        target = n.emit("where", [ignored, n.param(np.array(0, labels.dtype), "zero"), target],
                        n.temp(shape, labels.dtype))
    index = n.emit("unsqueeze", [target, n.param(np.array([1], np.int64), "axis")],
                   n.temp(shape[:1] + (1,) + shape[1:], labels.dtype))
    picked = n.emit("gather_elements", [log_prob, index],
                    n.temp(shape[:1] + (1,) + shape[1:], dtype), axis=1)
    picked = n.emit("squeeze", [picked, n.param(np.array([1], np.int64), "axis")],
                    n.temp(shape, dtype))
    loss = n.emit("neg", [picked], n.temp(shape, dtype))
    counted = None
    if weight:
        counted = n.emit("gather", [weight, target], n.temp(shape, dtype), axis=0)
        loss = n.emit("mul", [loss, counted], n.temp(shape, dtype))
    if ignored is not None:
        zero = n.param(np.array(0, dtype), "zero")
        loss = n.emit("where", [ignored, zero, loss], n.temp(shape, dtype))
        counted = n.emit("where", [ignored, zero, counted or n.param(np.array(1, dtype), "one")],
                         n.temp(shape, dtype))
    if reduction == "none":
        n.emit("identity", [loss], loss_out)
        return
    total = n.emit("reduce_sum", [loss], loss_out if reduction == "sum" else n.temp((), dtype),
                   axes=None, keepdims=0)
    if reduction == "sum":
        return
    if counted is None:
        n.emit("reduce_mean", [loss], loss_out, axes=None, keepdims=0)
        return
    count = n.emit("reduce_sum", [counted], n.temp((), dtype), axes=None, keepdims=0)
    n.emit("div", [total, count], loss_out)


@_converter("NegativeLogLikelihoodLoss", attrs=("ignore_index", "reduction"))
def _nll_loss(n: NodeView) -> None:
    _float_input(n)
    _nll(n, n.inputs[0], n.inputs[1], n.input(2), n.outputs[0])


@_converter("SoftmaxCrossEntropyLoss", attrs=("ignore_index", "reduction"))
def _softmax_cross_entropy(n: NodeView) -> None:
    """NegativeLogLikelihoodLoss of log_softmax(scores) over the class axis 1; the optional
    second output is that log_softmax."""
    _float_input(n)
    scores = n.type(n.inputs[0])
    log_prob = n.emit("log_softmax", [n.inputs[0]], n.outputs[1] if n.used(1) else
                      n.temp(scores.shape, scores.dtype), axis=1)
    _nll(n, log_prob, n.inputs[1], n.input(2), n.outputs[0])


# ---- selection and pooling ------------------------------------------------------------------
@_converter("Hardmax", attrs=("axis",))
def _hardmax(n: NodeView) -> None:
    """1 at the first maximum along `axis`, 0 elsewhere: argmax compared with the positions."""
    x = n.type(n.inputs[0])
    axis = int(n.attr("axis", -1)) % len(x.shape)
    size = x.shape[axis]
    if not isinstance(size, int):
        raise n.refuse("the axis must be static")
    kept = x.shape[:axis] + (1,) + x.shape[axis + 1:]
    top = n.emit("argmax", [n.inputs[0]], n.temp(kept, "int64"), axis=axis, keepdims=1)
    positions = np.arange(size, dtype=np.int64).reshape((size,) + (1,) * (len(x.shape) - 1 - axis))
    hit = n.emit("equal", [top, n.param(positions, "positions")], n.temp(x.shape, "bool"))
    n.emit("cast", [hit], to=x.dtype)


@_converter("LpPool", attrs=("auto_pad", "ceil_mode", "dilations", "kernel_shape", "p", "pads",
                             "strides"))
def _lp_pool(n: NodeView) -> None:
    """(sum over the window of |x|^p)^(1/p): the window sum is an average pool counting the pads
    (zeros) times the window size."""
    _float_input(n)
    if n.attr("ceil_mode", 0):
        raise n.refuse("ceil_mode=1 is not supported")
    e = _Expr(n)
    p = int(n.attr("p", 2))
    kernel = [int(k) for k in n.attr("kernel_shape")]
    powered = e.op("mul", e.x, e.x) if p == 2 else e.op("pow", e.op("abs", e.x),
                                                        e.const(float(p), "p"))
    out = n.type(n.outputs[0])
    mean = n.emit("avg_pool", [powered], n.temp(out.shape, out.dtype), kernel=kernel,
                  count_include_pad=1, **_window_attrs(n, kernel))
    total = n.emit("mul", [mean, e.const(float(np.prod(kernel)), "window")],
                   n.temp(out.shape, out.dtype))
    if p == 2:
        n.emit("sqrt", [total])
    else:
        n.emit("pow", [total, e.const(1.0 / p, "root")])


@_converter("EyeLike", attrs=("dtype", "k"))
def _eye_like(n: NodeView) -> None:
    """A constant: ones on diagonal k of the input's (static) 2-D shape."""
    shape = n.type(n.inputs[0]).shape
    if len(shape) != 2 or not all(isinstance(d, int) for d in shape):
        raise n.refuse(f"needs a static 2-D input, got {list(shape)}")
    dtype = n.type(n.outputs[0]).dtype
    n.emit("identity", [n.param(np.eye(*shape, k=int(n.attr("k", 0)), dtype=dtype), "eye")])
