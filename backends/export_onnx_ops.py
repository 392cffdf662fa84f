"""IR float, shape and attention ops back to standard ONNX (opset 23) nodes.

``OnnxBuilder`` collects nodes and initializers under the IR's value names (an IR value keeps its
name, dtype and shape in the ONNX graph); ``EMITTERS[op](builder, node, attrs)`` writes one IR
node. An op without an emitter, or an emitter that raises UnsupportedError, marks a node the
format cannot hold.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from sbcompile.errors import UnsupportedError
from sbcompile.ir.graph import Graph, Node, unique_name
from sbcompile.ir.ops import OPS, attention_keep

OPSET = 23


def tensor_type(dtype: str) -> int:
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


class OnnxBuilder:
    """ONNX nodes and initializers for one IR graph; ``floats`` maps an integer IR value to a
    float32 tensor holding the same (exactly representable) numbers."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.nodes: list[onnx.NodeProto] = []
        self.inits: dict[str, onnx.TensorProto] = {}
        self.floats: dict[str, str] = {}
        self._taken = set(graph.values) | {n.name for n in graph.nodes}

    def fresh(self, base: str) -> str:
        return unique_name(base, self._taken)

    def value(self, name: str) -> str:
        """An IR value as an ONNX input (parameters become initializers on first use)."""
        if name and name in self.graph.params and name not in self.inits:
            self.inits[name] = numpy_helper.from_array(np.asarray(self.graph.params[name]), name)
        return name

    def const(self, array: np.ndarray, base: str) -> str:
        name = self.fresh(base)
        self.inits[name] = numpy_helper.from_array(np.asarray(array), name)
        return name

    def param(self, name: str) -> np.ndarray | None:
        return self.graph.params.get(name)

    def add(self, op_type: str, inputs: list[str], base: str, outputs: list[str] | None = None,
            **attrs) -> str:
        """Append a node; returns its first output (a fresh name from ``base`` unless given)."""
        outs = outputs or [self.fresh(base)]
        attrs = {k: v for k, v in attrs.items() if v is not None}
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, self.fresh(base),
                                           **attrs))
        return outs[0]

    def as_float(self, name: str) -> str:
        """A float32 tensor with the values of IR value ``name``."""
        if name not in self.floats:
            if self.graph.values[name].dtype == "float32":
                return self.value(name)
            self.floats[name] = self.add("Cast", [self.value(name)], f"{name}.f",
                                         to=onnx.TensorProto.FLOAT)
        return self.floats[name]

    def static_shape(self, name: str, node: Node) -> tuple[int, ...]:
        shape = self.graph.values[name].shape
        if not all(isinstance(d, int) for d in shape):
            raise UnsupportedError(f"node '{node.name}' ({node.op}): needs the static shape of "
                                   f"'{name}', which is {list(shape)}")
        return shape


EMITTERS: dict[str, Callable[[OnnxBuilder, Node, dict], None]] = {}

def _direct(b: OnnxBuilder, node: Node, a: dict) -> None:
    """An op the table names an ONNX op for: same operands, attributes renamed by the table
    (attributes left None take ONNX defaults)."""
    spec = OPS[node.op]
    attrs = {spec.onnx_attr(key): value for key, value in a.items()}
    b.add(spec.onnx, [b.value(i) for i in node.inputs], node.name, list(node.outputs), **attrs)


for _spec in OPS.values():  # emitters below replace it where the mapping is not one to one
    if _spec.onnx:
        EMITTERS[_spec.name] = _direct


def _emitter(*ops: str):
    def register(fn):
        for op in ops:
            EMITTERS[op] = fn
        return fn
    return register


@_emitter("linear")
def _linear(b: OnnxBuilder, node: Node, a: dict) -> None:
    x, w = node.inputs[:2]
    weight = b.param(w)
    wt = (b.const(weight.T, f"{w}.T") if weight is not None
          else b.add("Transpose", [b.value(w)], f"{w}.T", perm=[1, 0]))
    bias = node.inputs[2] if len(node.inputs) > 2 else ""
    y = b.add("MatMul", [b.value(x), wt], node.name, None if bias else list(node.outputs))
    if bias:
        b.add("Add", [y, b.value(bias)], node.name, list(node.outputs))


@_emitter("conv_transpose")
def _conv_transpose(b: OnnxBuilder, node: Node, a: dict) -> None:
    """ONNX ConvTranspose takes no negative pads (the IR's form of output_shape beyond the
    natural size): those become zeros padded onto the result, and the bias is added after."""
    n_sp = len(b.graph.values[node.inputs[1]].shape) - 2
    pads = list(a["pads"] or [0] * (2 * n_sp))
    attrs = {"strides": a["strides"], "dilations": a["dilations"], "group": a["group"],
             "output_padding": a["output_padding"], "pads": [max(p, 0) for p in pads]}
    inputs = [b.value(i) for i in node.inputs]
    if min(pads) >= 0:
        b.add("ConvTranspose", inputs, node.name, list(node.outputs), **attrs)
        return
    y = b.add("ConvTranspose", inputs[:2], node.name, **attrs)
    grow = [0, 0] + [max(-p, 0) for p in pads[:n_sp]] + [0, 0] + [max(-p, 0) for p in pads[n_sp:]]
    y = b.add("Pad", [y, b.const(np.array(grow, np.int64), f"{node.name}.grow")], node.name,
              None if len(inputs) > 2 else list(node.outputs))
    if len(inputs) > 2:
        shape = np.array([-1] + [1] * n_sp, np.int64)
        bias = b.add("Reshape", [inputs[2], b.const(shape, f"{node.name}.bias_shape")], node.name)
        b.add("Add", [y, bias], node.name, list(node.outputs))


@_emitter("cumprod")
def _cumprod(b: OnnxBuilder, node: Node, a: dict) -> None:
    raise UnsupportedError(f"node '{node.name}' (cumprod): CumProd needs opset 26, the export "
                           f"writes opset {OPSET}")


@_emitter("cast")
def _cast(b: OnnxBuilder, node: Node, a: dict) -> None:
    b.add("Cast", [b.value(node.inputs[0])], node.name, list(node.outputs),
          to=tensor_type(a["to"]))


@_emitter("mod")
def _mod(b: OnnxBuilder, node: Node, a: dict) -> None:
    """ONNX Mod requires fmod=1 on floats: a float mod with the sign of b is fmod(a, b), plus b
    where that is nonzero and of the other sign (numpy's definition)."""
    x, y = (b.value(i) for i in node.inputs)
    if a["fmod"] or b.graph.values[node.inputs[0]].dtype[0] not in "f":
        b.add("Mod", [x, y], node.name, list(node.outputs), fmod=int(a["fmod"]))
        return
    r = b.add("Mod", [x, y], node.name, fmod=1)
    zero = b.add("CastLike", [b.const(np.float32(0), f"{node.name}.zero"), r], node.name)
    other_sign = b.add("Xor", [b.add("Less", [r, zero], node.name),
                               b.add("Less", [y, zero], node.name)], node.name)
    fix = b.add("And", [other_sign, b.add("Not", [b.add("Equal", [r, zero], node.name)],
                                          node.name)], node.name)
    b.add("Where", [fix, b.add("Add", [r, y], node.name), r], node.name, list(node.outputs))


@_emitter("silu")
def _silu(b: OnnxBuilder, node: Node, a: dict) -> None:
    x = b.value(node.inputs[0])
    b.add("Mul", [x, b.add("Sigmoid", [x], node.name)], node.name, list(node.outputs))


@_emitter("rms_norm")
def _rms_norm(b: OnnxBuilder, node: Node, a: dict) -> None:
    """RMSNormalization requires a scale: ones over the normalised dims when the IR has none."""
    x = node.inputs[0]
    if len(node.inputs) > 1 and node.inputs[1]:
        scale = b.value(node.inputs[1])
    else:
        shape = b.static_shape(x, node)
        axis = a["axis"] % len(shape)
        scale = b.const(np.ones(shape[axis:], np.float32), f"{node.name}.scale")
    b.add("RMSNormalization", [b.value(x), scale], node.name, list(node.outputs),
          axis=a["axis"], epsilon=a["epsilon"])


@_emitter("reduce_mean", "reduce_sum", "reduce_max", "reduce_min", "reduce_prod")
def _reduce(b: OnnxBuilder, node: Node, a: dict) -> None:
    op_type = "Reduce" + node.op[len("reduce_"):].capitalize()
    inputs = [b.value(i) for i in node.inputs]
    if a["axes"] is not None:
        inputs.append(b.const(np.array(a["axes"], np.int64), f"{node.name}.axes"))
    b.add(op_type, inputs, node.name, list(node.outputs), keepdims=int(a["keepdims"]))


@_emitter("constant_of_shape")
def _constant_of_shape(b: OnnxBuilder, node: Node, a: dict) -> None:
    value = numpy_helper.from_array(np.array([a["value"]], dtype=np.dtype(a["dtype"])))
    b.add("ConstantOfShape", [b.value(node.inputs[0])], node.name, list(node.outputs),
          value=value)


@_emitter("attention")
def _attention(b: OnnxBuilder, node: Node, a: dict) -> None:
    """ONNX Attention (GQA by head counts); causal and window masks are built as a constant
    boolean [Tq, Tk] mask (bottom-right aligned, as the IR specifies) and combined with any
    mask input."""
    q, k, v = (b.value(i) for i in node.inputs[:3])
    mask = b.value(node.inputs[3]) if len(node.inputs) > 3 and node.inputs[3] else ""
    if mask and _mask_needs_expand(b, node):  # onnxruntime wants its last dims [Tq, Tk]
        shape = tuple(b.graph.values[node.inputs[3]].shape)
        lengths = tuple(b.static_shape(node.inputs[i], node)[2] for i in (0, 1))
        target = np.array((1,) * (2 - len(shape)) + shape[:-2] + lengths, np.int64)
        mask = b.add("Expand", [mask, b.const(target, f"{node.name}.mask_shape")], node.name)
    if a["causal"] or a["window"] > 0:
        tq = b.static_shape(node.inputs[0], node)[2]
        tk = b.static_shape(node.inputs[1], node)[2]
        keep = attention_keep(tq, tk, a["causal"], a["window"])
        if not mask:
            mask = b.const(keep, f"{node.name}.keep")
        elif b.graph.values[node.inputs[3]].dtype == "bool":
            mask = b.add("And", [mask, b.const(keep, f"{node.name}.keep")], node.name)
        else:
            bias = np.where(keep, 0.0, -np.inf).astype(np.float32)
            mask = b.add("Add", [mask, b.const(bias, f"{node.name}.keep")], node.name)
    b.add("Attention", [q, k, v, mask] if mask else [q, k, v], node.name, list(node.outputs),
          scale=None if a["scale"] is None else float(a["scale"]))


def _mask_needs_expand(b: OnnxBuilder, node: Node) -> bool:
    shape = b.graph.values[node.inputs[3]].shape
    lengths = (b.graph.values[node.inputs[0]].shape[2], b.graph.values[node.inputs[1]].shape[2])
    return len(shape) < 2 or tuple(shape[-2:]) != lengths


def emit_node(b: OnnxBuilder, node: Node, attrs: dict) -> None:
    """Emit one IR node or raise UnsupportedError naming it."""
    emitter = EMITTERS.get(node.op)
    if emitter is None:
        raise UnsupportedError(f"node '{node.name}' ({node.op}): no standard ONNX form")
    emitter(b, node, attrs)



@_emitter("batch_norm")
def _batch_norm(b: OnnxBuilder, node: Node, a: dict) -> None:
    """In float64, rounded to the input's dtype once, as the reference computes it (float32
    BatchNormalization rounds each step and differs in the last bit)."""
    dtype = b.graph.values[node.inputs[0]].dtype
    wide = [b.add("Cast", [b.value(i)], node.name, to=onnx.TensorProto.DOUBLE)
            for i in node.inputs]
    y = b.add("BatchNormalization", wide, node.name, epsilon=a["epsilon"])
    b.add("Cast", [y], node.name, list(node.outputs), to=tensor_type(dtype))
