"""Constant folding on the ONNX graph, before lowering.

A node folds when every input is constant (initializers, Constant nodes and earlier folds); it is
evaluated by onnx's own reference evaluator. ``Shape`` and ``Size`` of a statically shaped value
fold too, and so do ``Gather``/``Slice`` picking static dims out of a partly symbolic shape.
IR parameters must be finite, so a result holding +-Inf (masks built with -inf) is kept only when
it is uniform (lowering makes it a ``constant_of_shape`` node); a node whose result mixes Inf with
other values is left to run at runtime.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper
from onnx.reference import ReferenceEvaluator

from sbcompile.errors import SbcError
from sbcompile.ir.graph import Value

# Ops whose value is not a function of their inputs.
_NONDETERMINISTIC = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike",
                     "Multinomial", "Bernoulli"}


def initializers(proto: onnx.ModelProto, label: str) -> dict[str, np.ndarray]:
    """The model's initializers as numpy arrays. NaN in one, or Inf mixed with other values, is an
    error naming it; a uniform +-Inf (an open Clip bound, a mask fill) is kept like a folded one."""
    consts = {}
    for t in proto.graph.initializer:
        arr = numpy_helper.to_array(t)
        if not _storable(arr):
            raise SbcError(f"{label}: initializer '{t.name}' contains NaN or Inf")
        consts[t.name] = arr
    for sparse in proto.graph.sparse_initializer:
        consts[sparse.values.name] = numpy_helper.to_array(onnx.helper.make_tensor(
            sparse.values.name, sparse.values.data_type, list(sparse.dims),
            _densify(sparse).ravel().tolist()))
    return consts


def _densify(sparse: onnx.SparseTensorProto) -> np.ndarray:
    values = numpy_helper.to_array(sparse.values)
    dense = np.zeros(list(sparse.dims), dtype=values.dtype).ravel()
    dense[numpy_helper.to_array(sparse.indices).reshape(len(values), -1)[:, 0]] = values
    return dense.reshape(list(sparse.dims))


def fold_constants(proto: onnx.ModelProto, consts: dict[str, np.ndarray],
                   types: dict[str, Value | str], opsets: dict[str, int]
                   ) -> tuple[list[onnx.NodeProto], dict[str, str]]:
    """Fold what can be folded into ``consts`` (in place). Returns the nodes left to lower and, for
    each folded node, the reason (for the support table)."""
    remaining: list[onnx.NodeProto] = []
    folded: dict[str, str] = {}
    partial_shapes: dict[str, list] = {}
    for node in proto.graph.node:
        value = _fold(node, consts, types, opsets, partial_shapes)
        if value is None or not all(_storable(np.asarray(v)) for v in value):
            remaining.append(node)
            continue
        for name, arr in zip(node.output, value):
            if name:
                consts[name] = np.asarray(arr)
        folded[node.name] = "folded to a constant"
    return remaining, folded


def _fold(node, consts, types, opsets, partial_shapes):
    if node.domain not in ("", "ai.onnx") or node.op_type in _NONDETERMINISTIC:
        return None
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
           for a in node.attribute):
        return None
    if node.op_type in ("Shape", "Size"):
        return _fold_shape(node, types, partial_shapes)
    if node.op_type in ("Gather", "Slice") and node.input[0] in partial_shapes:
        return _fold_shape_pick(node, consts, partial_shapes)
    inputs = [i for i in node.input if i]
    if not all(i in consts for i in inputs):
        return None
    try:
        evaluator = ReferenceEvaluator(node, opsets={d or "": v for d, v in opsets.items()})
        return evaluator.run(None, {i: consts[i] for i in inputs})
    except Exception as e:  # onnx.reference raises many types; report the node
        raise SbcError(f"node '{node.name}' ({node.op_type}): evaluating it on constants failed: "
                       f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


def _fold_shape(node, types, partial_shapes):
    v = types.get(node.input[0])
    if not isinstance(v, Value):
        return None
    if node.op_type == "Size":
        return [np.array(int(np.prod(v.shape)), np.int64)] if v.is_static else None
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    dims = list(v.shape)[attrs.get("start", 0):attrs.get("end", len(v.shape))]
    if all(isinstance(d, int) for d in dims):
        return [np.array(dims, np.int64)]
    partial_shapes[node.output[0]] = dims
    return None


def _fold_shape_pick(node, consts, partial_shapes):
    """Gather (constant indices) or Slice (constant bounds) of a partly symbolic shape."""
    dims = np.array(partial_shapes[node.input[0]], dtype=object)
    if not all(i in consts for i in node.input[1:] if i):
        return None
    if node.op_type == "Gather":
        picked = dims[consts[node.input[1]]]
    else:
        bounds = [consts[i] if i else None for i in node.input[1:]]
        step = bounds[3][0] if len(bounds) > 3 and bounds[3] is not None else 1
        picked = dims[int(bounds[0][0]):int(bounds[1][0]):int(step)]  # a 1-D shape: one axis
    flat = np.ravel(picked)
    if all(isinstance(d, int) for d in flat):
        return [np.array(picked.tolist() if picked.ndim else int(picked), np.int64)]
    if node.op_type == "Slice":
        partial_shapes[node.output[0]] = list(flat)
    return None


def _storable(arr: np.ndarray) -> bool:
    """Finite, or one repeated +-Inf (see the module docstring)."""
    if arr.dtype.kind != "f" or np.all(np.isfinite(arr)):
        return True
    return arr.size > 0 and np.isinf(arr.flat[0]) and np.all(arr == arr.flat[0])
