"""Quantized ONNX in: the forms onnxruntime's quantization tools write, spelled as float ops
around ``QuantizeLinear`` / ``DequantizeLinear``, so the float reference is the dequantized model.

- QDQ (``QuantizeLinear`` -> ``DequantizeLinear`` around float ops): a ``DequantizeLinear`` of a
  constant int8 weight folds to the float weight (scale * (q - zero point)); on activations both
  lower to the float ops of their definition (round half to even, saturate, cast), so a QDQ pair
  rounds a value onto the grid the quantized model computes on.
- QOperator (``QLinearConv``, ``QLinearMatMul``, ``MatMulInteger``, ``ConvInteger``, and
  com.microsoft's ``QLinearAdd``, ``QLinearMul``, ``QLinearSigmoid``, ``QLinearLeakyRelu``,
  ``QLinearGlobalAveragePool``, ``QLinearConcat``): rewritten on the ONNX graph, before shape
  inference, as dequantize -> the float op -> quantize (the integer ops as casts, zero-point
  subtraction and the float op, exact while partial sums stay below 2^24).
- Dynamic quantization (``DynamicQuantizeLinear``; com.microsoft ``DynamicQuantizeMatMul`` and
  ``DynamicQuantizeLSTM``): the activation's scale and zero point computed as onnxruntime does;
  the LSTM's int8 weights dequantized into a standard ``LSTM`` (its per-step activation
  quantization is not reproduced: outputs agree with onnxruntime within its quantization
  error, not bit for bit).

A symmetric per-output-channel int8 weight whose largest magnitude is 127 in every channel (what
onnxruntime's tools write) comes back unchanged from ``weight_quantize``: its scales are the file's.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from sbcompile.errors import UnsupportedError
from sbcompile.frontends.onnx_decompose import _Expr
from sbcompile.frontends.onnx_lowering import NodeView
from sbcompile.frontends.onnx_registry import _converter
from sbcompile.ir.graph import unique_name

MS_DOMAIN = "com.microsoft"
_RANGES = {"uint8": (0, 255), "int8": (-128, 127), "int16": (-32768, 32767),
           "int32": (-2 ** 31, 2 ** 31 - 1)}


# ---- QuantizeLinear / DequantizeLinear / DynamicQuantizeLinear as IR ops -----------------------
def _per_axis(n: NodeView, e: _Expr, name: str, rank: int, axis: int, what: str) -> str:
    """A scale or zero point as a value broadcasting against the quantized tensor: a scalar as
    it is, a 1-D constant reshaped onto ``axis``."""
    shape = n.type(name).shape
    if len(shape) == 0 or (len(shape) == 1 and shape[0] == 1):
        return name
    value = n.lw.consts.get(name)
    if value is None or value.ndim != 1:
        raise n.refuse(f"a per-axis {what} must be a 1-D constant")
    target = [1] * rank
    target[axis % rank] = value.shape[0]
    return n.param(value.reshape(target), what.replace(" ", "_"))


def _check_block(n: NodeView) -> None:
    if n.attr("block_size", 0):
        raise n.refuse("blocked quantization (block_size) is not supported")


@_converter("DequantizeLinear", attrs=("axis", "block_size"))
def _dequantize(n: NodeView) -> None:
    """(x - zero_point) * scale, in the scale's dtype."""
    _check_block(n)
    x, out = n.type(n.inputs[0]), n.type(n.outputs[0])
    e = _Expr(n, n.outputs[0])
    rank, axis = len(x.shape), int(n.attr("axis", 1))
    xf = e.op("cast", n.inputs[0], to=out.dtype, out=n.temp(x.shape, out.dtype))
    if n.input(2):
        zp = _per_axis(n, e, n.inputs[2], rank, axis, "zero point")
        zpf = e.op("cast", zp, to=out.dtype, out=n.temp(n.type(zp).shape, out.dtype))
        xf = e.op("sub", xf, zpf, out=n.temp(x.shape, out.dtype))
    e.op("mul", xf, _per_axis(n, e, n.inputs[1], rank, axis, "scale"), out="y")


def _saturate_cast(e: _Expr, x: str, dtype: str, out: str | None) -> str:
    lo, hi = _RANGES[dtype]
    clipped = e.op("clip", x, e.const(lo, "qmin"), e.const(hi, "qmax"))
    return e.op("cast", clipped, to=dtype, out=out, dtype=dtype)


@_converter("QuantizeLinear", attrs=("axis", "block_size", "saturate", "output_dtype"))
def _quantize(n: NodeView) -> None:
    """saturate(round(x / scale) + zero_point), rounding half to even."""
    _check_block(n)
    x, y = n.type(n.inputs[0]), n.type(n.outputs[0])
    if y.dtype not in _RANGES:
        raise n.refuse(f"quantizing to {y.dtype} is not supported")
    e = _Expr(n)
    rank, axis = len(x.shape), int(n.attr("axis", 1))
    q = e.op("round", e.op("div", n.inputs[0], _per_axis(n, e, n.inputs[1], rank, axis,
                                                          "scale")))
    if n.input(2):
        zp = _per_axis(n, e, n.inputs[2], rank, axis, "zero point")
        zpf = e.op("cast", zp, to=x.dtype, out=n.temp(n.type(zp).shape, x.dtype))
        q = e.op("add", q, zpf)
    _saturate_cast(e, q, y.dtype, n.outputs[0])


@_converter("DynamicQuantizeLinear")
def _dynamic_quantize(n: NodeView) -> None:
    """uint8 with scale = (max(x, 0) - min(x, 0)) / 255 over the whole tensor and zero point
    round(-min / scale), as onnxruntime computes them (an all-zero tensor gets scale 0)."""
    x = n.type(n.inputs[0])
    e = _Expr(n)
    scalar = ()
    lo = e.op("min", e.op("reduce_min", n.inputs[0], out=n.temp(scalar, x.dtype), keepdims=0),
              e.const(0.0, "zero"), out=n.temp(scalar, x.dtype))
    hi = e.op("max", e.op("reduce_max", n.inputs[0], out=n.temp(scalar, x.dtype), keepdims=0),
              e.const(0.0, "zero"), out=n.temp(scalar, x.dtype))
    scale = e.op("div", e.op("sub", hi, lo, out=n.temp(scalar, x.dtype)), e.const(255.0, "range"),
                 out=n.outputs[1] if n.used(1) else n.temp(scalar, x.dtype))
    divisor = e.op("max", scale, e.const(np.finfo(np.float32).tiny, "tiny"),
                   out=n.temp(scalar, x.dtype))
    zp = e.op("round", e.op("div", e.op("neg", lo, out=n.temp(scalar, x.dtype)), divisor,
                            out=n.temp(scalar, x.dtype)), out=n.temp(scalar, x.dtype))
    zp = e.op("clip", zp, e.const(0.0, "qmin"), e.const(255.0, "qmax"),
              out=n.temp(scalar, x.dtype))
    if n.used(2):
        e.op("cast", zp, to="uint8", out=n.outputs[2], dtype="uint8")
    q = e.op("add", e.op("round", e.op("div", n.inputs[0], divisor)), zp)
    _saturate_cast(e, q, "uint8", n.outputs[0])


# ---- QOperator and com.microsoft forms, rewritten on the ONNX graph ----------------------------
class _Builder:
    """New ONNX nodes replacing one quantized node, with fresh names."""

    def __init__(self, node: onnx.NodeProto, taken: set[str], consts: dict[str, np.ndarray]):
        self.node, self.taken, self.consts, self.nodes = node, taken, consts, []

    def fresh(self, base: str) -> str:
        return unique_name(f"{self.node.name}/{base}", self.taken)

    def const(self, base: str, value: np.ndarray) -> str:
        name = self.fresh(base)
        self.consts[name] = np.asarray(value)
        return name

    def add(self, op: str, inputs: list[str], out: str | None = None, domain: str = "",
            **attrs) -> str:
        out = out or self.fresh(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=self.fresh(op), domain=domain,
                                           **attrs))
        return out

    def dequantize(self, x: str, scale: str, zp: str, axis: int | None = None) -> str:
        per_axis = scale not in self.consts or _size(self.consts, scale) > 1
        attrs = {"axis": axis} if axis is not None and per_axis else {}
        return self.add("DequantizeLinear", [x, scale, zp] if zp else [x, scale], **attrs)

    def quantize(self, x: str, scale: str, zp: str, out: str) -> str:
        return self.add("QuantizeLinear", [x, scale, zp] if zp else [x, scale], out)

    def centred(self, x: str, zp: str) -> str:
        """x - zero_point as float32 (integer values, exact)."""
        xf = self.add("Cast", [x], to=onnx.TensorProto.FLOAT)
        if not zp:
            return xf
        return self.add("Sub", [xf, self.add("Cast", [zp], to=onnx.TensorProto.FLOAT)])


def _size(consts, name: str) -> int:
    return int(np.size(consts[name])) if name in consts else 1


def _inputs(node: onnx.NodeProto, count: int) -> list[str]:
    return [*node.input, *[""] * (count - len(node.input))][:count]


def _attrs(node: onnx.NodeProto, drop: tuple[str, ...] = ()) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute if a.name not in drop}


def _qlinear_conv(b: _Builder, node) -> None:
    x, xs, xz, w, ws, wz, ys, yz, bias = _inputs(node, 9)
    ins = [b.dequantize(x, xs, xz), b.dequantize(w, ws, wz, axis=0)]
    if bias:  # int32 at scale x_scale * w_scale (per output channel)
        scale = b.const("bias_scale", np.asarray(b.consts[xs]) * np.asarray(b.consts[ws])) \
            if xs in b.consts and ws in b.consts else b.add("Mul", [xs, ws])
        ins.append(b.dequantize(bias, scale, "", axis=0))
    b.quantize(b.add("Conv", ins, **_attrs(node)), ys, yz, node.output[0])


def _qlinear_matmul(b: _Builder, node) -> None:
    a, as_, az, w, ws, wz, ys, yz = _inputs(node, 8)
    y = b.add("MatMul", [b.dequantize(a, as_, az), b.dequantize(w, ws, wz, axis=-1)])
    b.quantize(y, ys, yz, node.output[0])


def _integer(op: str):
    def rewrite(b: _Builder, node) -> None:
        a, w, az, wz = _inputs(node, 4)
        if az and _size(b.consts, az) > 1:
            raise UnsupportedError(f"node '{node.name}' ({node.op_type}): a per-row zero point "
                                   "of the first input is not supported")
        if op == "Conv" and wz and _size(b.consts, wz) > 1:
            wz = b.const("w_zero_point", np.asarray(b.consts[wz]).reshape(-1, 1, 1, 1))
        y = b.add(op, [b.centred(a, az), b.centred(w, wz)], **_attrs(node))
        b.add("Cast", [y], node.output[0], to=onnx.TensorProto.INT32)
    return rewrite


def _ms_elementwise(op: str, n_inputs: int, **fixed):
    """com.microsoft QLinear<op>: (x, scale, zero point) per input, then the output's."""
    def rewrite(b: _Builder, node) -> None:
        ins = _inputs(node, 3 * n_inputs + 2)
        floats = [b.dequantize(*ins[3 * i:3 * i + 3]) for i in range(n_inputs)]
        attrs = {**_attrs(node, ("channels_last",)), **fixed}
        if _attrs(node).get("channels_last"):
            raise UnsupportedError(f"node '{node.name}' ({node.op_type}): channels_last is not "
                                   "supported")
        b.quantize(b.add(op, floats, **attrs), ins[-2], ins[-1], node.output[0])
    return rewrite


def _qlinear_concat(b: _Builder, node) -> None:
    ys, yz, *rest = node.input
    floats = [b.dequantize(*rest[i:i + 3]) for i in range(0, len(rest), 3)]
    b.quantize(b.add("Concat", floats, **_attrs(node)), ys, yz, node.output[0])


def _dynamic_matmul(b: _Builder, node) -> None:
    a, w, ws, wz, bias = _inputs(node, 5)
    q = [b.fresh("a_q"), b.fresh("a_scale"), b.fresh("a_zero_point")]
    b.nodes.append(helper.make_node("DynamicQuantizeLinear", [a], q,
                                    name=b.fresh("DynamicQuantizeLinear")))
    y = b.add("MatMul", [b.dequantize(*q), b.dequantize(w, ws, wz, axis=-1)],
              None if bias else node.output[0])
    if bias:
        b.add("Add", [y, bias], node.output[0])


def _dynamic_lstm(b: _Builder, node) -> None:
    """Weights [dirs, input, 4 * hidden] (int8, scales per direction or per column) dequantized
    and transposed into a standard LSTM's [dirs, 4 * hidden, input]."""
    ins = _inputs(node, 12)
    weights = []
    for q, s, z in ((ins[1], ins[8], ins[9]), (ins[2], ins[10], ins[11])):
        if q not in b.consts or s not in b.consts:
            raise UnsupportedError(f"node '{node.name}' ({node.op_type}): its weights and scales "
                                   "must be constants")
        qv = b.consts[q].astype(np.float32)
        zv = b.consts[z].astype(np.float32) if z else np.float32(0)
        sv = b.consts[s].astype(np.float32)
        dirs = qv.shape[0]
        w = (qv - zv.reshape(dirs, 1, -1)) * sv.reshape(dirs, 1, -1)
        weights.append(b.const("weight", w.transpose(0, 2, 1).copy()))
    b.nodes.append(helper.make_node("LSTM", [ins[0], *weights, *ins[3:8]], list(node.output),
                                    name=b.fresh("LSTM"), **_attrs(node)))


REWRITES = {
    ("", "QLinearConv"): _qlinear_conv,
    ("", "QLinearMatMul"): _qlinear_matmul,
    ("", "MatMulInteger"): _integer("MatMul"),
    ("", "ConvInteger"): _integer("Conv"),
    (MS_DOMAIN, "QLinearAdd"): _ms_elementwise("Add", 2),
    (MS_DOMAIN, "QLinearMul"): _ms_elementwise("Mul", 2),
    (MS_DOMAIN, "QLinearSigmoid"): _ms_elementwise("Sigmoid", 1),
    (MS_DOMAIN, "QLinearLeakyRelu"): _ms_elementwise("LeakyRelu", 1),
    (MS_DOMAIN, "QLinearGlobalAveragePool"): _ms_elementwise("GlobalAveragePool", 1),
    (MS_DOMAIN, "QLinearAveragePool"): _ms_elementwise("AveragePool", 1),
    (MS_DOMAIN, "QLinearConcat"): _qlinear_concat,
    (MS_DOMAIN, "DynamicQuantizeMatMul"): _dynamic_matmul,
    (MS_DOMAIN, "DynamicQuantizeLSTM"): _dynamic_lstm,
}


def expand_quantized(proto: onnx.ModelProto, consts: dict[str, np.ndarray]) -> dict[str, str]:
    """Rewrite every QOperator / com.microsoft quantized node of ``proto.graph`` as standard ONNX
    ops (in place; new constants into ``consts``). Returns {new node: the node it replaces}, for
    the support table. An unsupported attribute or operand is an UnsupportedError naming the
    node."""
    graph = proto.graph
    taken = {n.name for n in graph.node} | {o for n in graph.node for o in n.output}
    taken |= {v.name for v in graph.input} | set(consts)
    sources: dict[str, str] = {}
    nodes = []
    for node in graph.node:
        domain = "" if node.domain == "ai.onnx" else node.domain
        rewrite = REWRITES.get((domain, node.op_type))
        if rewrite is None:
            nodes.append(node)
            continue
        b = _Builder(node, taken, consts)
        rewrite(b, node)
        nodes += b.nodes
        sources.update({n.name: node.name for n in b.nodes})
    if sources:
        del graph.node[:]
        graph.node.extend(nodes)
    return sources
