"""Output shapes of every IR op: one rule per op (``RULES``), and inference over a graph.

A rule is ``rule(attrs, shapes, values) -> [output shape, ...]``: ``attrs`` are the node's
attributes over its op's defaults, ``shapes`` the input shapes (None for an absent optional
input), ``values`` the input arrays where they are known constants (parameters, or shape
arithmetic evaluated on the way), else None. Dims are ints or strings (symbolic, such as
``"batch"``); a dim a rule cannot know is ``UNKNOWN``. A rule raises ShapeError when the inputs
contradict the op (it names no node: ``infer_node`` adds that).

``infer(graph, ...)`` walks a graph once in order. Given ``evaluate`` (the reference kernels'
``(op, attrs, *arrays) -> outputs``), it also computes the values of small integer tensors whose
inputs are all known (the ``shape -> gather -> concat -> reshape`` chains of exported models), so
that shapes fed through such chains resolve; nothing else is ever run.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from sbcompile.errors import GraphError
from sbcompile.ir.ops import OPS, GroupOp, node_attrs, threshold_shape

Dim = int | str
Shape = tuple[Dim, ...]
UNKNOWN = "?"
VALUE_LIMIT = 64  # integer tensors up to this size have their values followed (shape arithmetic)

RULES: dict[str, Callable[[dict, list, list], list[Shape]]] = {}


class ShapeError(GraphError):
    """Inputs whose shapes (or constant values) the op cannot take."""


def _rule(*ops: str):
    def register(fn):
        for op in ops:
            RULES[op] = fn
        return fn
    return register


def known(d: Dim) -> bool:
    return isinstance(d, int)


def _axis(axis: int, rank: int) -> int:
    if not -rank <= axis < max(rank, 1):
        raise ShapeError(f"axis {axis} is out of range for rank {rank}")
    return axis % rank if rank else 0


def _ints(value: np.ndarray | None) -> list[int] | None:
    return None if value is None else [int(v) for v in np.asarray(value).reshape(-1)]


def broadcast(*shapes: Shape) -> Shape:
    """numpy broadcasting of shapes whose dims may be symbolic (a symbolic dim wins over 1)."""
    width = max(len(s) for s in shapes)
    out = []
    for dims in zip(*[(1,) * (width - len(s)) + tuple(s) for s in shapes]):
        sized = {d for d in dims if known(d) and d != 1}
        symbolic = {d for d in dims if not known(d)}
        if len(sized) > 1:
            raise ShapeError(f"shapes {' and '.join(str(list(s)) for s in shapes)} do not "
                             "broadcast")
        if sized:
            out.append(sized.pop())
        elif len(symbolic) == 1:
            out.append(symbolic.pop())
        else:
            out.append(UNKNOWN if symbolic else 1)
    return tuple(out)


# ---- linear algebra and pooling ----------------------------------------------------------------
@_rule("linear")
def _linear(a, s, v):
    x, w = s[0], s[1]
    if len(w) != 2:
        raise ShapeError(f"weight must be 2-D, got {list(w)}")
    if known(x[-1]) and known(w[1]) and x[-1] != w[1]:
        raise ShapeError(f"input has {x[-1]} features, weight expects {w[1]}")
    if len(s) > 2 and s[2] is not None and tuple(s[2]) not in ((w[0],), ()):
        raise ShapeError(f"bias shape {list(s[2])} != [{w[0]}]")
    return [tuple(x[:-1]) + (w[0],)]


@_rule("matmul")
def _matmul(a, s, v):
    x, y = s
    if not x or not y:
        raise ShapeError("matmul operands must have rank >= 1")
    xs, ys = (1,) + tuple(x) if len(x) == 1 else tuple(x), tuple(y) + (1,) if len(y) == 1 \
        else tuple(y)
    if known(xs[-1]) and known(ys[-2]) and xs[-1] != ys[-2]:
        raise ShapeError(f"inner dimensions differ ({xs[-1]} vs {ys[-2]})")
    out = broadcast(xs[:-2], ys[:-2]) + (xs[-2], ys[-1])
    if len(x) == 1:
        out = out[:-2] + out[-1:]
    if len(y) == 1:
        out = out[:-1]
    return [out]


def window_out(size: Dim, kernel: int, stride: int, begin: int, end: int, dilation: int,
               ceil_mode: int = 0) -> Dim:
    """The output size of a strided window (conv, pooling) along one axis: floor (ceil_mode:
    ceil) of (size + pads - dilated kernel) / stride, plus one."""
    if not known(size):
        return UNKNOWN
    span = (kernel - 1) * dilation + 1
    steps = (size + begin + end - span) / stride
    out = (math.ceil(steps) if ceil_mode else math.floor(steps)) + 1
    if ceil_mode and (out - 1) * stride >= size + begin:
        out -= 1  # ONNX: a window may not start inside the end pad
    if out < 1:
        raise ShapeError(f"a window of {span} does not fit an input of {size} (pads "
                         f"{begin}, {end})")
    return out


def _spatial(a, x: Shape, kernel: list[int], ceil_mode: int = 0) -> tuple:
    n_sp = len(kernel)
    strides = a["strides"] or [1] * n_sp
    dilations = a["dilations"] or [1] * n_sp
    pads = a["pads"] or [0] * (2 * n_sp)
    return tuple(window_out(x[2 + i], kernel[i], strides[i], pads[i], pads[i + n_sp],
                             dilations[i], ceil_mode) for i in range(n_sp))


@_rule("conv", "spike_conv")
def _conv(a, s, v):
    x, w = s[0], s[1]
    if len(x) != len(w):
        raise ShapeError(f"input rank {len(x)} != weight rank {len(w)}")
    if known(x[1]) and x[1] != w[1] * a["group"]:
        raise ShapeError(f"input has {x[1]} channels, weight expects {w[1] * a['group']}")
    return [(x[0], w[0]) + _spatial(a, x, list(w[2:]))]


@_rule("max_pool", "avg_pool")
def _pool(a, s, v):
    x = s[0]
    return [tuple(x[:2]) + _spatial(a, x, list(a["kernel"]), a["ceil_mode"])]


@_rule("global_avg_pool", "global_max_pool")
def _global_pool(a, s, v):
    return [tuple(s[0][:2]) + (1,) * (len(s[0]) - 2)]


# ---- elementwise, activations, norms ------------------------------------------------------------
@_rule(*sorted(GroupOp.Broadcast))
def _broadcasting(a, s, v):
    return [broadcast(*[x for x in s if x is not None])]


@_rule(*sorted(GroupOp.SameShape))
def _same(a, s, v):
    return [tuple(s[0])]


# ---- reductions ---------------------------------------------------------------------------------
def _reduced(x: Shape, axes: list[int] | None, keepdims: int) -> Shape:
    rank = len(x)
    picked = set(range(rank)) if axes is None else {_axis(i, rank) for i in axes}
    if keepdims:
        return tuple(1 if i in picked else d for i, d in enumerate(x))
    return tuple(d for i, d in enumerate(x) if i not in picked)


@_rule("reduce_mean", "reduce_sum", "reduce_max", "reduce_min", "reduce_prod")
def _reduce(a, s, v):
    if len(s) > 1 and s[1] is not None:  # axes as an input: known when its value is
        axes = _ints(v[1])
        if axes is None:
            return [(UNKNOWN,) * len(s[0]) if a["keepdims"] else None]
        return [_reduced(s[0], axes or None, a["keepdims"])]
    return [_reduced(s[0], a["axes"], a["keepdims"])]


@_rule("argmax", "argmin")
def _arg_extreme(a, s, v):
    return [_reduced(s[0], [a["axis"]], a["keepdims"])]


# ---- shape and data movement --------------------------------------------------------------------
@_rule("reshape")
def _reshape(a, s, v):
    x, target = s[0], _ints(v[1])
    if target is None:
        n = s[1][0] if s[1] else 0
        return [(UNKNOWN,) * n if known(n) else None]
    dims: list[Dim] = [x[i] if t == 0 and not a["allowzero"] and i < len(x) else t
                       for i, t in enumerate(target)]
    if -1 in dims:
        rest = [d for d in dims if d != -1]
        if all(known(d) for d in x) and all(known(d) for d in rest):
            whole, part = math.prod(x), math.prod(rest)
            if part == 0 or whole % part:
                raise ShapeError(f"cannot reshape {list(x)} to {target}")
            dims[dims.index(-1)] = whole // part
        else:
            dims[dims.index(-1)] = UNKNOWN
    elif all(known(d) for d in x) and all(known(d) for d in dims) and \
            math.prod(x) != math.prod(dims):
        raise ShapeError(f"cannot reshape {list(x)} to {target}")
    return [tuple(dims)]


@_rule("transpose")
def _transpose(a, s, v):
    x = s[0]
    perm = a["perm"] if a["perm"] is not None else list(range(len(x)))[::-1]
    if sorted(_axis(p, len(x)) for p in perm) != list(range(len(x))):
        raise ShapeError(f"perm {perm} is not a permutation of rank {len(x)}")
    return [tuple(x[_axis(p, len(x))] for p in perm)]


def _product(dims) -> Dim:
    return math.prod(dims) if all(known(d) for d in dims) else UNKNOWN


@_rule("flatten")
def _flatten(a, s, v):
    x = s[0]
    axis = a["axis"] + len(x) if a["axis"] < 0 else a["axis"]
    if not 0 <= axis <= len(x):
        raise ShapeError(f"axis {a['axis']} is out of range for rank {len(x)}")
    return [(_product(x[:axis]), _product(x[axis:]))]


@_rule("concat")
def _concat(a, s, v):
    parts = [x for x in s if x is not None]
    rank = len(parts[0])
    axis = _axis(a["axis"], rank)
    for x in parts[1:]:
        if len(x) != rank or any(known(p) and known(q) and p != q for i, (p, q) in
                                 enumerate(zip(parts[0], x)) if i != axis):
            raise ShapeError(f"shapes {list(parts[0])} and {list(x)} do not concatenate on "
                             f"axis {axis}")
    return [tuple(parts[0][:axis]) + (_sum([x[axis] for x in parts]),)
            + tuple(parts[0][axis + 1:])]


def _sum(dims) -> Dim:
    return sum(dims) if all(known(d) for d in dims) else UNKNOWN


@_rule("split")
def _split(a, s, v):
    x = s[0]
    axis = _axis(a["axis"], len(x))
    sizes = _ints(v[1]) if len(v) > 1 else None
    if sizes is None and a["num_outputs"] is not None and known(x[axis]):
        n, size = a["num_outputs"], x[axis]
        chunk = -(-size // n)
        sizes = [min(chunk, size - i * chunk) for i in range(n)]
    if sizes is None:
        count = a["num_outputs"] or (s[1][0] if len(s) > 1 and s[1] else 1)
        return [tuple(x[:axis]) + (UNKNOWN,) + tuple(x[axis + 1:])] * count
    if known(x[axis]) and sum(sizes) != x[axis]:
        raise ShapeError(f"split sizes {sizes} do not add up to {x[axis]}")
    return [tuple(x[:axis]) + (n,) + tuple(x[axis + 1:]) for n in sizes]


@_rule("slice")
def _slice(a, s, v):
    x = list(s[0])
    given = [len(s) > i and s[i] is not None for i in range(5)]
    starts, ends, axes, steps = (_ints(v[i]) if given[i] else None for i in range(1, 5))
    if starts is None or ends is None or (given[3] and axes is None) or \
            (given[4] and steps is None):
        return [(UNKNOWN,) * len(x)]
    axes = list(range(len(starts))) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis = _axis(axis, len(x))
        dim = x[axis]
        if not known(dim):
            x[axis] = UNKNOWN
            continue
        if step == 0:
            raise ShapeError("slice step 0")
        start = start + dim if start < 0 else start
        end = end + dim if end < 0 else end
        if step > 0:
            start, end = min(max(start, 0), dim), min(max(end, 0), dim)
            x[axis] = max(0, -(-(end - start) // step))
        else:
            start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
            x[axis] = max(0, -(-(start - end) // -step))
    return [tuple(x)]


@_rule("gather")
def _gather(a, s, v):
    data, idx = s
    axis = _axis(a["axis"], len(data))
    return [tuple(data[:axis]) + tuple(idx) + tuple(data[axis + 1:])]


@_rule("gather_elements")
def _gather_elements(a, s, v):
    return [tuple(s[1])]


@_rule("unsqueeze")
def _unsqueeze(a, s, v):
    x, axes = s[0], _ints(v[1])
    if axes is None:
        n = s[1][0] if s[1] else 1
        return [(UNKNOWN,) * (len(x) + n) if known(n) else None]
    rank = len(x) + len(axes)
    picked = {_axis(i, rank) for i in axes}
    dims = iter(x)
    return [tuple(1 if i in picked else next(dims) for i in range(rank))]


@_rule("squeeze")
def _squeeze(a, s, v):
    x = s[0]
    if len(s) < 2 or s[1] is None:
        if not all(known(d) for d in x):
            raise ShapeError(f"squeeze without axes needs a static shape, got {list(x)}")
        return [tuple(d for d in x if d != 1)]
    axes = _ints(v[1])
    if axes is None:
        n = s[1][0] if s[1] else 0
        return [(UNKNOWN,) * (len(x) - n) if known(n) else None]
    picked = {_axis(i, len(x)) for i in axes}
    for i in picked:
        if known(x[i]) and x[i] != 1:
            raise ShapeError(f"cannot squeeze axis {i} of size {x[i]}")
    return [tuple(d for i, d in enumerate(x) if i not in picked)]


@_rule("expand")
def _expand(a, s, v):
    target = _ints(v[1])
    if target is None:
        n = s[1][0] if s[1] else 0
        return [(UNKNOWN,) * max(n, len(s[0])) if known(n) else None]
    return [broadcast(s[0], tuple(target))]


@_rule("tile")
def _tile(a, s, v):
    x, reps = s[0], _ints(v[1])
    if reps is None:
        return [(UNKNOWN,) * len(x)]
    if len(reps) != len(x):
        raise ShapeError(f"repeats {reps} do not match rank {len(x)}")
    return [tuple(d * r if known(d) else UNKNOWN for d, r in zip(x, reps))]


@_rule("shape")
def _shape(a, s, v):
    return [(len(range(len(s[0]))[a["start"]:a["end"]]),)]


@_rule("constant_of_shape")
def _constant_of_shape(a, s, v):
    target = _ints(v[0])
    if target is None:
        n = s[0][0] if s[0] else 0
        return [(UNKNOWN,) * n if known(n) else None]
    return [tuple(target)]


@_rule("range")
def _range(a, s, v):
    if any(x is None for x in v):
        return [(UNKNOWN,)]
    start, limit, delta = (float(np.asarray(x).reshape(())) for x in v)
    if delta == 0:
        raise ShapeError("range delta 0")
    return [(max(int(math.ceil((limit - start) / delta)), 0),)]


@_rule("pad")
def _pad(a, s, v):
    x, pads = s[0], _ints(v[1])
    if pads is None:
        return [(UNKNOWN,) * len(x)]
    n = len(x)
    if len(pads) != 2 * n:
        raise ShapeError(f"pads {pads} do not match rank {n}")
    return [tuple(d + pads[i] + pads[i + n] if known(d) else UNKNOWN for i, d in enumerate(x))]


# ---- attention ----------------------------------------------------------------------------------
@_rule("attention")
def _attention(a, s, v):
    q, k, val = s[0], s[1], s[2]
    if len(q) != 4 or len(k) != 4 or len(val) != 4:
        raise ShapeError(f"q, k, v must be 4-D [B, H, T, D], got {list(q)}, {list(k)}, "
                         f"{list(val)}")
    if known(q[1]) and known(k[1]) and q[1] % k[1]:
        raise ShapeError(f"{q[1]} query heads are not a multiple of {k[1]} key heads")
    if known(q[3]) and known(k[3]) and q[3] != k[3]:
        raise ShapeError(f"query dim {q[3]} != key dim {k[3]}")
    return [(q[0], q[1], q[2], val[3])]


@_rule("gla")
def _gla(a, s, v):
    return [tuple(s[2])]


# ---- spiking ------------------------------------------------------------------------------------
@_rule("spike_encode")
def _spike_encode(a, s, v):
    x = tuple(s[0])
    if a["policy"] == "dynamic":
        return [x, threshold_shape(x, a["granularity"])]
    if len(s) < 2 or s[1] is None:
        raise ShapeError("a static spike_encode needs its threshold input")
    return [x, tuple(s[1])]


@_rule("spike_linear")
def _spike_linear(a, s, v):
    counts, w = s
    if len(w) != 2:
        raise ShapeError(f"weight must be 2-D, got {list(w)}")
    if known(counts[-1]) and counts[-1] != w[1]:
        raise ShapeError(f"counts have {counts[-1]} channels, weight expects {w[1]}")
    group = a["group_size"] or w[1]
    groups = -(-w[1] // group) if known(w[1]) else UNKNOWN
    return [tuple(counts[:-1]) + (groups, w[0])]


@_rule("spike_scores")
def _spike_scores(a, s, v):
    q, k = tuple(s[0]), tuple(s[1])
    _check_heads(q, k, "query counts", "keys")
    return [(q[0], q[1], q[2], k[2])]


@_rule("spike_attention")
def _spike_attention(a, s, v):
    acc, val = tuple(s[0]), tuple(s[3])
    _check_heads(acc, val, "scores", "values")
    if a["scale"] is None:
        raise ShapeError("spike_attention needs its scale (the query's 1/sqrt(D))")
    if known(acc[3]) and known(val[2]) and acc[3] != val[2]:
        raise ShapeError(f"scores over {acc[3]} keys, values hold {val[2]}")
    return [(acc[0], acc[1], acc[2], val[3])]


def _check_heads(q: Shape, kv: Shape, q_name: str, kv_name: str) -> None:
    if len(q) != 4 or len(kv) != 4:
        raise ShapeError(f"{q_name} and {kv_name} must be 4-D [B, H, T, D], got {list(q)}, "
                         f"{list(kv)}")
    if known(q[1]) and known(kv[1]) and q[1] % kv[1]:
        raise ShapeError(f"{q[1]} query heads are not a multiple of {kv[1]} key heads")


@_rule("spike_decode")
def _spike_decode(a, s, v):
    acc = tuple(s[0])
    if len(s) > 2 and s[2] is not None and a["layout"] == "linear":
        return [acc[:-2] + acc[-1:]]
    if len(s) > 2 and s[2] is not None:
        return [acc]
    return [broadcast(acc, tuple(s[1]))]


# ---- the ops real exported models add (issue 14) --------------------------------------------------


@_rule("det")
def _det(a, s, v):
    x = tuple(s[0])
    if len(x) < 2 or (known(x[-1]) and known(x[-2]) and x[-1] != x[-2]):
        raise ShapeError(f"det needs square trailing matrices, got {list(x)}")
    return [x[:-2]]


@_rule("gather_nd")
def _gather_nd(a, s, v):
    data, idx = tuple(s[0]), tuple(s[1])
    depth, b = idx[-1], a["batch_dims"]
    if not known(depth):
        return [None]
    return [idx[:-1] + data[b + depth:]]


@_rule("topk")
def _topk(a, s, v):
    x = tuple(s[0])
    axis = _axis(a["axis"], len(x))
    k = _ints(v[1])
    if k is not None and known(x[axis]) and k[0] > x[axis]:
        raise ShapeError(f"k={k[0]} exceeds the axis size {x[axis]}")
    out = x[:axis] + (k[0] if k is not None else UNKNOWN,) + x[axis + 1:]
    return [out, out]


@_rule("einsum")
def _einsum(a, s, v):
    """Letters take their dims from the operands; ``...`` broadcasts; without ``->`` the output
    is the ellipsis then the letters used once, in alphabetical order."""
    equation = a["equation"].replace(" ", "")
    lhs, _, rhs = equation.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(s):
        raise ShapeError(f"equation '{equation}' has {len(terms)} operands, got {len(s)}")
    dims: dict[str, Dim] = {}
    ellipsis: Shape = ()
    for term, shape in zip(terms, s):
        head, dots, tail = term.partition("...")
        rest = len(shape) - len(head) - len(tail)
        if (rest < 0) or (rest and not dots):
            raise ShapeError(f"operand '{term}' does not fit shape {list(shape)}")
        if dots:
            ellipsis = broadcast(ellipsis, tuple(shape[len(head):len(shape) - len(tail)]))
        for letter, d in zip(head + tail, tuple(shape[:len(head)]) +
                             tuple(shape[len(shape) - len(tail):])):
            if letter not in dims or (not known(dims[letter]) or dims[letter] == 1):
                dims[letter] = d
    if not _:
        letters = [c for c in sorted(set(lhs) - {",", "."}) if lhs.count(c) == 1]
        rhs = "..." * bool(ellipsis or "..." in lhs) + "".join(letters)
    head, dots, tail = rhs.partition("...")
    return [tuple(dims[c] for c in head) + (ellipsis if dots else ()) +
            tuple(dims[c] for c in tail)]


@_rule("conv_transpose")
def _conv_transpose(a, s, v):
    x, w = s[0], s[1]
    if len(x) != len(w):
        raise ShapeError(f"input rank {len(x)} != weight rank {len(w)}")
    if known(x[1]) and x[1] != w[0]:
        raise ShapeError(f"input has {x[1]} channels, weight expects {w[0]}")
    n_sp = len(x) - 2
    strides = a["strides"] or [1] * n_sp
    dilations = a["dilations"] or [1] * n_sp
    pads = a["pads"] or [0] * (2 * n_sp)
    extra = a["output_padding"] or [0] * n_sp
    spatial = tuple((d - 1) * strides[i] + (w[2 + i] - 1) * dilations[i] + 1 + extra[i]
                    - pads[i] - pads[i + n_sp] if known(d) else UNKNOWN
                    for i, d in enumerate(x[2:]))
    return [(x[0], w[1] * a["group"]) + spatial]


@_rule("resize")
def _resize(a, s, v):
    x = list(s[0])
    axes = [_axis(i, len(x)) for i in (a["axes"] if a["axes"] is not None else range(len(x)))]
    scales = _floats(v[2]) if len(v) > 2 else None
    sizes = _ints(v[3]) if len(v) > 3 else None
    if sizes:
        if a["keep_aspect_ratio_policy"] != "stretch":
            if not all(known(x[i]) for i in axes):
                return [tuple(UNKNOWN if i in axes else d for i, d in enumerate(x))]
            ratios = [n / x[i] for n, i in zip(sizes, axes)]
            ratio = min(ratios) if a["keep_aspect_ratio_policy"] == "not_larger" else max(ratios)
            sizes = [int(ratio * x[i] + 0.5) for i in axes]
        for n, i in zip(sizes, axes):
            x[i] = n
    elif scales:
        for f, i in zip(scales, axes):
            x[i] = int(math.floor(x[i] * f)) if known(x[i]) else UNKNOWN
    else:
        for i in axes:
            x[i] = UNKNOWN
    return [tuple(x)]


def _floats(value: np.ndarray | None) -> list[float] | None:
    return None if value is None else [float(f) for f in np.asarray(value).reshape(-1)]


# ---- inference ----------------------------------------------------------------------------------
def infer_node(node, shapes: list[Shape | None],
               values: list[np.ndarray | None]) -> list[Shape | None]:
    """The output shapes of ``node`` (None: not even the rank is known); raises ShapeError
    naming the node."""
    if any(i and s is None for i, s in zip(node.inputs, shapes)):
        return [None] * len(node.outputs)  # an input of unknown rank
    try:
        return RULES[node.op](node_attrs(node), shapes, values)
    except ShapeError as e:
        raise ShapeError(f"node '{node.name}' ({node.op}): {e}") from None
    except (IndexError, TypeError, ValueError) as e:
        raise ShapeError(f"node '{node.name}' ({node.op}): inputs it cannot take ({e})") from None


Evaluate = Callable[[Any, list], Any]  # (node, input arrays) -> output array(s)


def propagate(node, shapes: dict[str, Shape | None], values: dict[str, np.ndarray],
              evaluate: Evaluate | None = None) -> None:
    """Add ``node``'s output shapes to ``shapes`` and, where known, the values of its small
    integer outputs to ``values`` (``shape`` of a static shape always; other ops through
    ``evaluate`` when every input value is known)."""
    ins = [shapes.get(i) if i else None for i in node.inputs]
    args = [values.get(i) if i else None for i in node.inputs]
    outs = infer_node(node, ins, args)
    shapes.update(zip(node.outputs, outs))
    for name, arr in zip(node.outputs, _values(node, ins, args, outs, evaluate)):
        if arr is not None:
            values[name] = arr


def constant_values(params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The parameters whose values shape rules follow (small integer tensors, and the small
    float vectors of Resize scales)."""
    return {k: p for k, p in params.items()
            if _small_int(p) or (p.dtype.kind == "f" and p.ndim == 1 and p.size <= VALUE_LIMIT)}


def infer(graph, input_shapes: dict[str, Shape] | None = None,
          evaluate: Evaluate | None = None) -> dict[str, Shape | None]:
    """Shapes of every value of ``graph`` (nodes in order), from the declared input shapes or
    ``input_shapes``."""
    shapes: dict[str, Shape | None] = {k: tuple(p.shape) for k, p in graph.params.items()}
    for name in graph.inputs:
        shapes[name] = tuple((input_shapes or {}).get(name, graph.values[name].shape))
    values = constant_values(graph.params)
    for node in graph.nodes:
        propagate(node, shapes, values, evaluate)
    return shapes


def _small_int(arr: np.ndarray) -> bool:
    return arr.dtype.kind in "iu" and arr.size <= VALUE_LIMIT


def _values(node, ins, args, outs, evaluate) -> list[np.ndarray | None]:
    none = [None] * len(outs)
    if node.op == "shape":
        if ins[0] is None or not all(known(d) for d in ins[0]):
            return none
        a = node_attrs(node)
        return [np.asarray(ins[0], dtype=np.int64)[a["start"]:a["end"]]]
    if evaluate is None or any(i and a is None for i, a in zip(node.inputs, args)):
        return none
    if any(out is None or not all(known(d) for d in out) or math.prod(out) > VALUE_LIMIT
           for out in outs):
        return none
    with np.errstate(all="ignore"):
        result = evaluate(node, args)
    result = result if isinstance(result, tuple) else (result,)
    return [r if _small_int(np.asarray(r)) else None for r in result]


def missing_rules() -> list[str]:
    return sorted(set(OPS) - set(RULES))


def agree(declared: Shape, inferred: Shape | None) -> bool:
    """Whether a declared shape fits an inferred one: same rank, equal where both are ints."""
    if inferred is None:
        return True
    return len(declared) == len(inferred) and all(
        not (known(d) and known(i)) or d == i for d, i in zip(declared, inferred))
