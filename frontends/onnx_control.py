"""Control flow with static structure, inlined on the ONNX graph before lowering.

- ``If`` whose condition is a constant (a literal, or a shape-only test folded from static
  shapes) becomes the nodes of the branch taken; one whose condition is known only at run time
  becomes both branches and a ``Where`` choosing each output, when the branches declare the same
  output types and shapes.
- ``Loop`` with a constant trip count, and a condition that stays true (absent or constant true,
  and the body passing it through or returning constant true), is unrolled: every iteration's body
  nodes with the iteration number as a constant, carried values chained, scan outputs stacked.
- ``Scan`` over inputs of static length is unrolled the same way: per step a slice of every scan
  input (forward or reverse, along its axis), carried states chained, scan outputs stacked.

Inlined nodes and values are renamed ``<node>/<iteration>/<inner name>`` so they never collide;
names the body reads from the enclosing graph keep their names. Anything else (a condition or
trip count known only at run time) stays and is refused at lowering with the reason.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from sbcompile.frontends.onnx_lowering import NodeView
from sbcompile.frontends.onnx_registry import _converter
from sbcompile.ir.graph import Value, unique_name

MAX_UNROLLED_NODES = 200_000  # beyond this an unrolled loop is refused (a runaway trip count)


class _Namer:
    """Fresh, collision-free names inside one graph."""

    def __init__(self, proto: onnx.ModelProto):
        g = proto.graph
        self.taken = {v.name for v in [*g.input, *g.output, *g.value_info]}
        self.taken |= {t.name for t in g.initializer}
        self.taken |= {o for n in g.node for o in [*n.output, n.name]}

    def __call__(self, base: str) -> str:
        return unique_name(base, self.taken)


def expand_control_flow(proto: onnx.ModelProto, consts: dict[str, np.ndarray],
                        types: dict, select: bool = False) -> bool:
    """Inline every If / Loop / Scan of ``proto.graph`` that has static structure (in place;
    constants they need go into ``consts``); with ``select``, an If on a run-time condition
    too, as both branches and a ``Where`` (call it once nothing static is left, so a condition
    that folds later picks its branch instead). Returns whether anything changed."""
    namer = _Namer(proto)
    changed = False
    nodes: list[onnx.NodeProto] = []
    for node in proto.graph.node:
        expand = _EXPANDERS.get(node.op_type) if node.domain in ("", "ai.onnx") else None
        if expand is _expand_if:
            inlined = expand(node, consts, types, namer, select)
        else:
            inlined = expand(node, consts, types, namer) if expand else None
        if inlined is None:
            nodes.append(node)
        else:
            nodes.extend(inlined)
            changed = True
    if changed:
        del proto.graph.node[:]
        proto.graph.node.extend(nodes)
    return changed


def _body(node: onnx.NodeProto, key: str) -> onnx.GraphProto:
    return next(a.g for a in node.attribute if a.name == key)


def _attr(node: onnx.NodeProto, key: str, default=None):
    for a in node.attribute:
        if a.name == key:
            return helper.get_attribute_value(a)
    return default


def _inline(body: onnx.GraphProto, bound: dict[str, str], prefix: str, namer: _Namer,
            consts: dict[str, np.ndarray]) -> tuple[list[onnx.NodeProto], list[str]]:
    """The body's nodes with its inputs bound to outer values (``bound``: body input -> outer
    name), its own values renamed under ``prefix``; returns the nodes and the outer names of the
    body's outputs."""
    mapping = dict(bound)
    for init in body.initializer:
        mapping[init.name] = namer(f"{prefix}/{init.name}")
        consts[mapping[init.name]] = onnx.numpy_helper.to_array(init)
    for inner in body.node:
        for out in inner.output:
            if out:
                mapping[out] = namer(f"{prefix}/{out}")
    nodes = []
    for i, inner in enumerate(body.node):
        copy = onnx.NodeProto()
        copy.CopyFrom(inner)
        copy.name = namer(f"{prefix}/{inner.name or f'{inner.op_type}_{i}'}")
        copy.input[:] = [mapping.get(x, x) if x else x for x in inner.input]
        copy.output[:] = [mapping.get(x, x) if x else x for x in inner.output]
        for attr in copy.attribute:  # nested bodies read renamed values of this one
            for sub in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else
                        list(attr.graphs) if attr.type == onnx.AttributeProto.GRAPHS else []):
                _rename_reads(sub, mapping)
        nodes.append(copy)
    return nodes, [mapping.get(o.name, o.name) for o in body.output]


def _rename_reads(graph: onnx.GraphProto, mapping: dict[str, str]) -> None:
    """Rename, in a nested body, the outer values it reads (not the ones it defines)."""
    own = {v.name for v in graph.input} | {t.name for t in graph.initializer}
    own |= {o for n in graph.node for o in n.output}
    local = {k: v for k, v in mapping.items() if k not in own}
    for n in graph.node:
        n.input[:] = [local.get(x, x) if x else x for x in n.input]
        for attr in n.attribute:
            for sub in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else
                        list(attr.graphs) if attr.type == onnx.AttributeProto.GRAPHS else []):
                _rename_reads(sub, local)
    for out in graph.output:  # a body output may be an outer value itself
        if out.name in local:
            out.name = local[out.name]


def _identity(src: str, dst: str, namer: _Namer, prefix: str) -> onnx.NodeProto:
    return helper.make_node("Identity", [src], [dst], name=namer(f"{prefix}/out"))


def _const(consts: dict, namer: _Namer, base: str, value: np.ndarray) -> str:
    name = namer(base)
    consts[name] = value
    return name


# ---- If -----------------------------------------------------------------------------------------
def _expand_if(node, consts, types, namer, select=False):
    cond = consts.get(node.input[0])
    if cond is None:
        return _select_if(node, consts, namer) if select else None
    branch = _body(node, "then_branch" if bool(np.asarray(cond).reshape(-1)[0])
                   else "else_branch")
    nodes, outs = _inline(branch, {}, node.name, namer, consts)
    return nodes + [_identity(src, dst, namer, node.name)
                    for src, dst in zip(outs, node.output) if dst]


def _declared(info: onnx.ValueInfoProto) -> tuple | None:
    t = info.type.tensor_type
    if not info.type.HasField("tensor_type") or not t.HasField("shape"):
        return None
    return t.elem_type, tuple(d.dim_value if d.HasField("dim_value") else d.dim_param or None
                              for d in t.shape.dim)


def _agree(a: tuple | None, b: tuple | None) -> bool:
    """Same dtype and rank, and no two static dims that differ (unknown dims are left to shape
    inference, which refuses the select if they turn out to differ)."""
    return a is not None and b is not None and a[0] == b[0] and len(a[1]) == len(b[1]) and all(
        x == y or not isinstance(x, int) or not isinstance(y, int) or not x or not y
        for x, y in zip(a[1], b[1]))


def _select_if(node, consts, namer):
    """A run-time condition: both branches inlined and each output chosen by ``Where`` on the
    condition, when the branches declare the same type and shape for every output (else None:
    the If stays and is refused)."""
    then_b, else_b = _body(node, "then_branch"), _body(node, "else_branch")
    if any(not _agree(_declared(a), _declared(b)) for a, b in zip(then_b.output, else_b.output)):
        return None
    then_nodes, then_outs = _inline(then_b, {}, f"{node.name}/then", namer, consts)
    else_nodes, else_outs = _inline(else_b, {}, f"{node.name}/else", namer, consts)
    cond = namer(f"{node.name}/cond")
    nodes = [*then_nodes, *else_nodes, helper.make_node(
        "Reshape", [node.input[0], _const(consts, namer, f"{node.name}/scalar",
                                          np.zeros(0, np.int64))], [cond],
        name=namer(f"{node.name}/cond"))]
    for t, e, dst in zip(then_outs, else_outs, node.output):
        if dst:
            nodes.append(helper.make_node("Where", [cond, t, e], [dst],
                                          name=namer(f"{node.name}/select")))
    return nodes


# ---- Loop ---------------------------------------------------------------------------------------
def _loop_condition_stays_true(node, body, consts) -> bool:
    if len(node.input) > 1 and node.input[1]:
        initial = consts.get(node.input[1])
        if initial is None or not bool(np.asarray(initial).reshape(-1)[0]):
            return False
    cond_in, cond_out = body.input[1].name, body.output[0].name
    if cond_out == cond_in:
        return True
    producer = next((n for n in body.node if cond_out in n.output), None)
    if producer is not None and producer.op_type == "Identity" and producer.input[0] == cond_in:
        return True
    init = next((t for t in body.initializer if t.name == cond_out), None)
    if init is None and producer is not None and producer.op_type == "Constant":
        init = _attr(producer, "value")
    return init is not None and bool(onnx.numpy_helper.to_array(init).reshape(-1)[0])


def _expand_loop(node, consts, types, namer):
    if not node.input or not node.input[0] or node.input[0] not in consts:
        return None
    body = _body(node, "body")
    trips = int(np.asarray(consts[node.input[0]]).reshape(-1)[0])
    if trips * max(len(body.node), 1) > MAX_UNROLLED_NODES or \
            not _loop_condition_stays_true(node, body, consts):
        return None
    carried = list(node.input[2:])
    n_carried = len(carried)
    scans: list[list[str]] = [[] for _ in body.output[1 + n_carried:]]
    if trips == 0 and scans:
        return None
    cond = node.input[1] if len(node.input) > 1 and node.input[1] else \
        _const(consts, namer, f"{node.name}/cond", np.array(True))
    nodes = []
    for i in range(trips):
        prefix = f"{node.name}/{i}"
        bound = {body.input[0].name: _const(consts, namer, f"{prefix}/iter",
                                            np.array(i, np.int64)),
                 body.input[1].name: cond}
        bound.update({b.name: v for b, v in zip(body.input[2:], carried)})
        inlined, outs = _inline(body, bound, prefix, namer, consts)
        nodes += inlined
        carried = outs[1:1 + n_carried]
        for acc, value in zip(scans, outs[1 + n_carried:]):
            acc.append(value)
    nodes += [_identity(src, dst, namer, node.name)
              for src, dst in zip(carried, node.output[:n_carried]) if dst]
    for values, dst in zip(scans, node.output[n_carried:]):
        if dst:
            nodes += _stack(values, dst, 0, namer, node.name, consts)
    return nodes


def _stack(values: list[str], dst: str, axis: int, namer, prefix, consts) -> list:
    """Unsqueeze every value at ``axis`` and concatenate them along it into ``dst``."""
    axes = _const(consts, namer, f"{prefix}/axis", np.array([axis], np.int64))
    nodes, parts = [], []
    for v in values:
        part = namer(f"{prefix}/part")
        nodes.append(helper.make_node("Unsqueeze", [v, axes], [part],
                                      name=namer(f"{prefix}/unsqueeze")))
        parts.append(part)
    nodes.append(helper.make_node("Concat", parts, [dst], name=namer(f"{prefix}/stack"),
                                  axis=axis))
    return nodes


# ---- Scan ---------------------------------------------------------------------------------------
def _expand_scan(node, consts, types, namer):
    body = _body(node, "body")
    n_scan = int(_attr(node, "num_scan_inputs"))
    n_state = len(node.input) - n_scan
    scan_inputs = list(node.input[n_state:])
    in_axes = list(_attr(node, "scan_input_axes", [0] * n_scan))
    in_dirs = list(_attr(node, "scan_input_directions", [0] * n_scan))
    n_out = len(body.output) - n_state
    out_axes = list(_attr(node, "scan_output_axes", [0] * n_out))
    out_dirs = list(_attr(node, "scan_output_directions", [0] * n_out))
    lengths = set()
    for name, axis in zip(scan_inputs, in_axes):
        v = types.get(name)
        if not isinstance(v, Value):
            return None
        dim = v.shape[axis % len(v.shape)]
        if not isinstance(dim, int):
            return None
        lengths.add(dim)
    if len(lengths) != 1 or lengths == {0} or \
            next(iter(lengths)) * max(len(body.node), 1) > MAX_UNROLLED_NODES:
        return None
    steps = lengths.pop()
    states = list(node.input[:n_state])
    outs: list[list[str]] = [[] for _ in range(n_out)]
    nodes = []
    for t in range(steps):
        prefix = f"{node.name}/{t}"
        bound = {b.name: v for b, v in zip(body.input[:n_state], states)}
        for b, name, axis, direction in zip(body.input[n_state:], scan_inputs, in_axes, in_dirs):
            index = steps - 1 - t if direction else t
            picked = namer(f"{prefix}/{b.name}")
            nodes.append(helper.make_node(
                "Gather", [name, _const(consts, namer, f"{prefix}/t", np.array(index, np.int64))],
                [picked], name=namer(f"{prefix}/slice"), axis=axis))
            bound[b.name] = picked
        inlined, results = _inline(body, bound, prefix, namer, consts)
        nodes += inlined
        states = results[:n_state]
        for acc, value in zip(outs, results[n_state:]):
            acc.append(value)
    nodes += [_identity(src, dst, namer, node.name)
              for src, dst in zip(states, node.output[:n_state]) if dst]
    for k, (values, dst) in enumerate(zip(outs, node.output[n_state:])):
        if dst:
            rank = _rank(body.output[n_state + k])
            axis = out_axes[k] % (rank + 1) if rank is not None else out_axes[k]
            nodes += _stack(values[::-1] if out_dirs[k] else values, dst, axis, namer,
                            node.name, consts)
    return nodes


def _rank(info: onnx.ValueInfoProto) -> int | None:
    t = info.type.tensor_type
    return len(t.shape.dim) if t.HasField("shape") else None


_EXPANDERS = {"If": _expand_if, "Loop": _expand_loop, "Scan": _expand_scan}


# ---- what reaches lowering: the forms that could not be inlined -------------------------------
@_converter("If", attrs=("then_branch", "else_branch"))
def _if(n: NodeView) -> None:
    raise n.refuse_dynamic("the condition is known only at run time and the branches declare "
                           "different output shapes (an If is inlined when its condition is a "
                           "constant or follows from static shapes, and selected with Where when "
                           "the branches agree; static input shapes may fold it)")


@_converter("Loop", attrs=("body",))
def _loop(n: NodeView) -> None:
    if n.const(0) is None:
        raise n.refuse("the trip count is known only at run time (a Loop is unrolled when its "
                       "trip count is a constant and its condition stays true)")
    raise n.refuse("the loop condition may turn false, or the unrolled loop would exceed "
                   f"{MAX_UNROLLED_NODES} nodes")


@_converter("Scan", attrs=("body", "num_scan_inputs", "scan_input_axes",
                           "scan_input_directions", "scan_output_axes",
                           "scan_output_directions"))
def _scan(n: NodeView) -> None:
    raise n.refuse_dynamic("the scanned length is not static (a Scan is unrolled over a static "
                           "length)")
