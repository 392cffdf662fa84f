"""The closed IR op set: one table of ops, their operands, attributes and exact semantics, and
the rules that follow from an op, asked here by everyone else.

The numpy reference interpreter (``sbcompile.runtime.reference``) implements exactly this table;
``python -m sbcompile.ir.ops`` prints it as the markdown of ``docs/OPS.md`` (a test keeps the two
equal). Tensors are row-major; ``x`` broadcasts numpy-style where a binary op says so. Operands
ending in ``?`` are optional (an empty name). Float ops compute in float32 unless the semantics
say otherwise.

What follows from an op lives here once: its attribute defaults (``node_attrs``), its ONNX name
and attribute renames (``OpSpec.onnx``, read by the ONNX frontend and the ONNX exporter), the
spike encoder's count limit (``count_limit``) and threshold shape (``threshold_axes``,
``threshold_shape``), and the attention band (``attention_keep``). Output shapes are per-op rules
in ``sbcompile.ir.shapes``. An op with an ONNX name has ONNX's attribute defaults.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class OpSpec:
    name: str
    category: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    semantics: str
    attrs: dict[str, Any] = field(default_factory=dict)
    onnx: str | None = None  # the ONNX op this op is one to one with (same operands)
    onnx_renames: dict[str, str] = field(default_factory=dict)  # IR attribute -> ONNX name
    # per output: a dtype, an operand's name (its dtype) or "attr:NAME" (that attribute's value);
    # one entry serves every output of a variadic op
    dtypes: tuple[str, ...] = ()
    choices: dict[str, tuple] = field(default_factory=dict)  # attribute -> its allowed values

    @property
    def min_inputs(self) -> int:
        return sum(1 for i in self.inputs if not i.endswith("?") and not i.endswith("*"))

    @property
    def variadic(self) -> bool:
        return any(i.endswith("*") for i in self.inputs)

    def onnx_attr(self, attr: str) -> str:
        """The ONNX attribute name of IR attribute ``attr``."""
        return self.onnx_renames.get(attr, attr)


_SPECS: list[OpSpec] = []


def _op(name, category, inputs, outputs, semantics, *, onnx=None, onnx_renames=None,
        dtypes=None, choices=None, **attrs):
    """One table entry; ``dtypes`` (space separated, one per output) defaults to the first
    operand's dtype for every output; ``choices`` are the allowed values of an attribute."""
    ins = tuple(inputs.split())
    rule = tuple(dtypes.split()) if dtypes else (ins[0].rstrip("?*"),)
    _SPECS.append(OpSpec(name, category, ins, tuple(outputs.split()), semantics, attrs, onnx,
                         dict(onnx_renames or {}), rule, dict(choices or {})))


SAFETY_COUNT = 2 ** 20  # the encoder's clamp where max_count is null: every count, count bound
# and stored histogram stays within it, and three signed base-128 digits hold it


# ---- linear algebra (the ops the spike passes act on) -----------------------------------------
_op("linear", "linear", "x weight bias?", "y", "y = x @ weight.T + bias; weight [N, K], x [..., K]")
_op("matmul", "linear", "a b", "y", "numpy.matmul(a, b) (batched, broadcasting)", onnx="MatMul")
_op("conv", "linear", "x weight bias?", "y",
    "N-d cross-correlation, x [N, C, *spatial], weight [O, C/group, *kernel]; pads are "
    "[begin..., end...]", onnx="Conv", strides=None, pads=None, dilations=None, group=1)
# ---- pooling ------------------------------------------------------------------------------------
_op("max_pool", "pool", "x", "y",
    "max over windows; padding never wins; ceil_mode drops windows starting in the end pad",
    onnx="MaxPool", onnx_renames={"kernel": "kernel_shape"},
    kernel=None, strides=None, pads=None, dilations=None, ceil_mode=0)
_op("avg_pool", "pool", "x", "y",
    "mean over windows; count_include_pad counts explicit pads (never ceil_mode overhang)",
    onnx="AveragePool", onnx_renames={"kernel": "kernel_shape"},
    kernel=None, strides=None, pads=None, dilations=None, ceil_mode=0, count_include_pad=0)
_op("global_avg_pool", "pool", "x", "y", "mean over all spatial axes, kept as size 1",
    onnx="GlobalAveragePool")
_op("global_max_pool", "pool", "x", "y", "max over all spatial axes, kept as size 1",
    onnx="GlobalMaxPool")
# ---- elementwise --------------------------------------------------------------------------------
for _name, _onnx, _sem, _out in [
        ("add", "Add", "a + b", None), ("sub", "Sub", "a - b", None),
        ("mul", "Mul", "a * b", None),
        ("div", "Div", "a / b (integers: truncation toward zero)", None),
        ("pow", "Pow", "a ** b", None), ("max", "Max", "elementwise maximum", None),
        ("min", "Min", "elementwise minimum", None),
        ("mod", "Mod", "a mod b, sign of b (fmod=1: sign of a)", None),
        ("equal", "Equal", "a == b -> bool", "bool"), ("less", "Less", "a < b -> bool", "bool"),
        ("greater", "Greater", "a > b -> bool", "bool"), ("and", "And", "a & b (bool)", "bool"),
        ("or", "Or", "a | b (bool)", "bool")]:
    _op(_name, "elementwise", "a b", "y", _sem + ", broadcasting", onnx=_onnx, dtypes=_out,
        **({"fmod": 0} if _name == "mod" else {}))
_op("where", "elementwise", "cond a b", "y", "cond ? a : b, broadcasting", onnx="Where",
    dtypes="a")
for _name, _onnx, _sem in [
        ("neg", "Neg", "-x"), ("abs", "Abs", "|x|"), ("sqrt", "Sqrt", "sqrt(x)"),
        ("reciprocal", "Reciprocal", "1 / x"), ("exp", "Exp", "exp(x)"), ("log", "Log", "ln(x)"),
        ("erf", "Erf", "erf(x)"), ("sin", "Sin", "sin(x)"), ("cos", "Cos", "cos(x)"),
        ("floor", "Floor", "floor(x)"), ("ceil", "Ceil", "ceil(x)"),
        ("identity", "Identity", "x")]:
    _op(_name, "elementwise", "x", "y", _sem, onnx=_onnx)
_op("not", "elementwise", "x", "y", "logical not", onnx="Not", dtypes="bool")
_op("cast", "elementwise", "x", "y", "x converted to dtype `to` (float->int truncates)",
    dtypes="attr:to", to="float32")
_op("clip", "elementwise", "x min? max?", "y", "min(max(x, min), max); absent bounds do not clip",
    onnx="Clip")
# ---- activations --------------------------------------------------------------------------------
_op("relu", "activation", "x", "y", "max(x, 0)", onnx="Relu")
_op("leaky_relu", "activation", "x", "y", "x if x >= 0 else alpha * x", onnx="LeakyRelu",
    alpha=0.01)
_op("prelu", "activation", "x slope", "y", "x if x >= 0 else slope * x (slope broadcasts)",
    onnx="PRelu")
_op("gelu", "activation", "x", "y",
    "none: 0.5 x (1 + erf(x / sqrt 2)); tanh: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))",
    onnx="Gelu", approximate="none")
_op("silu", "activation", "x", "y", "x * sigmoid(x)")
_op("sigmoid", "activation", "x", "y", "1 / (1 + exp(-x))", onnx="Sigmoid")
_op("tanh", "activation", "x", "y", "tanh(x)", onnx="Tanh")
_op("softmax", "activation", "x", "y", "exp(x - max) / sum over `axis`", onnx="Softmax",
    axis=-1)
_op("log_softmax", "activation", "x", "y", "x - max - log(sum exp(x - max)) over `axis`",
    onnx="LogSoftmax", axis=-1)
# ---- normalisation ------------------------------------------------------------------------------
_op("layer_norm", "norm", "x scale bias?", "y",
    "(x - mean) / sqrt(var + epsilon) * scale + bias over axes [axis, rank)",
    onnx="LayerNormalization", axis=-1, epsilon=1e-5)
_op("rms_norm", "norm", "x scale?", "y",
    "x / sqrt(mean(x^2) + epsilon) * scale over axes [axis, rank)", axis=-1, epsilon=1e-6)
_op("batch_norm", "norm", "x scale bias mean var", "y",
    "(x - mean) / sqrt(var + epsilon) * scale + bias along axis 1 (inference)",
    onnx="BatchNormalization", epsilon=1e-5)
# ---- reductions ---------------------------------------------------------------------------------
for _name in ("reduce_mean", "reduce_sum", "reduce_max", "reduce_min", "reduce_prod"):
    _op(_name, "reduce", "x axes?", "y",
        f"{_name[7:]} over `axes` (the attribute, or the int64 input axes; all when null or "
        "empty), keepdims keeps them as size 1; over no elements max gives the dtype's lowest "
        "value (-inf), min its highest", axes=None, keepdims=1)
_op("argmax", "reduce", "x", "y", "index of the first maximum along `axis` (int64)",
    onnx="ArgMax", dtypes="int64", axis=0, keepdims=1)
# ---- shape and data movement --------------------------------------------------------------------
_op("reshape", "shape", "x shape", "y",
    "reshape to `shape` (int64); 0 copies the input dim unless allowzero, -1 is inferred",
    onnx="Reshape", allowzero=0)
_op("transpose", "shape", "x", "y", "numpy.transpose(x, perm) (reverse when perm is null)",
    onnx="Transpose", perm=None)
_op("flatten", "shape", "x", "y", "2-D: dims [0, axis) and [axis, rank) multiplied out",
    onnx="Flatten", axis=1)
_op("concat", "shape", "xs*", "y", "concatenation along `axis`", onnx="Concat", axis=0)
_op("split", "shape", "x split?", "ys*",
    "split along `axis` into the sizes `split` (int64), or into `num_outputs` parts of "
    "ceil(size / num_outputs) (the last one smaller)", onnx="Split", axis=0, num_outputs=None)
_op("slice", "shape", "x starts ends axes? steps?", "y",
    "python slicing per axis with ONNX clamping of starts/ends (int64 tensors)", onnx="Slice")
_op("gather", "shape", "data indices", "y", "numpy.take(data, indices, axis), negative indices wrap",
    onnx="Gather", axis=0)
_op("gather_elements", "shape", "data indices", "y", "numpy.take_along_axis(data, indices, axis)",
    onnx="GatherElements", axis=0)
_op("unsqueeze", "shape", "x axes", "y", "insert size-1 dims at `axes` (int64, output positions)",
    onnx="Unsqueeze")
_op("squeeze", "shape", "x axes?", "y", "remove size-1 dims at `axes` (all size-1 dims if absent)",
    onnx="Squeeze")
_op("expand", "shape", "x shape", "y", "broadcast x to broadcast(x.shape, shape)",
    onnx="Expand")
_op("tile", "shape", "x repeats", "y", "numpy.tile(x, repeats)", onnx="Tile")
_op("shape", "shape", "x", "y", "x.shape[start:end] as int64", onnx="Shape", dtypes="int64",
    start=0, end=None)
_op("constant_of_shape", "shape", "shape", "y",
    "tensor of `shape` (int64) filled with `value` in `dtype`; `value` is a number or, since JSON "
    "has no infinities, the string \"inf\" or \"-inf\"", dtypes="attr:dtype", value=0.0,
    dtype="float32")
_op("range", "shape", "start limit delta", "y", "numpy.arange(start, limit, delta) in their dtype",
    onnx="Range")
_op("trilu", "shape", "x k?", "y", "keep the upper (upper=1) or lower triangle, diagonal offset k",
    onnx="Trilu", upper=1)
_op("pad", "shape", "x pads value?", "y",
    "constant/reflect/edge padding, pads [begin..., end...] (int64, may be negative)",
    onnx="Pad", mode="constant")
# ---- attention ----------------------------------------------------------------------------------
_op("attention", "attention", "q k v mask?", "y",
    "softmax(q k^T * scale + mask + causal/window masks) v; q [B, Hq, Tq, D], k/v [B, Hkv, Tk, D] "
    "with Hq a multiple of Hkv (GQA: query head h reads kv head h // (Hq/Hkv)); scale null: "
    "1/sqrt(D); mask is additive float or bool (True keeps) broadcast to [B, Hq, Tq, Tk]; causal "
    "keeps j <= i + (Tk - Tq); window w > 0 also drops j <= i + (Tk - Tq) - w; a row with every "
    "key masked yields zeros; v may have its own last dim Dv", scale=None, causal=0, window=0)
_op("gla", "attention", "q k v g", "y",
    "gated linear attention, recurrent form, layout [B, T, H, D]: S_0 = 0, "
    "S_t = diag(exp g_t) S_{t-1} + k_t^T v_t (S is K x V per head), y_t = scale * q_t S_t; "
    "q, k, g [B, T, H, K], v and y [B, T, H, V]; g is the log-space decay; scale null: K^-0.5",
    scale=None)
# ---- spiking ------------------------------------------------------------------------------------
_op("spike_encode", "spike", "x threshold?", "counts vth",
    "integer spike counts under an adaptive threshold. dynamic: vth = clip(mean(|x|) / k, vth_min,"
    " vth_max) over the last axis (granularity token) or all but axis 0 (sample), kept as size-1 "
    "dims; mean = S / n in float32 (n values), S the float32 sum of |x| in one fixed order, a "
    "pairwise tree: the |x| (row-major over the reduced axes) zero-padded to the next power of "
    "two, then level by level element 2i + element 2i+1 until one is left (so any power-of-two "
    "block is summed alone and the block sums by the same tree: every target gives the same "
    "bits); static: vth = threshold (a parameter: scalar, "
    "or one per input channel). counts = round_half_even(x / vth) clipped to +-max_count (null: "
    "+-safety_count), int32; vth float32. With max_count null, every target refuses an input "
    "whose counts reach safety_count (the clamp is a guard, not the model)",
    dtypes="int32 float32", choices={"policy": ("dynamic", "static"),
                                     "granularity": ("token", "sample")},
    policy="dynamic", granularity="token", k=3.0, vth_min=1e-5, vth_max=1e4, max_count=None,
    safety_count=SAFETY_COUNT)
_op("spike_linear", "spike", "counts weight", "acc",
    "exact integer product: acc[..., g, n] = sum_{i in group g} weight[n, i] * counts[..., i] with "
    "int8 weight [N, K], int32 counts [..., K], groups of `group_size` inputs (null: one group); "
    "acc int32 [..., G, N]", dtypes="int32", group_size=None)
_op("spike_conv", "spike", "counts weight", "acc",
    "exact integer conv of int32 counts with int8 weight (attributes as conv) -> int32",
    dtypes="int32", strides=None, pads=None, dilations=None, group=1)
_op("spike_decode", "spike", "acc vth scale? bias?", "y",
    "float reconstruction: linear acc [..., G, N]: y = vth * sum_g(acc[..., g, :] * scale[g, :]) "
    "+ bias; conv acc [B, O, *sp]: y = vth * acc * scale[O] + bias[O]; counts (no scale): "
    "y = vth * counts. Float32, summed over g in order", dtypes="float32", layout="linear")

_op("spike_scores", "spike", "q_counts k", "acc",
    "exact integer attention scores: acc[b, h, i, j] = sum_d q_counts[b, h, i, d] * "
    "k[b, h // (Hq/Hkv), j, d] with int32 query counts [B, Hq, Tq, D] and int8 keys "
    "[B, Hkv, Tk, D] (GQA as in attention); acc int32 [B, Hq, Tq, Tk]", dtypes="int32")
_op("spike_attention", "spike", "acc q_vth k_scale v v_scale mask?", "y",
    "attention on integer scores (SpikingBrain: softmax and its value product stay float): "
    "logits = float32(acc) * (q_vth * scale) * k_scale^T in float32, q_vth [B, Hq, Tq, 1] and "
    "k_scale [B, Hkv, Tk, 1] per token and head (GQA as in attention), `scale` required (the "
    "query's 1/sqrt(D)); then mask, causal/window band and softmax exactly as attention, times "
    "the dequantised values float32(v) * v_scale (int8 v [B, Hkv, Tk, Dv], v_scale "
    "[B, Hkv, Tk, 1]); y float32 [B, Hq, Tq, Dv]", dtypes="float32", scale=None, causal=0,
    window=0)

# ---- real-model coverage (issue 14): ops no decomposition expresses exactly or cheaply ------------
for _name, _sem in [("tan", "tan(x)"), ("asin", "arcsin(x)"), ("acos", "arccos(x)"),
                    ("atan", "arctan(x)"), ("sinh", "sinh(x)"), ("cosh", "cosh(x)"),
                    ("asinh", "arsinh(x)"), ("acosh", "arcosh(x)"), ("atanh", "artanh(x)"),
                    ("round", "round half to even"), ("sign", "-1, 0 or 1 by the sign of x")]:
    _op(_name, "elementwise", "x", "y", _sem, onnx=_name.capitalize())
_op("softplus", "activation", "x", "y", "ln(1 + exp(x)), evaluated without overflow or "
    "cancellation (log1p of exp(-|x|) plus max(x, 0))", onnx="Softplus")
_op("argmin", "reduce", "x", "y", "index of the first minimum along `axis` (int64)",
    onnx="ArgMin", dtypes="int64", axis=0, keepdims=1)
_op("cumsum", "reduce", "x axis", "y",
    "running sum along the axis held by the scalar `axis` (int32/int64, negative counts from "
    "the end); exclusive=1 leaves out the element itself (the first output is 0), reverse=1 "
    "sums from the end; floats summed in float64 in order and rounded once",
    onnx="CumSum", exclusive=0, reverse=0)
_op("topk", "reduce", "x k", "values indices",
    "the k (a 1-element int64 tensor) largest (largest=1) or smallest elements along `axis`, "
    "in that order; equal values keep the lower index first; indices int64; sorted=0 gives "
    "the same order", onnx="TopK", dtypes="x int64", axis=-1, largest=1, sorted=1)
_op("einsum", "linear", "xs*", "y",
    "numpy.einsum(equation, *xs) with ONNX's equation rules (explicit `->` or implicit "
    "alphabetical output, `...` broadcasting); floats contracted in float64, rounded once",
    onnx="Einsum", equation=None)
_op("conv_transpose", "linear", "x weight bias?", "y",
    "N-d transposed convolution (the gradient of conv), x [N, C, *spatial], weight "
    "[C, O/group, *kernel]: out = (in - 1) * stride + (kernel - 1) * dilation + 1 + "
    "output_padding - pad_begin - pad_end; pads are [begin..., end...] (auto_pad and "
    "output_shape are resolved into pads by the frontend)", onnx="ConvTranspose",
    strides=None, pads=None, dilations=None, group=1, output_padding=None)
_op("resize", "shape", "x roi? scales? sizes?", "y",
    "ONNX Resize (opset 19), separable per axis: output size from `sizes` or floor(in * scale) "
    "(keep_aspect_ratio_policy stretch/not_larger/not_smaller for sizes); each output index i "
    "maps to an input coordinate by coordinate_transformation_mode (half_pixel, "
    "half_pixel_symmetric, pytorch_half_pixel, align_corners, asymmetric, tf_crop_and_resize "
    "with roi); mode nearest picks by nearest_mode (round_prefer_floor, round_prefer_ceil, "
    "floor, ceil), linear interpolates 2 neighbours, cubic 4 with coefficient cubic_coeff_a "
    "(exclude_outside renormalises the taps inside); antialias widens linear/cubic filters by "
    "1/scale when downsampling; coordinates are clamped to the edge, except that "
    "tf_crop_and_resize writes extrapolation_value outside [0, in - 1]; `axes` lists the "
    "axes scales/sizes/roi refer to (null: all); weights computed in float64", onnx="Resize",
    mode="nearest", coordinate_transformation_mode="half_pixel",
    nearest_mode="round_prefer_floor", cubic_coeff_a=-0.75, exclude_outside=0,
    extrapolation_value=0.0, antialias=0, axes=None, keep_aspect_ratio_policy="stretch")
_op("cumprod", "reduce", "x axis", "y",
    "running product along the axis held by the scalar `axis`, exclusive and reverse as cumsum "
    "(an exclusive product starts at 1); floats multiplied in float64 in order, rounded once",
    onnx="CumProd", exclusive=0, reverse=0)
_op("det", "linear", "x", "y", "determinant of the trailing [M, M] matrices (LU in float64)",
    onnx="Det")
_op("gather_nd", "shape", "data indices", "y",
    "the slices of data picked by the index tuples of the last axis of indices (int64, negative "
    "ones wrap), the first batch_dims axes shared: y[b..., i...] = data[b..., indices[b..., i..., "
    ":]]", onnx="GatherND", batch_dims=0)
_op("scatter_elements", "shape", "data indices updates", "y",
    "a copy of data with updates written at indices along `axis` (numpy.put_along_axis; "
    "negative indices wrap); reduction add/mul/max/min combines with what is there, in index "
    "order", onnx="ScatterElements", axis=0, reduction="none")
_op("scatter_nd", "shape", "data indices updates", "y",
    "a copy of data with updates written at the index tuples of the last axis of indices, in "
    "index order; reduction add/mul/max/min combines with what is there",
    onnx="ScatterND", reduction="none")

OPS: dict[str, OpSpec] = {s.name: s for s in _SPECS}
CATEGORIES = ("linear", "pool", "elementwise", "activation", "norm", "reduce", "shape",
              "attention", "spike")
ONNX_OPS: dict[str, str] = {s.onnx: s.name for s in _SPECS if s.onnx}  # ONNX op -> IR op
INTEGER_OPS = ("spike_encode", "spike_linear", "spike_conv", "spike_scores")  # the exact path:
# their first outputs are integers every target must give bit for bit
INTEGER_OPERANDS = {  # op -> {input slot: the dtype it must have}
    "spike_linear": {0: "int32", 1: "int8"}, "spike_conv": {0: "int32", 1: "int8"},
    "spike_scores": {0: "int32", 1: "int8"}, "spike_attention": {0: "int32", 3: "int8"}}


def _where(**conditions) -> frozenset[str]:
    return frozenset(s.name for s in _SPECS
                     if all(getattr(s, k) == v for k, v in conditions.items()))


class GroupOp:
    """Named sets of ops (as tinygrad's ``GroupOp``), read wherever a rule covers "ops like
    these": the shape rules, the dtype rules, the exact integer path."""

    # elementwise on two operands (and where's three), broadcasting numpy-style; prelu's slope
    # broadcasts alike
    Broadcast = _where(category="elementwise", inputs=("a", "b")) | {"where", "prelu"}
    # one tensor in, the same shape out: elementwise, activations, norms, scans, scatters
    SameShape = (_where(category="elementwise", inputs=("x",)) | {"clip"}
                 | (_where(category="activation") - {"prelu"}) | _where(category="norm")
                 | {"trilu", "cumsum", "cumprod", "scatter_elements", "scatter_nd"})
    Bool = _where(dtypes=("bool",))  # comparisons and logic: bool out
    Index = _where(dtypes=("int64",))  # shapes and argmax/argmin indices: int64 out
    Window = frozenset({"conv", "spike_conv", "max_pool", "avg_pool"})  # strided windows
    Integer = frozenset(INTEGER_OPS)
    Accumulate = frozenset({"spike_linear", "spike_conv", "spike_scores"})  # int32 sums
    Spike = _where(category="spike")
    All = frozenset(OPS)


# ---- rules that follow from an op ---------------------------------------------------------------
def node_attrs(node) -> dict[str, Any]:
    """A node's attributes over its op's defaults (the only way code reads an attribute)."""
    return {**OPS[node.op].attrs, **node.attrs}


def output_dtypes(node, dtypes: list[str | None]) -> list[str]:
    """The output dtypes of ``node`` for input dtypes ``dtypes``, by its op's ``dtypes`` rule."""
    spec = OPS[node.op]
    names = [i.rstrip("?*") for i in spec.inputs]
    rules = spec.dtypes if len(spec.dtypes) > 1 else spec.dtypes * len(node.outputs or
                                                                        spec.outputs)

    def one(rule: str) -> str:
        if rule.startswith("attr:"):
            return node_attrs(node)[rule[5:]]
        return dtypes[names.index(rule)] if rule in names else rule
    return [one(r) for r in rules]


def count_limit(attrs: dict[str, Any]) -> int:
    """The largest |count| a ``spike_encode`` with these (defaulted) attributes emits:
    ``max_count``, never above ``safety_count`` (which bounds it when max_count is null)."""
    top = attrs["max_count"] if attrs["max_count"] is not None else attrs["safety_count"]
    return int(min(top, attrs["safety_count"]))


def dynamic_count_bound(attrs: dict[str, Any], n: int) -> int:
    """The largest |count| a dynamic ``spike_encode`` averaging over ``n`` values emits (under
    ``count_limit``): |x| <= sum |x| = n mean = k n vth, so round(|x| / vth) <= ceil(k n) + 1
    (one more for float32 rounding)."""
    return min(count_limit(attrs), math.ceil(attrs["k"] * n) + 1)


def dynamic_sum_bound(attrs: dict[str, Any], n: int) -> float:
    """An upper bound of sum |counts| over one threshold group of a dynamic ``spike_encode``
    averaging over ``n`` values: each count is within 1/2 of |x| / vth, whose sum is k n, so
    (k + 1/2) n."""
    return (attrs["k"] + 0.5) * n


def saturation(attrs: dict[str, Any], count_peak) -> str:
    """Why a ``spike_encode``'s counts would be its safety clamp's, not the model's ("" if they
    are not): a count at ``safety_count`` where ``max_count`` does not bound counts by design
    (the threshold's guards vth_min and vth_max are SpikingBrain's semantics and stay). Every
    target refuses such inputs rather than return the clamp."""
    if attrs["max_count"] is None and count_peak >= attrs["safety_count"]:
        return (f"a count reaches the encoder's safety clamp of {attrs['safety_count']} (inputs "
                "far beyond the threshold)")
    return ""


def threshold_axes(rank: int, granularity: str) -> tuple[int, ...]:
    """The axes a dynamic threshold averages over: the last (token) or all but axis 0 (sample)."""
    if granularity not in OPS["spike_encode"].choices["granularity"]:
        raise ValueError(f"unknown spike_encode granularity {granularity!r}")
    return (rank - 1,) if granularity == "token" else tuple(range(1, rank))


def threshold_shape(shape: tuple, granularity: str) -> tuple:
    """The shape of a dynamic threshold for an input of ``shape``: the averaged axes kept as 1."""
    axes = threshold_axes(len(shape), granularity)
    return tuple(1 if i in axes else d for i, d in enumerate(shape))


def attention_keep(tq: int, tk: int, causal: int, window: int) -> np.ndarray:
    """The [tq, tk] keep-mask of ``attention``'s causal and window attributes, aligned bottom
    right: query i sits at key position i + (tk - tq); causal keeps keys j <= that position,
    window w > 0 also drops keys at or before that position minus w."""
    i = np.arange(tq)[:, None] + (tk - tq)
    j = np.arange(tk)[None, :]
    keep = np.ones((tq, tk), dtype=bool)
    if causal:
        keep &= j <= i
    if window > 0:
        keep &= j > i - window
    return keep


def markdown_table() -> str:
    lines = ["# The sbcompile IR op set", "",
             "Generated by `python -m sbcompile.ir.ops`; the reference interpreter implements "
             "exactly this table. An op with an ONNX name converts one to one (attribute renames "
             "shown as `ir->onnx`) and has ONNX's attribute defaults. Output dtypes: a dtype, "
             "an operand's name (its dtype) or `attr:NAME` (that attribute's value).", "",
             "| op | category | inputs | outputs | output dtypes | attributes (default) | ONNX | "
             "semantics |",
             "|---|---|---|---|---|---|---|---|"]
    for cat in CATEGORIES:
        for s in _SPECS:
            if s.category == cat:
                attrs = ", ".join(f"{k}={v!r}" + (f" ({'/'.join(s.choices[k])})"
                                                   if k in s.choices else "")
                                  for k, v in s.attrs.items()) or "-"
                onnx = s.onnx or "-"
                if s.onnx_renames:
                    onnx += " (" + ", ".join(f"{k}->{v}" for k, v in s.onnx_renames.items()) + ")"
                lines.append(f"| `{s.name}` | {cat} | {' '.join(s.inputs)} | "
                             f"{' '.join(s.outputs)} | {' '.join(s.dtypes)} | {attrs} | {onnx} "
                             f"| {s.semantics} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
