"""Activation rules: GELU written out with Erf or Tanh, and SiLU as x * sigmoid(x).

GELU is a product of three factors, x, 0.5 and (1 + erf(x / sqrt 2)) (or the tanh form's
(1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))), and code writes that product in every association:
``(x * p) * 0.5`` (torch's decomposition), ``(x * 0.5) * p`` (BERT's ``x * 0.5 * (1 + erf)``),
``x * (0.5 * p)``. onnxscript's own GELU rules know two of them and emit com.microsoft ops;
these know all three, in each operand order, and emit the standard ``Gelu`` with its
``approximate`` attribute.
"""
from __future__ import annotations

import math

from onnxscript.rewriter import pattern

from sbcompile.frontends.rewrite_base import FUSED_DOMAIN, sourced

# x * 0.5 * part in every association and operand order (constants come last: the rewrite driver
# puts them there first).
PRODUCTS = ("(x*p)*h", "(p*x)*h", "(x*h)*p", "p*(x*h)", "x*(p*h)", "(p*h)*x")


def erf_part(op, x):
    """1 + erf(x / sqrt 2), the division also spelled as a product by 1 / sqrt 2."""
    scaled = pattern.OrValue([op.Div(x, math.sqrt(2.0)), op.Mul(x, math.sqrt(0.5))])
    return op.Add(op.Erf(scaled), 1.0)


def tanh_part(op, x):
    """1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3)), the cube as Pow(x, 3) or x * x * x."""
    cube = pattern.OrValue([op.Pow(x, 3.0), op.Mul(op.Mul(x, x), x), op.Mul(x, op.Mul(x, x))])
    term = op.Mul(cube, 0.044715)
    inner = pattern.OrValue([op.Add(x, term), op.Add(term, x)])
    return op.Add(op.Tanh(op.Mul(inner, math.sqrt(2.0 / math.pi))), 1.0)


class GeluFromParts(pattern.RewriteRuleClassBase):
    """x * 0.5 * part(x) in one of the PRODUCTS -> Gelu(x, approximate)."""

    def __init__(self, approximate: str, product: str):
        super().__init__(f"GeluFromParts[{approximate}, {product}]")
        self._part = erf_part if approximate == "none" else tanh_part
        self._approximate = approximate
        self._product = product

    def pattern(self, op, x):
        p = self._part(op, x)
        return {"(x*p)*h": lambda: op.Mul(op.Mul(x, p), 0.5),
                "(p*x)*h": lambda: op.Mul(op.Mul(p, x), 0.5),
                "(x*h)*p": lambda: op.Mul(op.Mul(x, 0.5), p),
                "p*(x*h)": lambda: op.Mul(p, op.Mul(x, 0.5)),
                "x*(p*h)": lambda: op.Mul(x, op.Mul(p, 0.5)),
                "(p*h)*x": lambda: op.Mul(op.Mul(p, 0.5), x)}[self._product]()

    def rewrite(self, op, x):
        if self._approximate == "none":  # Gelu's default
            return op.Gelu(x)
        return op.Gelu(x, approximate=self._approximate)


class SiluFromSigmoid(pattern.RewriteRuleClassBase):
    """x * sigmoid(x), either order -> Silu(x)."""

    def __init__(self, x_first: bool):
        super().__init__(f"SiluFromSigmoid[{'x first' if x_first else 'sigmoid first'}]")
        self._x_first = x_first

    def pattern(self, op, x):
        return op.Mul(x, op.Sigmoid(x)) if self._x_first else op.Mul(op.Sigmoid(x), x)

    def rewrite(self, op, x):
        return op.Silu(x, _domain=FUSED_DOMAIN)


RULES = [*(sourced(GeluFromParts, form, product) for form in ("none", "tanh")
           for product in PRODUCTS), *(sourced(SiluFromSigmoid, first) for first in (True, False))]
