"""The spiking IR as a standard ONNX graph (opset 23) that onnxruntime runs to our numbers.

- A static threshold is ``QuantizeLinear(x, scale=vth)`` (per tensor, or per channel of the
  last axis; int8 or int16 as the count range needs; round half to even), cast to int32 and
  ``Clip(+-max_count)``; a dynamic one is ``Clip(mean(Abs(x)) / k)`` with the mean summed in the
  op table's pairwise order from Pad, Gather and Add nodes, so vth is bit-exact, then
  ``Round(x / vth)`` (half to even) and ``Clip``.
- The integer product keeps int8 weights as initializers, cast to float, and runs as an ordinary
  MatMul/Conv on integer-valued float32 tensors. It is exact because every partial sum stays
  below 2^24; the bound is checked per layer at export (max_count, or (k + 1/2) times the
  threshold's reduction size for dynamic thresholds, times the weights' L1 norm or max); a
  linear layer that could exceed it is summed in exact chunks added in int32, a conv is refused.
- Decoding repeats the reference's float32 operations in the reference's order, so outputs agree
  bit for bit unless an upstream float op (erf, exp, ...) rounds differently.
- Every integer product's float result is read only by its int32 Cast, and decoding starts from
  that int32 tensor: no onnxruntime rewrite can fold a decode scale or bias into the integer
  weights (its Conv+Mul / Conv+Add fusions did, at the basic level and above, and counts
  downstream flipped), so every optimisation level gives the same bits.
Every integer IR value (counts, accumulators) keeps its name and int32 type; ``keep`` adds any IR
value as an extra graph output.
"""
from __future__ import annotations

import math
from typing import Iterable

import numpy as np
import onnx
from onnx import helper

from sbcompile.version import __version__
from sbcompile.backends.export_onnx_ops import OPSET, OnnxBuilder, emit_node, tensor_type
from sbcompile.errors import SbcError, UnsupportedError, first_few
from sbcompile.ir.graph import Graph, Node
from sbcompile.ir.ops import (attention_keep, count_limit, dynamic_sum_bound, node_attrs,
                              threshold_axes)

EXACT_LIMIT = 2 ** 24
FLOAT, INT32 = onnx.TensorProto.FLOAT, onnx.TensorProto.INT32


def _encode(b: OnnxBuilder, node: Node, a: dict) -> None:
    x = node.inputs[0]
    counts, vth = node.outputs
    if b.graph.values[x].dtype != "float32":
        raise UnsupportedError(f"node '{node.name}' (spike_encode): input '{x}' is not float32")
    limit = count_limit(a)
    if a["policy"] == "static":
        threshold = b.add("Identity", [b.value(node.inputs[1])], node.name, [vth])
        qtype = np.int8 if limit <= 127 else np.int16 if limit <= 32767 else None
        if qtype is not None:
            zero = b.const(np.zeros((), qtype), f"{node.name}.zero_point")
            scale = b.param(node.inputs[1])
            per_channel = scale is None or scale.size > 1
            if not per_channel:  # QuantizeLinear reads a 1-element scale as per axis
                scale = b.const(scale.reshape(()), f"{node.name}.scale")
            q = b.add("QuantizeLinear", [b.value(x), threshold if per_channel else scale, zero],
                      f"{node.name}.q", axis=-1 if per_channel else None)
            q = b.add("Cast", [q], f"{node.name}.q", to=INT32)
            bounds = [b.const(np.int32(s * limit), f"{node.name}.limit") for s in (-1, 1)]
            b.add("Clip", [q, *bounds], node.name, [counts])
            return
    else:
        mean = _pairwise_mean(b, node, b.add("Abs", [b.value(x)], node.name),
                              b.graph.values[x].shape, a["granularity"])
        ratio = b.add("Div", [mean, b.const(np.float32(a["k"]), f"{node.name}.k")], node.name)
        threshold = b.add("Clip", [ratio, b.const(np.float32(a["vth_min"]), f"{node.name}.min"),
                                   b.const(np.float32(a["vth_max"]), f"{node.name}.max")],
                          node.name, [vth])
    rounded = b.add("Round", [b.add("Div", [b.value(x), threshold], node.name)], node.name)
    bounds = [b.const(np.float32(s * limit), f"{node.name}.limit") for s in (-1, 1)]
    b.floats[counts] = b.add("Clip", [rounded, *bounds], f"{counts}.f")
    b.add("Cast", [b.floats[counts]], node.name, [counts], to=INT32)


def _pairwise_mean(b: OnnxBuilder, node: Node, x_abs: str, shape: tuple,
                   granularity: str) -> str:
    """mean(|x|) over the threshold's axes, summed in the op table's order, so the threshold
    equals the reference's bit for bit (onnxruntime's ReduceMean sums in another order): the
    row of L elements zero-padded (``Pad``) to the next power of two, then level by level
    element 2i plus element 2i+1 (``Reshape`` to pairs, two ``Gather``, ``Add``), and the sum
    divided by L."""
    reduced = [shape[i] for i in threshold_axes(len(shape), granularity)]
    if not all(isinstance(d, int) for d in reduced):
        raise UnsupportedError(f"node '{node.name}' (spike_encode): a dynamic threshold over "
                               f"dims {list(reduced)} needs them static for the export")
    row = int(math.prod(reduced))
    width = 1 << max(row - 1, 0).bit_length()
    name = node.name

    def i64(values, tag: str) -> str:
        return b.const(np.asarray(values, np.int64), f"{name}.{tag}")

    level = b.add("Reshape", [x_abs, i64([-1, row], "rows")], name)
    if width > row:
        level = b.add("Pad", [level, i64([0, 0, 0, width - row], "pads")], name)
    while width > 1:
        pairs = b.add("Reshape", [level, i64([-1, width // 2, 2], f"pairs{width}")], name)
        level = b.add("Add", [b.add("Gather", [pairs, i64(0, "even")], name, axis=2),
                              b.add("Gather", [pairs, i64(1, "odd")], name, axis=2)], name)
        width //= 2
    total = b.add("Reshape", [level, i64([-1], "total")], name)  # [R]
    mean = b.add("Div", [total, b.const(np.float32(row), f"{name}.n")], name)
    kept = b.add("Shape", [b.value(node.inputs[0])], name, end=len(shape) - len(reduced))
    ones = i64([1] * len(reduced), "ones")
    return b.add("Reshape", [mean, b.add("Concat", [kept, ones], name, axis=0)], name)


def _exact_bound(b: OnnxBuilder, node: Node, weight: np.ndarray, group: int) -> float:
    """An upper bound of |partial sum| of the integer product (see the module docstring)."""
    enc = next((n for n in b.graph.nodes if node.inputs[0] in n.outputs), None)
    if enc is None or enc.op != "spike_encode":
        raise UnsupportedError(f"node '{node.name}' ({node.op}): its counts do not come from a "
                               "spike_encode")
    a = node_attrs(enc)
    w = np.abs(weight.astype(np.int64))
    rows = w.reshape(w.shape[0], -1, group) if node.op == "spike_linear" else w.reshape(
        w.shape[0], 1, -1)
    bound = float(count_limit(a) * rows.sum(axis=2).max(initial=0))
    shape = b.graph.values[enc.inputs[0]].shape
    reduced = [shape[i] for i in threshold_axes(len(shape), a["granularity"])]
    if a["policy"] == "dynamic" and all(isinstance(d, int) for d in reduced):
        bound = min(bound, float(w.max(initial=0)) * dynamic_sum_bound(a, math.prod(reduced)))
    return bound


def _product_weight(b: OnnxBuilder, node: Node, group: int) -> np.ndarray:
    weight = b.param(node.inputs[1])
    if weight is None:
        raise UnsupportedError(f"node '{node.name}' ({node.op}): its weight is not a constant")
    bound = _exact_bound(b, node, weight, group)
    if bound * 1.001 >= EXACT_LIMIT:
        raise UnsupportedError(f"node '{node.name}' ({node.op}): integer partial sums can reach "
                               f"{bound:.4g} >= 2^24, beyond exact float32 accumulation; "
                               f"{_count_advice(weight, group, node.op)}")
    return weight


def _count_advice(weight: np.ndarray, group: int, op: str) -> str:
    """The --set value that keeps every partial sum below 2^24."""
    w = np.abs(weight.astype(np.int64))
    rows = w.reshape(w.shape[0], -1, group) if op == "spike_linear" else w.reshape(
        w.shape[0], 1, -1)
    fits = int((EXACT_LIMIT - 1) / 1.001 // max(int(rows.sum(axis=2).max(initial=0)), 1))
    return (f"--set max_count={fits} fits (or compile with --calib so the bound is measured)"
            if fits >= 1 else "its weights' row sums alone exceed 2^24")


def _linear(b: OnnxBuilder, node: Node, a: dict) -> None:
    """acc [..., G, N] = counts [..., G, 1, gs] @ W [G, gs, N]. A group whose partial sums could
    reach 2^24 is split into P chunks that cannot: each chunk's product is exact in float32, cast
    to int32 and the chunks summed in int32 (exact)."""
    n, k = b.graph.values[node.inputs[1]].shape
    group = a["group_size"] or k
    weight = b.param(node.inputs[1])
    if weight is None:
        raise UnsupportedError(f"node '{node.name}' ({node.op}): its weight is not a constant")
    chunk = _exact_chunk(b, node, weight, group)
    g, parts = k // group, group // chunk
    lead = [0] * (len(b.graph.values[node.inputs[0]].shape) - 1)
    counts = b.as_float(node.inputs[0])
    if g * parts > 1:
        counts = b.add("Reshape", [counts, b.const(np.array(lead + [g * parts, 1, chunk],
                                                            np.int64), f"{node.name}.shape")],
                       node.name)
    wq = b.const(weight.reshape(n, g * parts, chunk).transpose(1, 2, 0).reshape(
        (g * parts, chunk, n) if g * parts > 1 else (k, n)), f"{node.inputs[1]}.T")
    y = b.add("MatMul", [counts, b.add("Cast", [wq], f"{wq}.f", to=FLOAT)], node.name)
    acc = node.outputs[0]
    if parts == 1:
        shape = b.const(np.array(lead + [g, n], np.int64), f"{node.name}.acc_shape")
        b.add("Cast", [b.add("Reshape", [y, shape], f"{acc}.f")], node.name, [acc], to=INT32)
        return
    shape = b.const(np.array(lead + [g, parts, n], np.int64), f"{node.name}.chunk_shape")
    chunks = b.add("Cast", [b.add("Reshape", [y, shape], f"{acc}.f")], node.name, to=INT32)
    b.add("ReduceSum", [chunks, b.const(np.array([-2], np.int64), f"{node.name}.chunk_axis")],
          node.name, [acc], keepdims=0)


def _exact_chunk(b: OnnxBuilder, node: Node, weight: np.ndarray, group: int) -> int:
    """The largest divisor of ``group`` whose partial sums stay below 2^24."""
    for parts in range(1, group + 1):
        if group % parts == 0 and \
                _exact_bound(b, node, weight, group // parts) * 1.001 < EXACT_LIMIT:
            return group // parts
    raise UnsupportedError(f"node '{node.name}' ({node.op}): integer partial sums reach 2^24 "
                           "even one input at a time; lower max_count")


def _conv(b: OnnxBuilder, node: Node, a: dict) -> None:
    weight = _product_weight(b, node, 0)
    wq = b.const(weight, f"{node.inputs[1]}.q")
    acc = node.outputs[0]
    y = b.add("Conv", [b.as_float(node.inputs[0]), b.add("Cast", [wq], f"{wq}.f", to=FLOAT)],
              f"{acc}.f", strides=a["strides"], pads=a["pads"], dilations=a["dilations"],
              group=a["group"])
    b.add("Cast", [y], node.name, [acc], to=INT32)


def _decode(b: OnnxBuilder, node: Node, a: dict) -> None:
    """The reference's float32 order: (acc * scale) summed over groups in order, * vth, + bias."""
    acc, vth = node.inputs[:2]
    scale = node.inputs[2] if len(node.inputs) > 2 else ""
    bias = node.inputs[3] if len(node.inputs) > 3 else ""
    rank = len(b.graph.values[acc].shape)
    axis_shape = (1, -1) + (1,) * (rank - 2) if a["layout"] == "conv" else (-1,)
    y = b.as_float(acc)
    if scale and a["layout"] == "linear":
        prod = b.add("Mul", [y, b.value(scale)], node.name)
        groups = b.graph.values[acc].shape[-2]
        y = ""
        for g in range(groups):
            part = b.add("Gather", [prod, b.const(np.array(g, np.int64), f"{node.name}.g")],
                         node.name, axis=-2)
            y = b.add("Add", [y, part], node.name) if y else part
    elif scale:
        y = b.add("Mul", [y, _reshaped(b, node, scale, axis_shape)], node.name)
    y = b.add("Mul", [y, b.value(vth)], node.name, None if bias else list(node.outputs))
    if bias:
        b.add("Add", [y, _reshaped(b, node, bias, axis_shape)], node.name, list(node.outputs))


def _reshaped(b: OnnxBuilder, node: Node, name: str, shape: tuple) -> str:
    array = b.param(name)
    if array is None:
        raise UnsupportedError(f"node '{node.name}' (spike_decode): '{name}' is not a constant")
    return b.const(array.astype(np.float32).reshape(shape), f"{name}.r")


def _heads(b: OnnxBuilder, node: Node, name: str) -> int:
    """The static head count (axis 1) of ``name``; batch and lengths may be symbolic."""
    heads = b.graph.values[name].shape[1]
    if not isinstance(heads, int):
        raise UnsupportedError(f"node '{node.name}' ({node.op}): needs the static head count "
                               f"of '{name}', which is {heads!r}")
    return heads


def _by_heads(b: OnnxBuilder, x: str, heads: int, base: str, outputs=None) -> str:
    """[B, H, T, X] as [B, heads, H/heads * T, X], and back: the query heads reading one KV
    head are contiguous, so one batched product per KV head serves GQA."""
    return b.add("Reshape", [x, b.const(np.array([0, heads, -1, 0], np.int64), base)], base,
                 outputs)


def _scores(b: OnnxBuilder, node: Node, a: dict) -> None:
    """Query counts x int8 keys as a float32 MatMul of integer-valued tensors, exact because
    every partial sum stays below 2^24 (the query encoder's bound (k + 1/2) D, or its
    max_count D, times 128), cast to int32."""
    q, k = node.inputs
    hq, hkv = _heads(b, node, q), _heads(b, node, k)
    d = b.graph.values[q].shape[3]
    enc = next((n for n in b.graph.nodes if q in n.outputs), None)
    if enc is None or enc.op != "spike_encode" or not isinstance(d, int):
        raise UnsupportedError(f"node '{node.name}' (spike_scores): its query counts do not come "
                               "from a spike_encode over a static head dimension")
    ea = node_attrs(enc)
    per_row = count_limit(ea) * d
    if ea["policy"] == "dynamic":
        per_row = min(per_row, dynamic_sum_bound(ea, d))
    if per_row * 128 * 1.001 >= EXACT_LIMIT:
        raise UnsupportedError(f"node '{node.name}' (spike_scores): integer partial sums can "
                               f"reach {per_row * 128:.4g} >= 2^24, beyond exact float32 "
                               "accumulation")
    keys = b.add("Transpose", [b.as_float(k)], node.name, perm=[0, 1, 3, 2])
    product = b.add("MatMul", [_by_heads(b, b.as_float(q), hkv, f"{node.name}.rows"), keys],
                    node.name)
    scores = _by_heads(b, product, hq, f"{node.outputs[0]}.f")
    b.floats[node.outputs[0]] = scores
    b.add("Cast", [scores], node.name, [node.outputs[0]], to=INT32)


def _spike_attention(b: OnnxBuilder, node: Node, a: dict) -> None:
    """The reference's float32 logits (acc * (vth * scale) * k_scale^T), the band and mask,
    Softmax (a row with every key masked gives zeros, as in the IR), times the dequantised
    values, one batched product per KV head."""
    acc, q_vth, k_scale, v, v_scale = node.inputs[:5]
    mask = node.inputs[5] if len(node.inputs) > 5 else ""
    hq, hkv, name = _heads(b, node, acc), _heads(b, node, v), node.name
    ks = b.add("Transpose", [b.value(k_scale)], name, perm=[0, 1, 3, 2])  # [B, Hkv, 1, Tk]
    ks = b.add("Reshape", [ks, b.const(np.array([0, hkv, 1, 1, -1], np.int64), name)], name)
    ks = b.add("Expand", [ks, b.const(np.array([1, 1, hq // hkv, 1, 1], np.int64), name)], name)
    ks = b.add("Reshape", [ks, b.const(np.array([0, hq, 1, -1], np.int64), name)], name)
    qs = b.add("Mul", [b.value(q_vth), b.const(np.float32(a["scale"]), f"{name}.scale")], name)
    logits = b.add("Mul", [b.add("Mul", [b.as_float(acc), qs], name), ks], name)
    keep = ""
    if a["causal"] or a["window"] > 0:
        tq, tk = (b.static_shape(node.inputs[0], node)[i] for i in (2, 3))
        keep = b.const(attention_keep(tq, tk, a["causal"], a["window"]), f"{name}.keep")
    if mask and b.graph.values[mask].dtype == "bool":
        keep = b.add("And", [b.value(mask), keep], name) if keep else b.value(mask)
    elif mask:
        logits = b.add("Add", [logits, b.value(mask)], name)
    if keep:
        logits = b.add("Where", [keep, logits, b.const(np.float32(-np.inf), f"{name}.ninf")],
                       name)
    p = b.add("Softmax", [logits], name, axis=-1)
    p = b.add("Where", [b.add("IsNaN", [p], name), b.const(np.float32(0), f"{name}.zero"), p],
              name)
    values = b.add("Mul", [b.as_float(v), b.value(v_scale)], name)  # [B, Hkv, Tk, Dv]
    out = b.add("MatMul", [_by_heads(b, p, hkv, f"{name}.rows"), values], name)
    _by_heads(b, out, hq, f"{name}.out", list(node.outputs))


SPIKE_EMITTERS = {"spike_encode": _encode, "spike_linear": _linear, "spike_conv": _conv,
                  "spike_decode": _decode, "spike_scores": _scores,
                  "spike_attention": _spike_attention}


def _build(graph: Graph) -> tuple[OnnxBuilder, list[tuple[str, str]]]:
    """Emit every node; return the builder and (node, reason) for each node ONNX cannot hold."""
    b = OnnxBuilder(graph)
    problems = []
    for node in graph.nodes:
        try:
            attrs = node_attrs(node)
            if node.op in SPIKE_EMITTERS:
                SPIKE_EMITTERS[node.op](b, node, attrs)
            else:
                emit_node(b, node, attrs)
        except UnsupportedError as e:
            problems.append((node.name, str(e)))
    for name in graph.outputs:  # an ONNX graph output must be a node's output
        if name in graph.params:
            b.add("Identity", [b.const(graph.params[name], f"{name}.value")], name, [name])
    return b, problems


def inexpressible(graph: Graph) -> list[tuple[str, str]]:
    """(node name, reason) per node the onnx-qdq export cannot hold (empty: all can)."""
    return _build(graph)[1]


def to_onnx(graph: Graph, keep: Iterable[str] = ()) -> onnx.ModelProto:
    """The graph as a checked ONNX model; ``keep`` names IR values added as graph outputs."""
    b, problems = _build(graph)
    if problems:
        raise UnsupportedError(f"onnx-qdq cannot hold {len(problems)} node(s): "
                               + first_few([reason for _, reason in problems]))
    outputs = list(dict.fromkeys([*graph.outputs, *keep]))
    unknown = [o for o in outputs if o not in graph.values]
    if unknown:
        raise SbcError(f"'{unknown[0]}' is not a value of graph '{graph.name}'")
    nodes = _live(b.nodes, outputs)
    used = {i for n in nodes for i in n.input} | set(outputs)
    model = helper.make_model(
        helper.make_graph(nodes, graph.name, [_info(graph, i) for i in graph.inputs],
                          [_info(graph, o) for o in outputs],
                          [t for name, t in b.inits.items() if name in used]),
        opset_imports=[helper.make_opsetid("", OPSET)], producer_name="sbcompile",
        producer_version=__version__)
    onnx.checker.check_model(model)
    return model


def notes(graph: Graph) -> list[str]:
    return []  # a default onnxruntime session runs the file as it is


def to_bytes(graph: Graph) -> bytes:
    return to_onnx(graph).SerializeToString()


def _info(graph: Graph, name: str) -> onnx.ValueInfoProto:
    v = graph.values[name]
    return helper.make_tensor_value_info(name, tensor_type(v.dtype), list(v.shape))


def _live(nodes: list[onnx.NodeProto], outputs: list[str]) -> list[onnx.NodeProto]:
    """The nodes some output depends on, in order."""
    needed, keep = set(outputs), []
    for n in reversed(nodes):
        if needed & set(n.output):
            keep.append(n)
            needed.update(i for i in n.input if i)
    return keep[::-1]
