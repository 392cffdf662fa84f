"""Attention rules: eager attention becomes one ``Attention`` (``FUSED_DOMAIN``) with GQA, causal
and sliding-window masks read off its operands.

onnxscript's SDPA pattern finds ``softmax(q k^T [* or / scale] [+ mask]) v`` (scale factors on q,
k or the scores, k^T by one of its transposes; commuted, so the mask may come first); its result
here is our Attention (a Softmax over axis 3 of the rank-4 scores is first spelled axis=-1).
Then:
- a mask applied through ``Where(keep, scores, -big)`` (masked_fill) is first made additive,
- Llama's repeat_kv (Unsqueeze, Expand, Reshape) on k and v goes: attention reads the kv heads,
- a constant mask that is 0 exactly on a causal band (optionally a sliding window of w keys) and
  masked elsewhere becomes ``causal``/``window`` attributes,
- an additive ``Where(keep, 0, -inf)`` mask becomes the bool mask ``keep`` itself.
"""
from __future__ import annotations

import math

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import pattern
from onnxscript.rewriter.ort_fusions.sdpa import SDPA

from sbcompile.frontends.rewrite_base import (FUSED_DOMAIN, MASKED, array, dims, scalar,
                                             sourced, typed)
from sbcompile.ir.ops import attention_keep


def _agree(*pairs: tuple) -> bool:
    """Each pair of dims equal, where both are known."""
    return all(a == b or not isinstance(a, int) or not isinstance(b, int) for a, b in pairs)


def _factor(spelling: str, value: ir.Value | None) -> float | None:
    """The factor a scaling Mul/Div by a scalar constant contributes (1 when absent)."""
    if spelling == "None":
        return 1.0
    c = scalar(value)
    if c is None or c == 0:
        return None
    return c if spelling == "Mul" else 1.0 / c


def _broadcasts_into(small: tuple, big: tuple) -> bool:
    if len(small) > len(big):
        return False
    return all(s == 1 or s == b or not isinstance(s, int) or not isinstance(b, int)
               for s, b in zip(small[::-1], big[::-1]))


class AttentionFromParts(SDPA):
    """onnxscript's SDPA pattern -> Attention(q, k [B, H, Tk, D], v[, mask], scale). Its own
    check wants equal batch dims, which shape inference often names apart (unk__1, unk__2 for
    one dynamic batch); this one asks only what the IR's attention needs."""

    def check(self, context, query, key, value, mask=None, key_format="BHSd", **bindings):
        q, v = dims(query), dims(value)
        k = dims(key)
        if None in (q, k, v) or not len(q) == len(k) == len(v) == 4:
            return False
        if key_format == "BSHd":
            k = (k[0], k[2], k[1], k[3])
        if query.dtype is None or not query.dtype.is_floating_point() or not _agree(
                (q[1], k[1]), (q[3], k[3]), (k[2], v[2]), (k[1], v[1])):
            return False
        if mask is not None and (mask.dtype != query.dtype or dims(mask) is None
                                 or not _broadcasts_into(dims(mask), (*q[:3], k[2]))):
            return False
        factors = [_factor(bindings.get(f"{where}_scaling", "None"), bindings.get(f"{where}_scale"))
                   for where in ("query", "key", "qk")]
        if None in factors:
            return False
        self._scale = math.prod(factors)
        return True

    def rewrite(self, op, query, key, value, mask, key_format, **_):
        if key_format == "BSHd":  # k^T was Transpose(k [B, T, H, D], [0, 2, 3, 1])
            b, t, h, d = key.shape
            key = typed(op.Transpose(key, perm=[0, 2, 1, 3]), key, [b, h, t, d])
        scale = ir.tensor(np.array(self._scale, np.float64))  # a float attribute is float32
        return op.Attention(query, key, value, *([mask] if mask is not None else []),
                            _domain=FUSED_DOMAIN, scale=scale)


class SoftmaxLastAxis(pattern.RewriteRuleClassBase):
    """Softmax over axis 3 of rank-4 scores read by a MatMul -> axis=-1, as the SDPA pattern
    spells it."""

    def pattern(self, op, x):
        return op.Softmax(x, _outputs=["probs"])

    def check(self, context, x, probs, **_):
        axis = probs.producer().attributes.get("axis")
        return (axis is not None and axis.as_int() == 3 and dims(x) is not None
                and len(dims(x)) == 4 and bool(probs.uses())
                and all(node.op_type == "MatMul" and i == 0 for node, i in probs.uses()))

    def rewrite(self, op, x, **_):
        return op.Softmax(x, axis=-1)


class WhereMaskedScores(pattern.RewriteRuleClassBase):
    """Softmax(Where(keep, s, -big)) over attention scores -> Softmax(s + Where(keep, 0, -big)):
    the same probabilities (exp underflows to 0 either way), in the form attention is read from.
    ``masked_fill`` spells it Where(drop, -big, s)."""

    def __init__(self, keep_first: bool):
        super().__init__(f"WhereMaskedScores[{'keep' if keep_first else 'drop'}]")
        self._keep_first = keep_first

    def pattern(self, op, c, s, neg):
        masked = op.Where(c, s, neg) if self._keep_first else op.Where(c, neg, s)
        return op.Softmax(masked, _outputs=["probs"])

    def check(self, context, c, s, neg, probs, **_):
        big, scores = scalar(neg), s.producer()
        return (big is not None and big <= MASKED and array(neg).ndim <= len(dims(c))
                and scores is not None and scores.op_type in ("MatMul", "Mul", "Div")
                and dims(probs) == dims(s))

    def rewrite(self, op, c, s, neg, probs):
        zero = op.initializer(ir.tensor(np.zeros((), s.dtype.numpy())), name=f"{probs.name}/0")
        mask = op.Where(c, zero, neg) if self._keep_first else op.Where(c, neg, zero)
        added = typed(op.Add(s, typed(mask, s, c.shape)), s)
        return op.Softmax(added, **probs.producer().attributes)


class AttentionKvHeads(pattern.RewriteRuleClassBase):
    """Attention whose k and v are repeated per query group (Llama's repeat_kv: Unsqueeze at 2,
    Expand to [B, Hkv, rep, T, D], Reshape to [B, Hkv * rep, T, D]) -> Attention on the Hkv
    heads themselves (GQA)."""

    def pattern(self, op, q, k, v, k_axes, v_axes):
        def repeated(x, axes, tag):
            big = op.Expand(op.Unsqueeze(x, axes), pattern.ANY_VALUE, _outputs=[f"{tag}_big"])
            return op.Reshape(big, pattern.ANY_VALUE, _outputs=[f"{tag}_rep"])
        return op.Attention(q, repeated(k, k_axes, "k"), repeated(v, v_axes, "v"),
                            _allow_other_inputs=True, _domain=FUSED_DOMAIN, _outputs=["attn"])

    def check(self, context, k, v, k_axes, v_axes, k_big, v_big, k_rep, v_rep, **_):
        rep = _repeats(k, k_axes, k_big, k_rep)
        return rep is not None and rep == _repeats(v, v_axes, v_big, v_rep)

    def rewrite(self, op, q, k, v, attn, **_):
        node = attn.producer()
        return op.Attention(q, k, v, *node.inputs[3:], _domain=FUSED_DOMAIN, **node.attributes)


def _repeats(x: ir.Value, axes: ir.Value, big: ir.Value, rep: ir.Value) -> int | None:
    """rep when big = x [B, H, T, D] unsqueezed at 2 and expanded to [B, H, rep, T, D], and the
    reshape gives [B, H * rep, T, D]."""
    ax = array(axes)
    xs, bs, rs = dims(x), dims(big), dims(rep)
    if ax is None or ax.reshape(-1).tolist() not in ([2], [-3]) or None in (xs, bs, rs):
        return None
    if len(xs) != 4 or len(bs) != 5 or not isinstance(bs[2], int) or not isinstance(xs[1], int):
        return None
    if bs[:2] != xs[:2] or bs[3:] != xs[2:] or rs != (xs[0], xs[1] * bs[2], *xs[2:]):
        return None
    return bs[2]


class CausalBandMask(pattern.RewriteRuleClassBase):
    """Attention with a constant mask that is a causal band -> causal=1, window=w, no mask."""

    def pattern(self, op, q, k, v, mask):
        return op.Attention(q, k, v, mask, _domain=FUSED_DOMAIN, _outputs=["attn"])

    def check(self, context, mask, attn, **_):
        node = attn.producer()
        if any(a in node.attributes for a in ("causal", "window")):
            return False
        self._band = causal_band(_constant_mask(mask))
        return self._band is not None

    def rewrite(self, op, q, k, v, attn, **_):
        attrs = {**attn.producer().attributes, **self._band}
        return op.Attention(q, k, v, _domain=FUSED_DOMAIN, **attrs)


def _constant_mask(mask: ir.Value) -> np.ndarray | None:
    """A constant mask, or Where of constants (folding keeps those that mix -inf with 0). The
    Where is read, not matched: one mask serves every layer; dead-code removal drops it."""
    if array(mask) is not None:
        return array(mask)
    node = mask.producer()
    if node is None or node.op_type != "Where" or node.domain != "":
        return None
    parts = [array(v) for v in node.inputs]
    return None if any(p is None for p in parts) else np.where(*parts)


def causal_band(mask: np.ndarray | None) -> dict | None:
    """{"causal": 1, "window": w} when an additive mask [..., Tq, Tk] (leading dims 1) is 0
    exactly on the causal band j <= i + Tk - Tq (and j > i + Tk - Tq - w) and masked elsewhere."""
    if mask is None or mask.ndim < 2 or mask.dtype.kind != "f" or any(
            d != 1 for d in mask.shape[:-2]):
        return None
    m = mask.reshape(mask.shape[-2:])
    tq, tk = m.shape
    keep = m == 0
    if not np.all(keep | (m <= MASKED)):
        return None
    window = int(keep.sum(axis=1).max())
    for attrs in ({"causal": 1, "window": 0}, {"causal": 1, "window": window}):
        if np.array_equal(attention_keep(tq, tk, **attrs), keep):
            return attrs
    return None


class BoolMask(pattern.RewriteRuleClassBase):
    """Attention(q, k, v, Where(keep, 0, -inf)) -> Attention(q, k, v, keep): the same result
    (a row with every key masked gives zeros either way), no float mask built at runtime.
    Where(drop, -inf, 0) reads Not(drop)."""

    def __init__(self, keep_first: bool):
        super().__init__(f"BoolMask[{'keep' if keep_first else 'drop'}]")
        self._keep_first = keep_first

    def pattern(self, op, q, k, v, c, zero, neg):
        mask = op.Where(c, zero, neg) if self._keep_first else op.Where(c, neg, zero)
        return op.Attention(q, k, v, mask, _domain=FUSED_DOMAIN, _outputs=["attn"])

    def check(self, context, c, zero, neg, **_):
        return (c.dtype == ir.DataType.BOOL and scalar(zero) == 0.0
                and scalar(neg) == -math.inf)

    def rewrite(self, op, q, k, v, c, attn, **_):
        keep = c if self._keep_first else typed(op.Not(c), c)
        return op.Attention(q, k, v, keep, _domain=FUSED_DOMAIN, **attn.producer().attributes)


RULES = [sourced(SoftmaxLastAxis), *(sourced(WhereMaskedScores, keep) for keep in (True, False)),
         *sourced(AttentionFromParts).commute(), sourced(AttentionKvHeads),
         sourced(CausalBandMask),
         *(sourced(BoolMask, keep) for keep in (True, False))]
