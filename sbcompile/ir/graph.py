"""Graph, Node and Value: the IR's data structures and their JSON form.

Values carry a shape (ints, or strings for symbolic dimensions such as ``"batch"``) and a numpy
dtype name. Parameters are numpy arrays keyed by value name. networkx is used for ordering and
cycle detection only; the graph itself is stored as plain lists and dicts.
"""
from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import numpy as np

from sbcompile.errors import GraphError
from sbcompile.ir.ops import output_dtypes
from sbcompile.ir.shapes import constant_values, infer_node

Dim = int | str
DTYPES = ("float32", "float64", "float16", "int64", "int32", "int16", "int8", "uint8", "bool")


def unique_name(base: str, taken: set[str]) -> str:
    """``base``, or ``base_1``, ``base_2``, ... whichever is first not in ``taken``; the name
    returned joins ``taken``. The one naming rule of every pass, frontend and exporter."""
    name = base
    for i in itertools.count(1):
        if name not in taken:
            taken.add(name)
            return name
        name = f"{base}_{i}"
    raise AssertionError("unreachable")


@dataclass
class Value:
    name: str
    shape: tuple[Dim, ...]
    dtype: str

    def to_json(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_json(cls, d: dict) -> "Value":
        return cls(d["name"], tuple(d["shape"]), d["dtype"])

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) for d in self.shape)


@dataclass
class Node:
    name: str
    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"name": self.name, "op": self.op, "inputs": list(self.inputs),
                "outputs": list(self.outputs), "attrs": self.attrs}

    @classmethod
    def from_json(cls, d: dict) -> "Node":
        return cls(d["name"], d["op"], list(d["inputs"]), list(d["outputs"]), dict(d["attrs"]))


@dataclass
class Graph:
    """A dataflow graph. ``inputs`` are runtime inputs; ``params`` hold every constant tensor."""

    name: str
    inputs: list[str]
    outputs: list[str]
    values: dict[str, Value]
    nodes: list[Node]
    params: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    # ---- queries -------------------------------------------------------------------------
    def producers(self) -> dict[str, Node]:
        return {out: n for n in self.nodes for out in n.outputs}

    def uses(self) -> dict[str, list[tuple[Node, int]]]:
        """Use-lists: value -> (node, input slot) for every slot that reads it, in node order
        (a node reading a value twice, as ``mul(d, d)``, appears with both slots). Built from the
        nodes on each call, so it is current after any edit."""
        result: dict[str, list[tuple[Node, int]]] = {}
        for n in self.nodes:
            for slot, i in enumerate(n.inputs):
                if i:
                    result.setdefault(i, []).append((n, slot))
        return result

    def consumers(self) -> dict[str, list[Node]]:
        """value -> the nodes that read it, each once."""
        return {value: list({id(n): n for n, _ in uses}.values())
                for value, uses in self.uses().items()}

    def replace_uses(self, old: str, new: str, only: list[Node] | None = None) -> None:
        """Make every slot reading ``old`` (of the nodes ``only``, when given) read ``new``."""
        for node, slot in self.uses().get(old, []):
            if only is None or any(node is n for n in only):
                node.inputs[slot] = new

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def to_networkx(self) -> nx.DiGraph:
        """Nodes of the DiGraph are node names; an edge per produced->consumed value."""
        g = nx.DiGraph()
        prod = self.producers()
        for n in self.nodes:
            g.add_node(n.name)
            for i in n.inputs:
                if i in prod:
                    g.add_edge(prod[i].name, n.name, value=i)
        return g

    def toposort(self) -> None:
        """Order ``nodes`` so every node follows its producers (stable: keeps the given order
        where it is already valid). Raises GraphError naming a node on a cycle."""
        g = self.to_networkx()
        try:
            rank = {name: i for i, name in enumerate(self._stable_order(g))}
        except nx.NetworkXUnfeasible:
            cycle = nx.find_cycle(g)
            raise GraphError(f"graph has a cycle through node '{cycle[0][0]}'") from None
        self.nodes.sort(key=lambda n: rank[n.name])

    def _stable_order(self, g: nx.DiGraph) -> list[str]:
        position = {n.name: i for i, n in enumerate(self.nodes)}
        return list(nx.lexicographical_topological_sort(g, key=lambda name: position[name]))

    # ---- edits ---------------------------------------------------------------------------
    def fresh_name(self, base: str) -> str:
        return unique_name(base, set(self.values) | {n.name for n in self.nodes} | set(self.params))

    def add_param(self, base: str, array: np.ndarray) -> str:
        name = self.fresh_name(base)
        array = np.asarray(array, order="C")  # ascontiguousarray makes 0-d arrays 1-d
        self.params[name] = array
        self.values[name] = Value(name, tuple(array.shape), array.dtype.name)
        return name

    def add_value(self, base: str, shape: tuple[Dim, ...], dtype: str) -> str:
        name = self.fresh_name(base)
        self.values[name] = Value(name, tuple(shape), dtype)
        return name

    def add_node(self, op: str, inputs: list[str], outputs: list[str], name: str, *,
                 at: int | None = None, **attrs) -> list[str]:
        """The IR's one node builder: add a node of ``op`` reading ``inputs`` (appended, or
        inserted at position ``at``) and return its output values, created under fresh names
        from ``outputs`` with the shapes and dtypes the op's rules give (``ir.shapes``,
        ``ops.output_dtypes``); the node's own name is fresh from ``name``."""
        node = Node(name, op, list(inputs), list(outputs), attrs)
        shapes = [tuple(self.values[i].shape) if i else None for i in node.inputs]
        known = constant_values({i: self.params[i] for i in node.inputs if i in self.params})
        out_shapes = infer_node(node, shapes, [known.get(i) if i else None for i in node.inputs])
        out_dtypes = output_dtypes(node, [self.values[i].dtype if i else None
                                          for i in node.inputs])
        if any(shape is None for shape in out_shapes):
            raise GraphError(f"node '{node.name}' ({op}): its output shapes do not follow from "
                             "its inputs")
        node.outputs = [self.add_value(base, shape, dtype)
                        for base, shape, dtype in zip(outputs, out_shapes, out_dtypes)]
        node.name = self.fresh_name(name)
        self.nodes.insert(len(self.nodes) if at is None else at, node)
        return node.outputs

    def remove_unused(self) -> None:
        """Drop nodes whose outputs reach no graph output, then values and params nobody uses."""
        needed = set(self.outputs)
        keep: list[Node] = []
        for n in reversed(self.nodes):
            if any(o in needed for o in n.outputs):
                keep.append(n)
                needed.update(i for i in n.inputs if i)
        self.nodes = keep[::-1]
        live = needed | set(self.inputs) | {o for n in self.nodes for o in n.outputs}
        self.values = {k: v for k, v in self.values.items() if k in live}
        self.params = {k: v for k, v in self.params.items() if k in live}

    def copy(self) -> "Graph":
        """A deep copy of structure; parameter arrays are shared (passes replace, never mutate)."""
        return Graph(self.name, list(self.inputs), list(self.outputs),
                     {k: copy.copy(v) for k, v in self.values.items()},
                     [Node(n.name, n.op, list(n.inputs), list(n.outputs), copy.deepcopy(n.attrs))
                      for n in self.nodes],
                     dict(self.params), copy.deepcopy(self.meta))

    # ---- serialisation -------------------------------------------------------------------
    def to_json(self) -> dict:
        return {"name": self.name, "inputs": self.inputs, "outputs": self.outputs,
                "values": [v.to_json() for v in self.values.values()],
                "nodes": [n.to_json() for n in self.nodes],
                "params": sorted(self.params), "meta": self.meta}

    @classmethod
    def from_json(cls, d: dict, params: dict[str, np.ndarray]) -> "Graph":
        missing = set(d["params"]) - set(params)
        if missing:
            raise GraphError(f"parameter '{sorted(missing)[0]}' is missing from the tensors")
        values = {v["name"]: Value.from_json(v) for v in d["values"]}
        return cls(d["name"], list(d["inputs"]), list(d["outputs"]), values,
                   [Node.from_json(n) for n in d["nodes"]],
                   {k: params[k] for k in d["params"]}, d.get("meta", {}))

    def param_count(self) -> int:
        return int(sum(p.size for p in self.params.values()))
