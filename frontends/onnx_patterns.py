"""Canonicalisation of the lowered IR: the many ONNX spellings of one layer become one IR op.

Each pattern looks at one anchor node and, when the surrounding subgraph matches, replaces the
matched nodes by a single IR node. Intermediate values of a match must have no other consumer
(and not be graph outputs), so a rewrite never changes what any other node sees. The rewrites run
to a fixed point in the order of ``PATTERNS``.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from sbcompile.ir.graph import Graph, Node


class Rewriter:
    """Producer/consumer lookups over a graph and the one edit patterns make: replace matched
    nodes by a new node. ``origins`` maps IR node names to the ONNX nodes they came from."""

    def __init__(self, graph: Graph, origins: dict[str, list[str]]):
        self.graph = graph
        self.origins = origins
        self._transposed: dict[str, str] = {}
        self.refresh()

    def refresh(self) -> None:
        self.live = {id(n) for n in self.graph.nodes}
        self.producer = self.graph.producers()
        self.consumer = self.graph.consumers()
        self.outputs = set(self.graph.outputs)

    # ---- queries -----------------------------------------------------------------------------
    def op_of(self, value: str, op: str | tuple[str, ...]) -> Node | None:
        """The producer of ``value`` if it is (one of) ``op``."""
        node = self.producer.get(value)
        ops = (op,) if isinstance(op, str) else op
        return node if node is not None and node.op in ops else None

    def sole_consumer(self, value: str, op: str | tuple[str, ...] | None = None) -> Node | None:
        """The only consumer of ``value`` (which is no graph output), if it is ``op``."""
        users = self.consumer.get(value, [])
        if len(users) != 1 or value in self.outputs:
            return None
        ops = (op,) if isinstance(op, str) else op
        return users[0] if op is None or users[0].op in ops else None

    def private(self, value: str, n_users: int = 1) -> bool:
        """``value`` is internal to a match: exactly ``n_users`` consumers, no graph output."""
        return len(self.consumer.get(value, [])) == n_users and value not in self.outputs

    def param(self, value: str) -> np.ndarray | None:
        return self.graph.params.get(value)

    def scalar(self, value: str) -> float | None:
        """The value of a constant holding a single float (any shape of size 1)."""
        arr = self.param(value)
        if arr is None or arr.size != 1 or arr.dtype.kind != "f":
            return None
        return float(arr.reshape(()))

    def other(self, node: Node, value: str) -> str:
        """The other operand of a binary node."""
        return node.inputs[1] if node.inputs[0] == value else node.inputs[0]

    def rank(self, value: str) -> int:
        return len(self.graph.values[value].shape)

    # ---- the edit ----------------------------------------------------------------------------
    def replace(self, matched: list[Node], *new: Node) -> None:
        """Put the ``new`` nodes where the last matched node was and drop the matched nodes."""
        gone = {id(n) for n in matched}
        position = max(i for i, n in enumerate(self.graph.nodes) if id(n) in gone)
        merged = list(dict.fromkeys(o for n in matched for o in self.origins.pop(n.name, [])))
        nodes = self.graph.nodes
        self.graph.nodes = [n for n in nodes[:position] if id(n) not in gone] + list(new) + [
            n for n in nodes[position + 1:] if id(n) not in gone]
        for node in new:
            self.origins[node.name] = list(merged)
        self.refresh()

    def bypass(self, node: Node) -> None:
        """Drop a node whose output equals its first input, rewiring the consumers."""
        out, src = node.outputs[0], node.inputs[0]
        for user in self.consumer.get(out, []):
            user.inputs = [src if i == out else i for i in user.inputs]
        self.graph.nodes.remove(node)
        self.origins.pop(node.name, None)
        self.refresh()

    def add_param(self, base: str, array: np.ndarray) -> str:
        return self.graph.add_param(base, array)

    def transposed_param(self, name: str) -> str:
        """The transpose of 2-D parameter ``name``, made once however many nodes read it (a
        weight shared by the steps of an unrolled recurrence stays one parameter)."""
        if self._transposed.get(name) not in self.graph.params:
            self._transposed[name] = self.add_param(
                f"{name}_t", np.ascontiguousarray(self.param(name).T))
        return self._transposed[name]


Pattern = Callable[[Rewriter, Node], bool]


def _close(a: float | None, b: float, rtol: float = 1e-5) -> bool:
    return a is not None and math.isclose(a, b, rel_tol=rtol)


# ---- linear -------------------------------------------------------------------------------------
def linear_from_matmul(rw: Rewriter, node: Node) -> bool:
    """matmul(x, W) with a constant float 2-D W [K, N] -> linear(x, W^T)."""
    if node.op != "matmul":
        return False
    w = rw.param(node.inputs[1])
    if w is None or w.ndim != 2 or w.dtype.kind != "f" or rw.rank(node.inputs[0]) < 1:
        return False
    weight = rw.transposed_param(node.inputs[1])
    rw.replace([node], Node(node.name, "linear", [node.inputs[0], weight], node.outputs))
    return True


def linear_bias(rw: Rewriter, node: Node) -> bool:
    """add(linear(x, W), b) with a constant b broadcasting along N only -> linear(x, W, b)."""
    if node.op != "add":
        return False
    for value in node.inputs:
        lin = rw.op_of(value, "linear")
        if lin is None or len(lin.inputs) > 2 or not rw.private(value):
            continue
        b = rw.param(rw.other(node, value))
        n_out = rw.graph.values[lin.inputs[1]].shape[0]
        if (b is None or b.dtype.name != rw.graph.values[value].dtype or b.size != n_out
                or b.shape[-1:] != (n_out,) or b.ndim > rw.rank(value)):
            continue
        bias = rw.add_param(f"{lin.name}/bias", b.reshape(n_out))
        rw.replace([lin, node], Node(lin.name, "linear", [*lin.inputs, bias], node.outputs,
                                     lin.attrs))
        return True
    return False


def fold_batch_norm(rw: Rewriter, node: Node) -> bool:
    """batch_norm(conv(x) or linear(x) [2-D]) with constant parameters, where the conv/linear
    output feeds only the norm -> the conv/linear with rescaled weight and bias."""
    if node.op != "batch_norm":
        return False
    layer = rw.op_of(node.inputs[0], ("conv", "linear"))
    if layer is None or not rw.private(node.inputs[0]):
        return False
    if layer.op == "linear" and rw.rank(node.inputs[0]) != 2:
        return False
    params = [rw.param(v) for v in node.inputs[1:]]
    w = rw.param(layer.inputs[1])
    b = rw.param(layer.inputs[2]) if len(layer.inputs) > 2 and layer.inputs[2] else None
    if w is None or w.dtype.kind != "f" or any(p is None for p in params) or (
            len(layer.inputs) > 2 and layer.inputs[2] and b is None):
        return False
    scale, shift, mean, var = (p.astype(np.float64) for p in params)
    eps = node.attrs.get("epsilon", 1e-5)
    factor = scale / np.sqrt(var + eps)
    bias = (b.astype(np.float64) if b is not None else 0.0) - mean
    new_w = (w.astype(np.float64) * factor.reshape((-1,) + (1,) * (w.ndim - 1))).astype(w.dtype)
    new_b = (bias * factor + shift).astype(w.dtype)
    inputs = [layer.inputs[0], rw.add_param(f"{layer.name}/weight", new_w),
              rw.add_param(f"{layer.name}/bias", new_b)]
    rw.replace([layer, node], Node(layer.name, layer.op, inputs, node.outputs, layer.attrs))
    return True


def drop_identity(rw: Rewriter, node: Node) -> bool:
    """identity, and cast to the dtype it already has, feeding no graph output: removed."""
    no_op = node.op == "identity" or (
        node.op == "cast" and node.attrs.get("to") == rw.graph.values[node.inputs[0]].dtype)
    if not no_op or node.outputs[0] in rw.outputs:
        return False
    rw.bypass(node)
    return True


# ---- activations --------------------------------------------------------------------------------
def gelu_from_erf(rw: Rewriter, node: Node) -> bool:
    """x * 0.5 * (1 + erf(x / sqrt 2)), the product in any order, -> gelu(x)."""
    if node.op != "erf" or not rw.private(node.inputs[0]):
        return False
    pre = rw.op_of(node.inputs[0], ("div", "mul"))
    if pre is None:
        return False
    if pre.op == "div" and _close(rw.scalar(pre.inputs[1]), math.sqrt(2.0)):
        x = pre.inputs[0]
    elif pre.op == "mul" and any(_close(rw.scalar(v), math.sqrt(0.5)) for v in pre.inputs):
        x = next(v for v in pre.inputs if not _close(rw.scalar(v), math.sqrt(0.5)))
    else:
        return False
    plus = rw.sole_consumer(node.outputs[0], "add")
    if plus is None or not _close(rw.scalar(rw.other(plus, node.outputs[0])), 1.0):
        return False
    matched = [pre, node, plus]
    tail = _product_with(rw, plus.outputs[0], x, 0.5, matched)
    if tail is None:
        return False
    rw.replace(matched, Node(tail.name, "gelu", [x], tail.outputs))
    return True


def _product_with(rw: Rewriter, value: str, x: str, half: float,
                  matched: list[Node]) -> Node | None:
    """The mul node computing value * x * half (any association), extending ``matched``."""
    m1 = rw.sole_consumer(value, "mul")
    if m1 is None:
        return None
    other = rw.other(m1, value)
    if other == x or _close(rw.scalar(other), half):
        want_x = other != x
        m2 = rw.sole_consumer(m1.outputs[0], "mul")
        if m2 is None:
            return None
        rest = rw.other(m2, m1.outputs[0])
        if (rest == x) if want_x else _close(rw.scalar(rest), half):
            matched += [m1, m2]
            return m2
        return None
    inner = rw.op_of(other, "mul")
    if inner is not None and rw.private(other) and x in inner.inputs and _close(
            rw.scalar(rw.other(inner, x)), half):
        matched += [inner, m1]
        return m1
    return None


def silu_from_sigmoid(rw: Rewriter, node: Node) -> bool:
    """x * sigmoid(x) -> silu(x)."""
    if node.op != "sigmoid":
        return False
    x = node.inputs[0]
    mul = rw.sole_consumer(node.outputs[0], "mul")
    if mul is None or rw.other(mul, node.outputs[0]) != x:
        return False
    rw.replace([node, mul], Node(mul.name, "silu", [x], mul.outputs))
    return True


# ---- normalisation ------------------------------------------------------------------------------
def _square_of(rw: Rewriter, value: str) -> tuple[Node, str] | None:
    """(node, x) when ``value`` is pow(x, 2) or x * x, used only once."""
    sq = rw.op_of(value, ("pow", "mul"))
    if sq is None or not rw.private(value):
        return None
    if sq.op == "pow" and _close(rw.scalar(sq.inputs[1]), 2.0):
        return sq, sq.inputs[0]
    if sq.op == "mul" and sq.inputs[0] == sq.inputs[1]:
        return sq, sq.inputs[0]
    return None


def _trailing_axis(rw: Rewriter, reduce: Node, x: str) -> int | None:
    """The first axis when a keepdims reduction runs over the trailing axes of x."""
    rank = rw.rank(x)
    axes = reduce.attrs.get("axes")
    if not reduce.attrs.get("keepdims", 1) or not axes:
        return None
    axes = sorted(a % rank for a in axes)
    return axes[0] if axes == list(range(rank - len(axes), rank)) else None


def _divide_by_root(rw: Rewriter, mean: Node, top: str, matched: list[Node]
                    ) -> tuple[Node, float] | None:
    """top / sqrt(mean + eps) spelled with div or reciprocal+mul: (last node, eps)."""
    add = rw.sole_consumer(mean.outputs[0], "add")
    eps = rw.scalar(rw.other(add, mean.outputs[0])) if add is not None else None
    root = rw.sole_consumer(add.outputs[0], "sqrt") if eps is not None and eps >= 0 else None
    if root is None:
        return None
    div = rw.sole_consumer(root.outputs[0], "div")
    if div is not None and div.inputs == [top, root.outputs[0]]:
        matched += [add, root, div]
        return div, eps
    inv = rw.sole_consumer(root.outputs[0], "reciprocal")
    mul = rw.sole_consumer(inv.outputs[0], "mul") if inv is not None else None
    if mul is not None and rw.other(mul, inv.outputs[0]) == top:
        matched += [add, root, inv, mul]
        return mul, eps
    return None


def _affine(rw: Rewriter, value: str, op: str, x: str, axis: int,
            matched: list[Node]) -> tuple[Node, np.ndarray] | None:
    """mul/add of ``value`` by a constant shaped like the normalised dims of x (or fewer)."""
    node = rw.sole_consumer(value, op)
    if node is None:
        return None
    p = rw.param(rw.other(node, value))
    norm_shape = rw.graph.values[x].shape[axis:]
    if p is None or p.dtype.name != rw.graph.values[x].dtype or p.ndim > len(norm_shape):
        return None
    if any(not isinstance(d, int) or s not in (1, d) for s, d in zip(p.shape[::-1],
                                                                     norm_shape[::-1])):
        return None
    matched.append(node)
    return node, p


def rms_norm_from_parts(rw: Rewriter, node: Node) -> bool:
    """x / sqrt(mean(x^2) + eps) [* scale] over trailing axes -> rms_norm(x, scale)."""
    if node.op != "reduce_mean":
        return False
    square = _square_of(rw, node.inputs[0])
    if square is None:
        return False
    sq, x = square
    axis = _trailing_axis(rw, node, x)
    matched = [sq, node]
    divided = _divide_by_root(rw, node, x, matched) if axis is not None else None
    if divided is None:
        return False
    last, eps = divided
    inputs = [x]
    scaled = _affine(rw, last.outputs[0], "mul", x, axis, matched)
    if scaled is not None:
        last, scale = scaled
        inputs.append(rw.add_param(f"{last.name}/scale", scale))
    rw.replace(matched, Node(last.name, "rms_norm", inputs, last.outputs,
                             {"axis": axis - rw.rank(x), "epsilon": eps}))
    return True


def layer_norm_from_parts(rw: Rewriter, node: Node) -> bool:
    """d = x - mean(x); d / sqrt(mean(d^2) + eps) [* scale] [+ bias] over trailing axes ->
    layer_norm(x, scale, bias)."""
    if node.op != "reduce_mean":
        return False
    x = node.inputs[0]
    axis = _trailing_axis(rw, node, x)
    sub = rw.sole_consumer(node.outputs[0], "sub")
    if axis is None or sub is None or sub.inputs != [x, node.outputs[0]]:
        return False
    d = sub.outputs[0]
    if not rw.private(d, 2):
        return False
    square = next((sq for sq in (_square_of(rw, u.outputs[0]) for u in rw.consumer[d])
                   if sq is not None and sq[1] == d), None)
    var = rw.sole_consumer(square[0].outputs[0], "reduce_mean") if square else None
    if var is None or _trailing_axis(rw, var, d) != axis:
        return False
    sq_node = square[0]
    matched = [node, sub, sq_node, var]
    divided = _divide_by_root(rw, var, d, matched)
    if divided is None:
        return False
    last, eps = divided
    norm_shape = rw.graph.values[x].shape[axis:]
    scaled = _affine(rw, last.outputs[0], "mul", x, axis, matched)
    if scaled is not None:
        last, scale = scaled
    else:
        static = all(isinstance(d_, int) for d_ in norm_shape)
        scale = np.ones(norm_shape if static else (), rw.graph.values[x].dtype)
    inputs = [x, rw.add_param(f"{last.name}/scale", scale)]
    shifted = _affine(rw, last.outputs[0], "add", x, axis, matched)
    if shifted is not None:
        last, bias = shifted
        inputs.append(rw.add_param(f"{last.name}/bias", bias))
    rw.replace(matched, Node(last.name, "layer_norm", inputs, last.outputs,
                             {"axis": axis - rw.rank(x), "epsilon": eps}))
    return True


# ---- attention ----------------------------------------------------------------------------------
def attention_from_parts(rw: Rewriter, node: Node) -> bool:
    """softmax(q k^T [* or / c] [+ mask]) v over 4-D [B, H, T, D] operands, k^T spelled as
    Transpose(k, [0, 1, 3, 2]) and scalar factors on q, k or the scores -> attention."""
    if node.op != "softmax" or rw.rank(node.inputs[0]) != 4 or node.attrs.get(
            "axis", -1) not in (-1, 3):
        return False
    pv = rw.sole_consumer(node.outputs[0], "matmul")
    if pv is None or pv.inputs[0] != node.outputs[0]:
        return False
    matched = [node, pv]
    scores, mask = node.inputs[0], ""
    add = rw.op_of(scores, "add") if rw.private(scores) else None
    if add is not None:
        for side in add.inputs:
            if _scores(rw, side, []) is not None:
                scores, mask = side, rw.other(add, side)
                matched.append(add)
                break
    found = _scores(rw, scores, matched)
    if found is None:
        return False
    q, k, k_perm, scale = found
    v = pv.inputs[1]
    new = []
    if k_perm != [0, 1, 2, 3]:  # k^T came from one transpose of another layout: undo the swap
        raw = rw.graph.values[k]
        k = rw.graph.add_value(f"{pv.name}/k", tuple(raw.shape[p] for p in k_perm), raw.dtype)
        new.append(Node(rw.graph.fresh_name(f"{pv.name}/k_layout"), "transpose",
                        [found[1]], [k], {"perm": k_perm}))
    shapes = [rw.graph.values[t].shape for t in (q, k, v)]
    if any(len(s) != 4 for s in shapes) or rw.graph.values[q].dtype[0] != "f":
        return False
    hq, hkv = shapes[0][1], shapes[1][1]
    if not (isinstance(hq, int) and isinstance(hkv, int) and hq % hkv == 0):
        return False
    if mask and not _broadcasts_into(rw.graph.values[mask].shape, rw.graph.values[
            node.inputs[0]].shape):
        return False
    attrs = {"scale": scale}
    band = _causal_band(rw.param(mask)) if mask else None
    if band is not None:
        attrs.update(band)
        mask = ""
    rw.replace(matched, *new, Node(pv.name, "attention", [q, k, v] + ([mask] if mask else []),
                                   pv.outputs, attrs))
    return True


def _scores(rw: Rewriter, value: str, matched: list[Node]
            ) -> tuple[str, str, list[int], float] | None:
    """(q, k source, perm, scale) when ``value`` is [scalar *] (q [* s]) @ transpose(k [* s])
    [/ scalar]; k [B, H, Tk, D] is transpose(k source, perm)."""
    scale = 1.0
    local: list[Node] = []
    node = rw.op_of(value, ("mul", "div")) if rw.private(value) else None
    if node is not None:
        factor = _scalar_factor(rw, node)
        if factor is None:
            return None
        scale, value = factor
        local.append(node)
    qk = rw.op_of(value, "matmul") if rw.private(value) else None
    if qk is None:
        return None
    local.append(qk)
    q, kt = qk.inputs
    q, scale = _unscaled(rw, q, scale, local)
    kt, scale = _unscaled(rw, kt, scale, local)
    tr = rw.op_of(kt, "transpose") if rw.private(kt) else None
    perm = tr.attrs.get("perm") if tr is not None else None
    if perm is None or len(perm) != 4:
        return None
    local.append(tr)
    k, scale = _unscaled(rw, tr.inputs[0], scale, local)
    matched += local
    return q, k, [perm[0], perm[1], perm[3], perm[2]], scale


def attention_kv_heads(rw: Rewriter, node: Node) -> bool:
    """attention whose k and v are repeated per query group (Llama's repeat_kv: unsqueeze at 2,
    expand, reshape [B, Hkv * rep, T, D]) -> attention on the Hkv heads themselves (GQA)."""
    if node.op != "attention":
        return False
    found = [_repeated_kv(rw, value) for value in node.inputs[1:3]]
    if None in found or found[0][1] != found[1][1]:
        return False
    (k, _, k_nodes), (v, _, v_nodes) = found
    rw.replace([*k_nodes, *v_nodes, node], Node(node.name, "attention", [
        node.inputs[0], k, v, *node.inputs[3:]], node.outputs, node.attrs))
    return True


def _repeated_kv(rw: Rewriter, value: str) -> tuple[str, int, list[Node]] | None:
    """(x, rep, nodes) when ``value`` = reshape(expand(unsqueeze(x, [2]), [B, H, rep, T, D]))
    of shape [B, H * rep, T, D], each step private."""
    rs = rw.op_of(value, "reshape") if rw.private(value) else None
    ex = rw.op_of(rs.inputs[0], "expand") if rs and rw.private(rs.inputs[0]) else None
    un = rw.op_of(ex.inputs[0], "unsqueeze") if ex and rw.private(ex.inputs[0]) else None
    axes = rw.param(un.inputs[1]) if un is not None else None
    if axes is None or axes.tolist() not in ([2], [-3]):
        return None
    x = un.inputs[0]
    xs, es, rs_shape = (rw.graph.values[v].shape for v in (x, ex.outputs[0], value))
    if len(xs) != 4 or len(es) != 5 or not isinstance(es[2], int) or not isinstance(xs[1], int):
        return None
    if es[:2] != xs[:2] or es[3:] != xs[2:] or rs_shape != (xs[0], xs[1] * es[2], *xs[2:]):
        return None
    return x, es[2], [un, ex, rs]


MASKED = -1e9  # additive mask entries at or below this are exactly "masked" (exp underflows to 0)


def _causal_band(mask: np.ndarray | None) -> dict | None:
    """{"causal": 1, "window": w} when a constant additive mask [..., Tq, Tk] (leading dims 1) is
    0 exactly on the causal band j <= i + Tk - Tq (and j > i + Tk - Tq - w) and masked elsewhere."""
    if mask is None or mask.ndim < 2 or mask.dtype.kind != "f" or any(
            d != 1 for d in mask.shape[:-2]):
        return None
    m = mask.reshape(mask.shape[-2:])
    tq, tk = m.shape
    keep = m == 0
    if not np.all(keep | (m <= MASKED)):
        return None
    i = np.arange(tq)[:, None] + (tk - tq)
    j = np.arange(tk)[None, :]
    window = int(keep.sum(axis=1).max())
    for attrs in ({"causal": 1, "window": 0}, {"causal": 1, "window": window}):
        band = (j <= i) & ((j > i - attrs["window"]) if attrs["window"] else True)
        if np.array_equal(band, keep):
            return attrs
    return None


def _scalar_factor(rw: Rewriter, node: Node) -> tuple[float, str] | None:
    """(factor, other operand) of x * c, c * x or x / c with a scalar constant c."""
    if node.op == "div":
        c = rw.scalar(node.inputs[1])
        return (1.0 / c, node.inputs[0]) if c else None
    for i in (0, 1):
        c = rw.scalar(node.inputs[i])
        if c is not None:
            return c, node.inputs[1 - i]
    return None


def _unscaled(rw: Rewriter, value: str, scale: float, matched: list[Node]) -> tuple[str, float]:
    """Strip a private scalar mul/div off ``value``, folding it into ``scale``."""
    node = rw.op_of(value, ("mul", "div")) if rw.private(value) else None
    factor = _scalar_factor(rw, node) if node is not None else None
    if factor is None:
        return value, scale
    matched.append(node)
    return factor[1], scale * factor[0]


def _broadcasts_into(small: tuple, big: tuple) -> bool:
    if len(small) > len(big):
        return False
    return all(s == 1 or s == b or not isinstance(s, int) or not isinstance(b, int)
               for s, b in zip(small[::-1], big[::-1]))


PATTERNS: list[Pattern] = [drop_identity, gelu_from_erf, silu_from_sigmoid, layer_norm_from_parts,
                           rms_norm_from_parts, attention_from_parts, attention_kv_heads,
                           linear_from_matmul,
                           linear_bias, fold_batch_norm]


def canonicalise(graph: Graph, origins: dict[str, list[str]]) -> None:
    """Apply every pattern until none matches (in place)."""
    rw = Rewriter(graph, origins)
    for pattern in PATTERNS:
        changed = True
        while changed:  # a rewrite can enable another at a node already passed
            changed = False
            for node in list(graph.nodes):
                if id(node) in rw.live and pattern(rw, node):
                    changed = True
