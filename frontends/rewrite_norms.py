"""Normalisation rules: LayerNorm and RMSNorm written out, their affine tails, BatchNorm folding.

LayerNorm ``d = x - mean(x); d / sqrt(mean(d^2) + eps)`` and RMSNorm ``x / sqrt(mean(x^2) + eps)``
over trailing axes (ReduceMean's axes an attribute or a constant input), the square as
``Pow(d, 2)`` or ``Mul(d, d)``, the division as ``Div`` or ``Mul(., Reciprocal(.))``, become
``LayerNormalization`` (scale ones) and ``RMSNormalization`` (no scale); then a constant
``Mul`` folds into the scale and a constant ``Add`` into the LayerNorm bias. onnxscript's own
LayerNorm and RMSNorm rules need the scale, a constant axes input of [-1] and one division
spelling, and take any scale or bias tensor; these cover the rest and check the affine
constants' shapes. BatchNorm folds into a Conv or Gemm through onnxscript's rules, and into a
2-D Linear through ours.
"""
from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import pattern
from onnxscript.rewriter.rules.common._fuse_batchnorm import (FuseBatchNormIntoConv,
                                                              FuseBatchNormIntoGemm)

from sbcompile.frontends.rewrite_base import (FUSED_DOMAIN, array, dims, fits_norm_dims,
                                             reduced_axes, scalar, sourced, trailing_axis)


DIVISIONS = ("div", "mul reciprocal", "reciprocal mul")


def _divided(op, top, root, division: str):
    """top / root spelled as one of the DIVISIONS."""
    if division == "div":
        return op.Div(top, root)
    if division == "mul reciprocal":
        return op.Mul(top, op.Reciprocal(root))
    return op.Mul(op.Reciprocal(root), top)


def _square(op, d):
    return pattern.OrValue([op.Pow(d, 2.0), op.Mul(d, d)])


def _epsilon(eps: ir.Value) -> float | None:
    value = scalar(eps)
    return value if value is not None and value >= 0 else None


class LayerNormFromParts(pattern.RewriteRuleClassBase):
    """(x - mean(x)) / sqrt(mean((x - mean(x))^2) + eps) -> LayerNormalization(x, ones)."""

    def __init__(self, division: str):
        super().__init__(f"LayerNormFromParts[{division}]")
        self._division = division

    def pattern(self, op, x, eps):
        d = op.Sub(x, op.ReduceMean(x, _allow_other_inputs=True, _outputs=["mean"]))
        var = op.ReduceMean(_square(op, d), _allow_other_inputs=True, _outputs=["var"])
        return _divided(op, d, op.Sqrt(op.Add(var, eps)), self._division)

    def check(self, context, x, eps, mean, var, **_):
        axis = trailing_axis(x, reduced_axes(mean.producer()))
        self._axis = axis
        return (axis is not None and x.dtype is not None and x.dtype.is_floating_point()
                and trailing_axis(x, reduced_axes(var.producer())) == axis
                and _epsilon(eps) is not None)

    def rewrite(self, op, x, eps, **_):
        norm = dims(x)[self._axis:]
        shape = norm if all(isinstance(d, int) for d in norm) else ()
        ones = op.initializer(ir.tensor(np.ones(shape, x.dtype.numpy())), name=f"{x.name}/ones")
        return op.LayerNormalization(x, ones, axis=self._axis, epsilon=_epsilon(eps))


class RmsNormFromParts(pattern.RewriteRuleClassBase):
    """x / sqrt(mean(x^2) + eps) -> RMSNormalization(x) (no scale yet)."""

    def __init__(self, division: str):
        super().__init__(f"RmsNormFromParts[{division}]")
        self._division = division

    def pattern(self, op, x, eps):
        ms = op.ReduceMean(_square(op, x), _allow_other_inputs=True, _outputs=["ms"])
        return _divided(op, x, op.Sqrt(op.Add(ms, eps)), self._division)

    def check(self, context, x, eps, ms, **_):
        self._axis = trailing_axis(x, reduced_axes(ms.producer()))
        return (self._axis is not None and x.dtype is not None
                and x.dtype.is_floating_point() and _epsilon(eps) is not None)

    def rewrite(self, op, x, eps, **_):
        return op.RMSNormalization(x, axis=self._axis, epsilon=_epsilon(eps))


def _norm_of(normed: ir.Value) -> tuple[ir.Node, int]:
    node = normed.producer()
    axis = node.attributes.get("axis")
    return node, axis.as_int() if axis is not None else -1


class NormScale(pattern.RewriteRuleClassBase):
    """norm(x) * s, s a constant over the normalised dims, folds into the norm's scale: a
    LayerNormalization without bias (scale multiplied), or an RMSNormalization without scale."""

    def __init__(self, op_type: str):
        super().__init__(f"NormScale[{op_type}]")
        self._op_type = op_type

    def pattern(self, op, x, s):
        if self._op_type == "RMSNormalization":
            normed = op.RMSNormalization(x, _outputs=["normed"])
        else:
            normed = op.LayerNormalization(x, pattern.ANY_VALUE, _outputs=["normed"])
        return op.Mul(normed, s)

    def check(self, context, x, s, normed, **_):
        node, axis = _norm_of(normed)
        if len(node.outputs) != 1 or not fits_norm_dims(array(s), x, axis):
            return False
        return self._op_type == "RMSNormalization" or array(node.inputs[1]) is not None

    def rewrite(self, op, x, s, normed, **_):
        node, _ = _norm_of(normed)
        scale = array(s)
        if self._op_type == "LayerNormalization":
            scale = array(node.inputs[1]) * scale
        weight = op.initializer(ir.tensor(np.ascontiguousarray(scale)), name=f"{s.name}/scale")
        return op.op(self._op_type, x, weight, **node.attributes)


class LayerNormBias(pattern.RewriteRuleClassBase):
    """LayerNormalization(x, scale) + b, b a constant over the normalised dims -> the bias."""

    def pattern(self, op, x, scale, b):
        return op.Add(op.LayerNormalization(x, scale, _outputs=["normed"]), b)

    def check(self, context, x, scale, b, normed, **_):
        node, axis = _norm_of(normed)
        return len(node.outputs) == 1 and fits_norm_dims(array(b), x, axis)

    def rewrite(self, op, x, scale, b, normed, **_):
        node, _ = _norm_of(normed)
        return op.LayerNormalization(x, scale, b, **node.attributes)


class BatchNormIntoLinear(pattern.RewriteRuleClassBase):
    """BatchNormalization(Linear(x, W[, b])) on a 2-D [batch, N] output, every parameter
    constant -> the Linear with W and b rescaled (onnxscript's rules fold into Conv and Gemm; a
    MatMul by a constant weight is a Linear by now)."""

    def pattern(self, op, x, w, scale, shift, mean, var):
        y = op.Linear(x, w, _allow_other_inputs=True, _domain=FUSED_DOMAIN, _outputs=["y"])
        return op.BatchNormalization(y, scale, shift, mean, var, _outputs=["normed"])

    def check(self, context, w, scale, shift, mean, var, y, normed, **_):
        norm, linear = normed.producer(), y.producer()
        training = norm.attributes.get("training_mode")
        return (len(dims(y)) == 2 and len(norm.outputs) == 1
                and (training is None or not training.as_int())
                and all(array(v) is not None for v in (w, scale, shift, mean, var,
                                                      *linear.inputs[2:])))

    def rewrite(self, op, x, w, scale, shift, mean, var, y, normed):
        epsilon = normed.producer().attributes.get("epsilon")
        eps = epsilon.as_float() if epsilon is not None else 1e-5
        gamma, beta, mu, sigma2 = (array(v).astype(np.float64) for v in (scale, shift, mean, var))
        weight = array(w)
        factor = gamma / np.sqrt(sigma2 + eps)
        bias = y.producer().inputs[2:]
        b = array(bias[0]).astype(np.float64) if bias else 0.0
        new_w = (weight.astype(np.float64) * factor[:, None]).astype(weight.dtype)
        new_b = ((b - mu) * factor + beta).astype(weight.dtype)
        return op.Linear(x, op.initializer(ir.tensor(new_w), name=f"{normed.name}/weight"),
                         op.initializer(ir.tensor(new_b), name=f"{normed.name}/bias"),
                         _domain=FUSED_DOMAIN)


RULES = [*(sourced(LayerNormFromParts, division) for division in DIVISIONS),
         *(sourced(RmsNormFromParts, division) for division in DIVISIONS),
         *(sourced(NormScale, op_type) for op_type in ("LayerNormalization", "RMSNormalization")),
         sourced(LayerNormBias), sourced(FuseBatchNormIntoConv), sourced(FuseBatchNormIntoGemm),
         sourced(BatchNormIntoLinear)]
