"""The numpy reference interpreter: it defines the semantics of every IR op (docs/OPS.md).

Kernels live in ``reference_float`` (float and shape ops) and ``reference_spike`` (spiking ops);
each is ``kernel(attrs, *inputs) -> output or tuple of outputs`` where ``attrs`` already holds the
op's defaults. Values are freed after their last use, so memory follows the live set.
"""
from __future__ import annotations

from typing import Callable, Iterable

import numpy as np

from sbcompile.errors import SbcError
from sbcompile.ir.graph import Graph, Node
from sbcompile.ir.ops import node_attrs
from sbcompile.runtime.reference_float import FLOAT_KERNELS
from sbcompile.runtime.reference_spike import SPIKE_KERNELS

KERNELS: dict[str, Callable] = {**FLOAT_KERNELS, **SPIKE_KERNELS}


def check_feeds(graph: Graph, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Match feeds to graph inputs by name, shape (static dims) and dtype kind; cast to the
    input's dtype. Raises SbcError naming the input at fault."""
    extra = [n for n in feeds if n not in graph.inputs]
    if extra:
        raise SbcError(f"'{extra[0]}' is not an input of the model (its inputs: "
                       f"{', '.join(graph.inputs)})")
    missing = [n for n in graph.inputs if n not in feeds]
    if missing:
        raise SbcError(f"input '{missing[0]}' is missing (the model's inputs: "
                       f"{', '.join(graph.inputs)})")
    checked = {}
    for name in graph.inputs:
        v = graph.values[name]
        arr = np.asarray(feeds[name])
        if arr.ndim != len(v.shape) or any(isinstance(d, int) and d != s
                                           for d, s in zip(v.shape, arr.shape)):
            raise SbcError(f"input '{name}' has shape {list(arr.shape)}, the model expects "
                           f"{list(v.shape)}")
        want = np.dtype(v.dtype)
        if arr.dtype != want and not np.can_cast(arr.dtype, want, casting="same_kind"):
            raise SbcError(f"input '{name}' has dtype {arr.dtype}, the model expects {want}")
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            raise SbcError(f"input '{name}' contains NaN or Inf")
        checked[name] = arr.astype(want, copy=False)
    return checked


def evaluate(graph: Graph, feeds: dict[str, np.ndarray],
             keep: Iterable[str] = ()) -> dict[str, np.ndarray]:
    """Run the graph; return the graph outputs plus every value named in ``keep``."""
    env: dict[str, np.ndarray] = dict(graph.params)
    env.update(check_feeds(graph, feeds))
    wanted = set(graph.outputs) | set(keep)
    last_use = _last_uses(graph.nodes)
    result = {k: env[k] for k in wanted if k in env}
    for idx, node in enumerate(graph.nodes):
        kernel = KERNELS.get(node.op)
        if kernel is None:
            raise SbcError(f"node '{node.name}': op '{node.op}' has no reference kernel")
        args = [env[i] if i else None for i in node.inputs]
        out = kernel(node_attrs(node), *args)
        outs = out if isinstance(out, tuple) else (out,)
        for name, arr in zip(node.outputs, outs):
            env[name] = arr
            if name in wanted:
                result[name] = arr
        for name in last_use.get(idx, ()):
            if name not in graph.params:
                env.pop(name, None)
    return result


def run(graph: Graph, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The graph outputs, in graph order."""
    env = evaluate(graph, feeds)
    return {k: env[k] for k in graph.outputs}


def _last_uses(nodes: list[Node]) -> dict[int, list[str]]:
    last: dict[str, int] = {}
    for idx, n in enumerate(nodes):
        for i in n.inputs:
            if i:
                last[i] = idx
    by_node: dict[int, list[str]] = {}
    for name, idx in last.items():
        by_node.setdefault(idx, []).append(name)
    return by_node
