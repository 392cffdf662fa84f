"""Structural and type checks of an IR graph. Every error names the node or value at fault."""
from __future__ import annotations

import numpy as np

from sbcompile.errors import GraphError
from sbcompile.ir.graph import DTYPES, Graph, Node
from sbcompile.ir.ops import INTEGER_OPERANDS, OPS, output_dtypes
from sbcompile.ir.shapes import agree, constant_values, infer_node


def validate(graph: Graph) -> None:
    """Raise GraphError on the first problem: unknown ops or attributes, wrong arity, dangling or
    doubly-produced values, cycles, parameters that disagree with their value or are not finite,
    and outputs whose shapes or dtypes differ from what their op's rules give (``ir.shapes``,
    ``ops.output_dtypes``)."""
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
    _check_shapes(graph)


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


def _check_shapes(graph: Graph) -> None:
    """Infer and compare: each node's outputs must have the shapes and dtypes its op's rules give
    for the declared inputs (dims compared where both are ints), and the spike ops' integer
    operands their dtypes."""
    values = constant_values(graph.params)
    for node in graph.nodes:
        ins = [tuple(graph.values[i].shape) if i else None for i in node.inputs]
        args = [values.get(i) if i else None for i in node.inputs]
        for name, got in zip(node.outputs, infer_node(node, ins, args)):
            declared = graph.values[name].shape
            if not agree(declared, got):
                raise GraphError(f"node '{node.name}' ({node.op}): output '{name}' is declared "
                                 f"{list(declared)} but its inputs give {list(got)}")
        in_dtypes = [graph.values[i].dtype if i else None for i in node.inputs]
        for name, want in zip(node.outputs, output_dtypes(node, in_dtypes)):
            if graph.values[name].dtype != want:
                raise GraphError(f"node '{node.name}' ({node.op}): output '{name}' is declared "
                                 f"{graph.values[name].dtype} but its op gives {want}")
        for slot, want in INTEGER_OPERANDS.get(node.op, {}).items():
            got = graph.values[node.inputs[slot]].dtype
            if got != want:
                raise GraphError(f"node '{node.name}' ({node.op}): its operand "
                                 f"{OPS[node.op].inputs[slot]} '{node.inputs[slot]}' must be "
                                 f"{want}, got {got}")
