"""Linear rules: a MatMul by a constant 2-D weight, and the bias Add after it, become one
``Linear`` (``FUSED_DOMAIN``, weight stored [N, K] as the IR's linear has it). Gemm lowers to a
linear by itself; this covers the MatMul + Add that exporters write for inputs of rank 3 and up.
"""
from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import pattern

from sbcompile.frontends.rewrite_base import FUSED_DOMAIN, array, dims, sourced


class LinearFromMatMul(pattern.RewriteRuleClassBase):
    """MatMul(x, W), W a constant float [K, N] -> Linear(x, W^T)."""

    def pattern(self, op, x, w):
        return op.MatMul(x, w)

    def check(self, context, x, w, **_):
        weight = array(w)
        return (weight is not None and weight.ndim == 2 and weight.dtype.kind == "f"
                and dims(x) is not None and len(dims(x)) >= 1)

    def rewrite(self, op, x, w):
        return op.Linear(x, _transposed(op, w), _domain=FUSED_DOMAIN)


def _transposed(op, w: ir.Value) -> ir.Value:
    """W^T as an initializer, made once however many MatMuls read W (the steps of an unrolled
    recurrence share their weights: one parameter, not one copy per step)."""
    name = f"{w.name}_t"
    graph = w.graph
    if graph is not None and name in graph.initializers:
        return graph.initializers[name]
    return op.initializer(ir.tensor(np.ascontiguousarray(array(w).T)), name=name)


class LinearBias(pattern.RewriteRuleClassBase):
    """Linear(x, W) + b, b a constant broadcasting along N only -> Linear(x, W, b)."""

    def pattern(self, op, x, w, b):
        return op.Add(op.Linear(x, w, _domain=FUSED_DOMAIN, _outputs=["y"]), b)

    def check(self, context, w, b, y, **_):
        bias, n_out = array(b), array(w).shape[0]
        return (bias is not None and bias.dtype == y.dtype.numpy() and bias.size == n_out
                and bias.shape[-1:] == (n_out,) and bias.ndim <= len(dims(y)))

    def rewrite(self, op, x, w, b, y):
        bias = ir.tensor(np.ascontiguousarray(array(b).reshape(-1)))
        return op.Linear(x, w, op.initializer(bias, name=f"{y.name}/bias"),
                         _domain=FUSED_DOMAIN)


RULES = [sourced(LinearFromMatMul), sourced(LinearBias)]
