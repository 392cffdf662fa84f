"""Converters from ONNX nodes (opset 13 and newer) to IR ops, mostly one to one.

``converter_for(domain, op_type)(view)`` (``onnx_converters``) emits the IR node(s) of one ONNX
node through a ``NodeView``, or raises UnsupportedError naming the node and what is not supported
(an attribute or attribute value, a non-constant operand the IR needs as an attribute, an
optional output in use). Constant nodes fold (``onnx_fold``); only one mixing Inf with other
values reaches its converter, which refuses it.
Fusions across nodes (linear, GELU, norms, attention) happen before, in ``onnx_rewrites``; the
ops it builds in ``FUSED_DOMAIN`` lower here.
"""
from __future__ import annotations

import math

import numpy as np
import onnx

from sbcompile.frontends.onnx_lowering import NodeView, fill_value
from sbcompile.frontends.onnx_model import CUSTOM_DOMAIN, FUSED_DOMAIN
from sbcompile.frontends.onnx_registry import _converter
from sbcompile.ir.graph import DTYPES
from sbcompile.ir.ops import ONNX_OPS, OPS

def _no_extra_outputs(n: NodeView, keep: int = 1) -> None:
    for i in range(keep, len(n.outputs)):
        if n.used(i):
            raise n.refuse(f"output {i} ('{n.outputs[i]}') is not supported")


# ---- one to one ---------------------------------------------------------------------------------
def _direct(n: NodeView) -> None:
    """An ONNX op the op table names for an IR op: same operands, every attribute of the IR op
    read under its ONNX name (ONNX's defaults are the IR's)."""
    spec = OPS[ONNX_OPS[n.op_type]]
    n.emit(spec.name, n.inputs, **{key: n.attr(spec.onnx_attr(key), default)
                                   for key, default in spec.attrs.items()})


for _spec in OPS.values():  # converters below replace it where the mapping is not one to one
    if _spec.onnx:
        _converter(_spec.onnx, attrs=tuple(_spec.onnx_attr(k) for k in _spec.attrs))(_direct)


@_converter("LessOrEqual", "GreaterOrEqual")
def _compare_or_equal(n: NodeView) -> None:
    """a <= b is not(a > b), a >= b is not(a < b)."""
    flipped = n.emit("greater" if n.op_type == "LessOrEqual" else "less", n.inputs,
                     n.temp(n.type(n.outputs[0]).shape, "bool"))
    n.emit("not", [flipped])


@_converter("Max", "Min", "Sum", "Mean")
def _variadic(n: NodeView) -> None:
    """A left fold of the binary op over the inputs; Mean divides the sum by the count."""
    op = {"Max": "max", "Min": "min", "Sum": "add", "Mean": "add"}[n.op_type]
    out = n.type(n.outputs[0])
    if len(n.inputs) == 1:
        n.emit("identity", n.inputs)
        return
    acc, shape = n.inputs[0], n.type(n.inputs[0]).shape
    for i, name in enumerate(n.inputs[1:], start=2):
        shape = _broadcast(shape, n.type(name).shape)
        last = i == len(n.inputs) and n.op_type != "Mean"
        acc = n.emit(op, [acc, name], None if last else n.temp(shape, out.dtype))
    if n.op_type == "Mean":
        n.emit("div", [acc, n.param(np.array(len(n.inputs), dtype=out.dtype), "count")])


def _broadcast(a: tuple, b: tuple) -> tuple:
    """numpy broadcasting of two shapes whose dims may be symbolic (a symbolic dim wins over 1)."""
    width = max(len(a), len(b))
    a, b = (1,) * (width - len(a)) + tuple(a), (1,) * (width - len(b)) + tuple(b)
    return tuple(y if x == 1 else x for x, y in zip(a, b))


@_converter("Constant", attrs=("value", "value_float", "value_floats", "value_int",
                                  "value_ints"))
def _constant(n: NodeView) -> None:
    """Constants fold; one reaches lowering only when it mixes Inf with other values."""
    raise n.refuse("a constant mixing Inf with other values is not supported")


@_converter("Dropout", attrs=("seed",))
def _dropout(n: NodeView) -> None:
    _no_extra_outputs(n)
    training = n.const(2) if n.input(2) else np.array(False)
    if training is None or bool(training):
        raise n.refuse("training mode is not supported")
    n.emit("identity", [n.inputs[0]])


@_converter("Cast", "CastLike", attrs=("to", "saturate"))
def _cast(n: NodeView) -> None:
    to = n.type(n.outputs[0]).dtype
    if to not in DTYPES:
        raise n.refuse(f"cast to {to} is not supported")
    n.emit("cast", [n.inputs[0]], to=to)


# ---- activations --------------------------------------------------------------------------------
@_converter("PRelu")
def _prelu(n: NodeView) -> None:
    x, slope = (n.type(v).shape for v in n.inputs)
    if len(slope) > len(x) or any(isinstance(s, int) and s != 1 and s != d
                                  for s, d in zip(slope[::-1], x[::-1])):
        raise n.refuse(f"slope shape {list(slope)} does not broadcast to the input's {list(x)}")
    n.emit("prelu", n.inputs)


# ---- normalisation ------------------------------------------------------------------------------
@_converter("LayerNormalization", attrs=("axis", "epsilon", "stash_type"))
def _layer_norm(n: NodeView) -> None:
    axis, eps = int(n.attr("axis", -1)), float(n.attr("epsilon", 1e-5))
    n.emit("layer_norm", n.inputs, axis=axis, epsilon=eps)
    if n.used(1) or n.used(2):
        _layer_norm_statistics(n, axis, eps)


def _layer_norm_statistics(n: NodeView, axis: int, eps: float) -> None:
    """The optional outputs Mean and InvStdDev = 1 / sqrt(var + epsilon), in float32 (the
    default stash_type), the normalised axes kept as size 1."""
    if n.attr("stash_type", 1) != 1:
        raise n.refuse(f"stash_type={n.attr('stash_type')} is not supported")
    x = n.type(n.inputs[0])
    rank = len(x.shape)
    axes = list(range(axis % rank, rank))
    stat_shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape))
    xs = n.inputs[0]
    if x.dtype != "float32":
        xs = n.emit("cast", [xs], n.temp(x.shape, "float32"), to="float32")
    mean = n.emit("reduce_mean", [xs], n.outputs[1] if n.used(1) else n.temp(stat_shape, "float32"),
                  axes=axes, keepdims=1)
    if not n.used(2):
        return
    d = n.emit("sub", [xs, mean], n.temp(x.shape, "float32"))
    sq = n.emit("mul", [d, d], n.temp(x.shape, "float32"))
    var = n.emit("reduce_mean", [sq], n.temp(stat_shape, "float32"), axes=axes, keepdims=1)
    shifted = n.emit("add", [var, n.param(np.array(eps, np.float32), "epsilon")],
                     n.temp(stat_shape, "float32"))
    root = n.emit("sqrt", [shifted], n.temp(stat_shape, "float32"))
    n.emit("reciprocal", [root], n.outputs[2])


@_converter("RMSNormalization", attrs=("axis", "epsilon", "stash_type"))
def _rms_norm(n: NodeView) -> None:
    n.emit("rms_norm", n.inputs, axis=int(n.attr("axis", -1)),
           epsilon=float(n.attr("epsilon", 1e-5)))


@_converter("BatchNormalization", attrs=("epsilon", "momentum", "training_mode"))
def _batch_norm(n: NodeView) -> None:
    if n.attr("training_mode", 0):
        raise n.refuse("training_mode=1 is not supported")
    _no_extra_outputs(n)
    n.emit("batch_norm", n.inputs, epsilon=float(n.attr("epsilon", 1e-5)))


# ---- reductions ---------------------------------------------------------------------------------
@_converter("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd",
            attrs=("axes", "keepdims", "noop_with_empty_axes"))
def _reduce(n: NodeView) -> None:
    op = "reduce_" + n.op_type[len("Reduce"):].lower()
    axes = reduce_axes(n)
    if axes == "noop":
        n.emit("identity", [n.inputs[0]])
        return
    runtime, attr = axes
    n.emit(op, [n.inputs[0], *runtime], axes=attr, keepdims=int(n.attr("keepdims", 1)))


def reduce_axes(n: NodeView) -> tuple[list[str], list[int] | None] | str:
    """The axes of a Reduce* node as (runtime axes input or [], axes attribute or None for all),
    or "noop" when none are given and noop_with_empty_axes is set. A runtime axes tensor that
    comes out empty reduces over all axes, so it needs noop_with_empty_axes=0."""
    axes = n.attr("axes")
    if axes is None and n.input(1):
        const = n.const(1)
        if const is None:
            if n.attr("noop_with_empty_axes", 0):
                raise n.refuse("runtime axes with noop_with_empty_axes=1 are not supported")
            return [n.inputs[1]], None
        axes = const.tolist()
    if not axes:
        return "noop" if n.attr("noop_with_empty_axes", 0) else ([], None)
    return [], [int(a) for a in axes]


@_converter("ArgMax", "ArgMin", attrs=("axis", "keepdims", "select_last_index"))
def _argmax(n: NodeView) -> None:
    """select_last_index=1: the first extremum of the reversed axis, counted from the end."""
    op = n.op_type.lower()
    axis, keepdims = int(n.attr("axis", 0)), int(n.attr("keepdims", 1))
    if not n.attr("select_last_index", 0):
        n.emit(op, n.inputs, axis=axis, keepdims=keepdims)
        return
    x = n.type(n.inputs[0])
    axis %= len(x.shape)
    out = n.type(n.outputs[0])
    reversed_x = n.emit("slice", [n.inputs[0], n.param(np.array([-1], np.int64), "starts"),
                                  n.param(np.array([np.iinfo(np.int64).min], np.int64), "ends"),
                                  n.param(np.array([axis], np.int64), "axes"),
                                  n.param(np.array([-1], np.int64), "steps")],
                        n.temp(x.shape, x.dtype))
    index = n.emit(op, [reversed_x], n.temp(out.shape, "int64"), axis=axis, keepdims=keepdims)
    last = n.emit("shape", [n.inputs[0]], n.temp((1,), "int64"), start=axis, end=axis + 1)
    last = n.emit("sub", [last, n.param(np.array([1], np.int64), "one")], n.temp((1,), "int64"))
    n.emit("sub", [last, index])


@_converter("TopK", attrs=("axis", "largest", "sorted"))
def _topk(n: NodeView) -> None:
    n.emit("topk", n.inputs, n.outputs, axis=int(n.attr("axis", -1)),
           largest=int(n.attr("largest", 1)), sorted=int(n.attr("sorted", 1)))


@_converter("Einsum", attrs=("equation",))
def _einsum(n: NodeView) -> None:
    n.emit("einsum", n.inputs, equation=n.attr("equation").replace(" ", ""))


# ---- shape and data movement --------------------------------------------------------------------
@_converter("Split", attrs=("axis", "num_outputs"))
def _split(n: NodeView) -> None:
    attrs = {"axis": int(n.attr("axis", 0))}
    if not n.input(1):
        attrs["num_outputs"] = len(n.outputs)
    n.emit("split", n.inputs, n.outputs, **attrs)


@_converter("Size")
def _size(n: NodeView) -> None:
    shape = n.emit("shape", n.inputs, n.temp((len(n.type(n.inputs[0]).shape),), "int64"))
    n.emit("reduce_prod", [shape], axes=None, keepdims=0)


@_converter("ConstantOfShape", attrs=("value",))
def _constant_of_shape(n: NodeView) -> None:
    value = n.attr("value")
    arr = onnx.numpy_helper.to_array(value) if value is not None else np.zeros(1, np.float32)
    if arr.dtype.name not in DTYPES:
        raise n.refuse(f"value of dtype {arr.dtype.name} is not supported")
    if arr.dtype.kind == "f" and np.isnan(arr).any():
        raise n.refuse("a NaN fill value is not supported")
    n.emit("constant_of_shape", n.inputs, value=fill_value(arr.reshape(-1)[0]),
           dtype=arr.dtype.name)


@_converter("Pad", attrs=("mode",))
def _pad(n: NodeView) -> None:
    mode = n.attr("mode", "constant")
    if mode not in ("constant", "reflect", "edge", "wrap"):
        raise n.refuse(f"mode '{mode}' is not supported")
    inputs = n.inputs[:3]
    if n.input(3):
        axes = n.need_const(3, "axes")
        pads = n.need_const(1, "pads with axes")
        rank = len(n.type(n.inputs[0]).shape)
        full = np.zeros(2 * rank, np.int64)
        for i, axis in enumerate(axes):
            axis = int(axis) % rank
            full[axis], full[axis + rank] = pads[i], pads[i + len(axes)]
        inputs = [inputs[0], n.param(full, "pads"), n.input(2)]
    n.emit("pad", inputs, mode=mode)


# ---- linear algebra, convolution, pooling -------------------------------------------------------
@_converter("Gemm", attrs=("alpha", "beta", "transA", "transB"))
def _gemm(n: NodeView) -> None:
    """alpha * A' @ B' + beta * C. A constant float B becomes a linear weight [N, K] (alpha folded
    in) with a bias when C broadcasts along N; otherwise matmul, mul and add."""
    a, b = n.inputs[0], n.inputs[1]
    c = n.input(2)
    alpha, beta = float(n.attr("alpha", 1.0)), float(n.attr("beta", 1.0))
    out = n.type(n.outputs[0])
    if n.attr("transA", 0):
        a_shape = n.type(a).shape
        a = n.emit("transpose", [a], n.temp(a_shape[::-1], out.dtype), perm=[1, 0])
    w = n.const(1)
    c_const = n.const(2) if c else None
    if w is not None and w.dtype.kind == "f":
        weight = (w if n.attr("transB", 0) else w.T) * w.dtype.type(alpha)
        bias = None
        if c_const is not None and (c_const.ndim <= 1 or c_const.shape[0] == 1):
            bias = np.broadcast_to(c_const.reshape(-1) * c_const.dtype.type(beta),
                                   (weight.shape[0],))
            c = ""
        inputs = [a, n.param(weight, "weight")] + ([n.param(bias, "bias")] if bias is not None
                                                    else [])
        y = n.emit("linear", inputs, n.temp(out.shape, out.dtype) if c else None)
    else:
        if n.attr("transB", 0):
            b_shape = n.type(b).shape
            b = n.emit("transpose", [b], n.temp(b_shape[::-1], out.dtype), perm=[1, 0])
        last = not c and alpha == 1.0
        y = n.emit("matmul", [a, b], None if last else n.temp(out.shape, out.dtype))
        if alpha != 1.0:
            y = n.emit("mul", [y, n.param(np.array(alpha, out.dtype), "alpha")],
                       None if not c else n.temp(out.shape, out.dtype))
    if c:
        if c_const is not None:
            c = n.param(c_const * c_const.dtype.type(beta), "c")
        elif beta != 1.0:
            c_type = n.type(c)
            c = n.emit("mul", [c, n.param(np.array(beta, out.dtype), "beta")],
                       n.temp(c_type.shape, c_type.dtype))
        n.emit("add", [y, c])


def _spatial_pads(n: NodeView, kernel: list[int], strides: list[int],
                  dilations: list[int]) -> list[int]:
    """Explicit [begin..., end...] pads, resolving auto_pad against static input dims."""
    n_sp = len(kernel)
    auto_pad = n.attr("auto_pad", "NOTSET")
    if auto_pad == "NOTSET":
        return [int(p) for p in n.attr("pads", [0] * (2 * n_sp))]
    if auto_pad == "VALID":
        return [0] * (2 * n_sp)
    spatial = n.type(n.inputs[0]).shape[2:]
    if not all(isinstance(d, int) for d in spatial):
        raise n.refuse(f"auto_pad={auto_pad} needs static spatial dims")
    begin, end = [], []
    for size, k, s, d in zip(spatial, kernel, strides, dilations):
        total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
        small, large = total // 2, total - total // 2
        begin.append(small if auto_pad == "SAME_UPPER" else large)
        end.append(large if auto_pad == "SAME_UPPER" else small)
    return begin + end


def _window_attrs(n: NodeView, kernel: list[int]) -> dict:
    n_sp = len(kernel)
    strides = [int(s) for s in n.attr("strides", [1] * n_sp)]
    dilations = [int(d) for d in n.attr("dilations", [1] * n_sp)]
    return {"strides": strides, "dilations": dilations,
            "pads": _spatial_pads(n, kernel, strides, dilations)}


@_converter("Conv", attrs=("auto_pad", "dilations", "group", "kernel_shape", "pads",
                           "strides"))
def _conv(n: NodeView) -> None:
    w_shape = n.type(n.inputs[1]).shape
    kernel = [int(k) for k in n.attr("kernel_shape", w_shape[2:])]
    if not all(isinstance(k, int) for k in kernel):
        raise n.refuse("the kernel shape must be static")
    n.emit("conv", n.inputs, group=int(n.attr("group", 1)), **_window_attrs(n, kernel))


@_converter("MaxPool", "AveragePool", attrs=(
    "auto_pad", "ceil_mode", "count_include_pad", "dilations", "kernel_shape", "pads",
    "storage_order", "strides"))
def _pool(n: NodeView) -> None:
    _no_extra_outputs(n)
    if n.attr("storage_order", 0):
        raise n.refuse("storage_order=1 is not supported")
    kernel = [int(k) for k in n.attr("kernel_shape")]
    attrs = {"kernel": kernel, "ceil_mode": int(n.attr("ceil_mode", 0)), **_window_attrs(n, kernel)}
    if n.op_type == "AveragePool":
        attrs["count_include_pad"] = int(n.attr("count_include_pad", 0))
    n.emit("max_pool" if n.op_type == "MaxPool" else "avg_pool", n.inputs, **attrs)


@_converter("ConvTranspose", attrs=("auto_pad", "dilations", "group", "kernel_shape",
                                    "output_padding", "output_shape", "pads", "strides"))
def _conv_transpose(n: NodeView) -> None:
    """Pads resolved here: from output_shape or auto_pad=SAME_* (output = input * stride) the
    total padding is split as ONNX specifies (SAME_UPPER: the smaller half first)."""
    w_shape = n.type(n.inputs[1]).shape
    kernel = [int(k) for k in n.attr("kernel_shape", w_shape[2:])]
    n_sp = len(kernel)
    strides = [int(s) for s in n.attr("strides", [1] * n_sp)]
    dilations = [int(d) for d in n.attr("dilations", [1] * n_sp)]
    extra = [int(p) for p in n.attr("output_padding", [0] * n_sp)]
    auto_pad = n.attr("auto_pad", "NOTSET")
    target = n.attr("output_shape")
    if target is None and auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        target = "same"
    if target is None:
        pads = [int(p) for p in n.attr("pads", [0] * (2 * n_sp))]
    else:
        spatial = n.type(n.inputs[0]).shape[2:]
        if not all(isinstance(d, int) for d in spatial):
            raise n.refuse("output_shape or auto_pad needs static spatial dims")
        if target == "same":
            target = [d * s for d, s in zip(spatial, strides)]
        target = [int(t) for t in target][-n_sp:]
        total = [s * (d - 1) + e + (k - 1) * dl + 1 - t for d, s, e, k, dl, t in
                 zip(spatial, strides, extra, kernel, dilations, target)]
        small, large = [t // 2 for t in total], [t - t // 2 for t in total]
        pads = small + large if auto_pad == "SAME_UPPER" else large + small
    n.emit("conv_transpose", n.inputs, strides=strides, pads=pads, dilations=dilations,
           group=int(n.attr("group", 1)), output_padding=extra)


_RESIZE_ATTRS = ("antialias", "axes", "coordinate_transformation_mode", "cubic_coeff_a",
                 "exclude_outside", "extrapolation_value", "keep_aspect_ratio_policy", "mode",
                 "nearest_mode")


@_converter("Resize", attrs=_RESIZE_ATTRS)
def _resize(n: NodeView) -> None:
    if len(n.inputs) < 3:
        raise n.refuse("the opset-10 form (scales as input 1) is not supported")
    attrs = {k: n.attr(k) for k in _RESIZE_ATTRS if n.attr(k) is not None}
    if attrs.get("mode", "nearest") not in ("nearest", "linear", "cubic"):
        raise n.refuse(f"mode '{attrs['mode']}' is not supported")
    for key in ("cubic_coeff_a", "extrapolation_value"):
        if key in attrs:
            attrs[key] = float(attrs[key])
    for key in ("antialias", "exclude_outside"):
        if key in attrs:
            attrs[key] = int(attrs[key])
    if "axes" in attrs:
        attrs["axes"] = [int(a) for a in attrs["axes"]]
    n.emit("resize", n.inputs, **attrs)


# ---- attention ----------------------------------------------------------------------------------
@_converter("Attention", attrs=("is_causal", "scale", "softcap", "qk_matmul_output_mode",
                                   "softmax_precision", "q_num_heads", "kv_num_heads"))
def _attention(n: NodeView) -> None:
    """The ONNX Attention op (opset 23) on 4-D q/k/v without a KV cache or softcap."""
    _no_extra_outputs(n)
    if any(n.input(i) for i in range(4, 7)):
        raise n.refuse("past key/value inputs are not supported")
    if float(n.attr("softcap", 0.0)) != 0.0:
        raise n.refuse("softcap is not supported")
    q, k = n.type(n.inputs[0]).shape, n.type(n.inputs[1]).shape
    if len(q) != 4 or len(k) != 4:
        raise n.refuse("only 4-D [B, H, T, D] q/k/v are supported")
    causal = int(n.attr("is_causal", 0))
    if causal and (q[2] != k[2] or not isinstance(q[2], int)):
        # ONNX aligns the causal band top-left, the IR bottom-right: equal only when Tq == Tk
        raise n.refuse("is_causal with query and key lengths that differ is not supported")
    scale = n.attr("scale")
    n.emit("attention", n.inputs[:4], scale=None if scale is None else float(scale),
           causal=causal)


@_converter("GatedLinearAttention", attrs=("scale",), domain=CUSTOM_DOMAIN)
def _gla(n: NodeView) -> None:
    scale = n.attr("scale")
    n.emit("gla", n.inputs, scale=None if scale is None else float(scale))


# ---- the fused ops of the frontend rewrites -----------------------------------------------------
@_converter("Linear", domain=FUSED_DOMAIN)
def _fused_linear(n: NodeView) -> None:
    n.emit("linear", n.inputs)


@_converter("Silu", domain=FUSED_DOMAIN)
def _fused_silu(n: NodeView) -> None:
    n.emit("silu", n.inputs)


@_converter("Attention", attrs=("scale", "causal", "window"), domain=FUSED_DOMAIN)
def _fused_attention(n: NodeView) -> None:
    """scale is a float64 scalar tensor: the product of the model's factors, unrounded."""
    band = {key: int(n.attr(key)) for key in ("causal", "window") if n.attr(key) is not None}
    n.emit("attention", n.inputs, scale=float(onnx.numpy_helper.to_array(n.attr("scale"))),
           **band)
