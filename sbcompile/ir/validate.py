"""Structural and type checks of an IR graph. Every error names the node or value at fault."""
from __future__ import annotations

import numpy as np

from sbcompile.errors import GraphError
from sbcompile.ir.graph import DTYPES, Graph, Node
from sbcompile.ir.ops import OPS


def validate(graph: Graph) -> None:
    """Raise GraphError on the first problem: unknown ops or attributes, wrong arity, dangling or
    doubly-produced values, cycles, parameters that disagree with their value or are not finite,
    and shape/dtype mismatches on the ops with a fixed contract (linear, conv, spike ops, binary
    elementwise)."""
    _check_values(graph)
    _check_params(graph)
    produced = set(graph.inputs) | set(graph.params)
    for node in graph.nodes:
        _check_node_signature(node)
        for out in node.outputs:
            if out in produced:
                raise GraphError(f"value '{out}' is produced twice (again by node '{node.name}')")
            produced.add(out)
    for node in graph.nodes:
        for i in node.inputs:
            if i and i not in produced:
                raise GraphError(f"node '{node.name}' reads value '{i}' that nothing produces")
    for out in graph.outputs:
        if out not in produced:
            raise GraphError(f"graph output '{out}' is never produced")
    graph.toposort()  # raises on a cycle
    for node in graph.nodes:
        _check_types(graph, node)


def _check_values(graph: Graph) -> None:
    for name, v in graph.values.items():
        if v.dtype not in DTYPES:
            raise GraphError(f"value '{name}' has unsupported dtype '{v.dtype}'")
    for n in graph.nodes:
        for name in [*n.inputs, *n.outputs]:
            if name and name not in graph.values:
                raise GraphError(f"node '{n.name}' uses value '{name}' that has no type")
    for name in graph.inputs:
        if name not in graph.values:
            raise GraphError(f"graph input '{name}' has no type")


def _check_params(graph: Graph) -> None:
    for name, arr in graph.params.items():
        v = graph.values.get(name)
        if v is None:
            raise GraphError(f"parameter '{name}' has no value entry")
        if tuple(arr.shape) != tuple(v.shape) or arr.dtype.name != v.dtype:
            raise GraphError(f"parameter '{name}' is {arr.dtype.name}{list(arr.shape)} but its "
                             f"value says {v.dtype}{list(v.shape)}")
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            raise GraphError(f"parameter '{name}' contains NaN or Inf")


def _check_node_signature(node: Node) -> None:
    spec = OPS.get(node.op)
    if spec is None:
        raise GraphError(f"node '{node.name}' has unknown op '{node.op}'")
    n_in = len(node.inputs)
    if n_in < spec.min_inputs or (not spec.variadic and n_in > len(spec.inputs)):
        raise GraphError(f"node '{node.name}' ({node.op}) takes {spec.min_inputs}.."
                         f"{len(spec.inputs)} inputs, got {n_in}")
    for req, name in zip(spec.inputs, node.inputs):
        if not req.endswith(("?", "*")) and not name:
            raise GraphError(f"node '{node.name}' ({node.op}) lacks required input '{req}'")
    unknown = set(node.attrs) - set(spec.attrs)
    if unknown:
        raise GraphError(f"node '{node.name}' ({node.op}) has unknown attribute "
                         f"'{sorted(unknown)[0]}'")


def _static(shape) -> bool:
    return all(isinstance(d, int) for d in shape)


def _check_types(graph: Graph, node: Node) -> None:
    v = graph.values
    ins = [v[i] if i else None for i in node.inputs]
    where = f"node '{node.name}' ({node.op})"
    if node.op == "linear":
        x, w = ins[0], ins[1]
        if len(w.shape) != 2:
            raise GraphError(f"{where}: weight must be 2-D, got {list(w.shape)}")
        if isinstance(x.shape[-1], int) and x.shape[-1] != w.shape[1]:
            raise GraphError(f"{where}: input has {x.shape[-1]} features, weight expects "
                             f"{w.shape[1]}")
        if len(ins) > 2 and ins[2] is not None and tuple(ins[2].shape) not in ((w.shape[0],), ()):
            raise GraphError(f"{where}: bias shape {list(ins[2].shape)} != [{w.shape[0]}]")
    elif node.op in ("conv", "spike_conv"):
        x, w = ins[0], ins[1]
        group = node.attrs.get("group", 1)
        if len(x.shape) != len(w.shape):
            raise GraphError(f"{where}: input rank {len(x.shape)} != weight rank {len(w.shape)}")
        if isinstance(x.shape[1], int) and x.shape[1] != w.shape[1] * group:
            raise GraphError(f"{where}: input has {x.shape[1]} channels, weight expects "
                             f"{w.shape[1] * group}")
    elif node.op == "matmul":
        a, b = ins
        if len(a.shape) >= 1 and len(b.shape) >= 1:
            ka = a.shape[-1]
            kb = b.shape[-2] if len(b.shape) >= 2 else b.shape[0]
            if isinstance(ka, int) and isinstance(kb, int) and ka != kb:
                raise GraphError(f"{where}: inner dimensions differ ({ka} vs {kb})")
    elif node.op == "spike_linear":
        c, w = ins
        if c.dtype != "int32" or w.dtype != "int8":
            raise GraphError(f"{where}: needs int32 counts and int8 weight, got {c.dtype}, "
                             f"{w.dtype}")
        if isinstance(c.shape[-1], int) and c.shape[-1] != w.shape[1]:
            raise GraphError(f"{where}: counts have {c.shape[-1]} channels, weight expects "
                             f"{w.shape[1]}")
    elif OPS[node.op].category == "elementwise" and len(ins) == 2 and all(ins):
        a, b = ins
        if _static(a.shape) and _static(b.shape):
            try:
                np.broadcast_shapes(tuple(a.shape), tuple(b.shape))
            except ValueError:
                raise GraphError(f"{where}: shapes {list(a.shape)} and {list(b.shape)} do not "
                                 "broadcast") from None
