"""The numpy reference interpreter: it defines the semantics of every IR op (docs/OPS.md).

Kernels live in ``reference_float`` (float and shape ops) and ``reference_spike`` (spiking ops);
each is ``kernel(attrs, *inputs) -> output or tuple of outputs`` where ``attrs`` already holds the
op's defaults. Values are freed after their last use, so memory follows the live set.
"""
from __future__ import annotations

from typing import Callable, Iterable, Iterator

import numpy as np

from sbcompile.errors import SbcError
from sbcompile.ir.graph import Graph, Node
from sbcompile.ir.ops import node_attrs
from sbcompile.runtime.reference_float import FLOAT_KERNELS
from sbcompile.runtime.reference_spike import SPIKE_KERNELS

KERNELS: dict[str, Callable] = {**FLOAT_KERNELS, **SPIKE_KERNELS}


def guarded_feeds(graph: Graph, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``feeds`` without the inputs the compile fixed to their calibration value
    (``graph.meta['input_guards']``, a sample rate that chose a branch); another value is
    refused naming the input."""
    guards = graph.meta.get("input_guards", {})
    for name, guard in guards.items():
        if name in feeds and not np.array_equal(np.asarray(feeds[name]), guard["value"]):
            raise SbcError(f"input '{name}' is {np.asarray(feeds[name]).tolist()}; the model was "
                           f"compiled for {name} = {guard['value']} (its value in the calibration "
                           "data chose the branch the model runs): compile with data of this "
                           "value")
    return {k: v for k, v in feeds.items() if k not in guards}


def check_feeds(graph: Graph, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Match feeds to graph inputs by name, shape (static dims) and dtype kind; cast to the
    input's dtype. Raises SbcError naming the input at fault."""
    feeds = guarded_feeds(graph, feeds)
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
        checked[name] = _cast_checked(name, arr, want)
    return checked


def _cast_checked(name: str, arr: np.ndarray, want: np.dtype) -> np.ndarray:
    """``arr`` as ``want``, refusing values the cast would change: NaN or Inf, floats beyond
    the target's range (1e300 becomes inf in float32), integers that would wrap."""
    if want.kind in "iub" and arr.dtype.kind in "iu" and arr.dtype != want:
        info = np.iinfo(want) if want.kind != "b" else None
        if info is not None and (arr.min() < info.min or arr.max() > info.max):
            raise SbcError(f"input '{name}' holds integers outside {want} "
                           f"[{info.min}, {info.max}]")
    with np.errstate(over="ignore", invalid="ignore"):
        cast = arr.astype(want, copy=False)
    if cast.dtype.kind == "f" and not np.all(np.isfinite(cast)):
        where = "contains NaN or Inf" if not np.all(np.isfinite(arr)) else \
            f"holds values beyond the range of {want} (they would become Inf)"
        raise SbcError(f"input '{name}' {where}")
    return cast


def range_error(node: Node, e: OverflowError) -> SbcError:
    """The error for an integer accumulator past int32 (inputs far beyond the thresholds)."""
    return SbcError(f"node '{node.name}' ({node.op}): {e} (the inputs are beyond the range this "
                    "compiled model can represent)")


def evaluate(graph: Graph, feeds: dict[str, np.ndarray],
             keep: Iterable[str] = ()) -> dict[str, np.ndarray]:
    """Run the graph; return the graph outputs plus every value named in ``keep``."""
    wanted = set(graph.outputs) | set(keep)
    result = {k: graph.params[k] for k in wanted if k in graph.params}
    for name, arr in values(graph, feeds):
        if name in wanted:
            result[name] = arr
    return result


def values(graph: Graph, feeds: dict[str, np.ndarray],
           only: Iterable[str] | None = None) -> Iterator[tuple[str, np.ndarray]]:
    """Run the graph lazily: yield (name, array) for each input, then for each node's outputs as
    the node runs (with ``only``: just those values, and no node runs after the last of them).
    The interpreter drops a value once its last consumer has run (one no node reads, right after
    it is yielded), so a caller that keeps only what it needs runs in the live set's memory."""
    env: dict[str, np.ndarray] = dict(graph.params)
    checked = check_feeds(graph, feeds)
    env.update(checked)
    last_use = _last_uses(graph.nodes)
    read = {i for n in graph.nodes for i in n.inputs if i}
    left = None if only is None else set(only)
    start = checked if left is None else \
        {k: env[k] for k in left if k in env}  # inputs, and parameters asked for
    yield from start.items()
    if left is not None:
        left -= set(start)
    for idx, node in enumerate(graph.nodes):
        if left is not None and not left:
            return
        kernel = KERNELS.get(node.op)
        if kernel is None:
            raise SbcError(f"node '{node.name}': op '{node.op}' has no reference kernel")
        args = [env[i] if i else None for i in node.inputs]
        try:
            out = kernel(node_attrs(node), *args)
        except OverflowError as e:
            raise range_error(node, e) from None
        except (ValueError, IndexError, ZeroDivisionError) as e:  # attributes validate() passed
            raise SbcError(f"node '{node.name}' ({node.op}) cannot be evaluated with its "
                           f"attributes ({type(e).__name__}: {e})") from None
        outs = out if isinstance(out, tuple) else (out,)
        del args, out
        for name, arr in zip(node.outputs, outs):
            if name in read:
                env[name] = arr
            if left is None:
                yield name, arr
            elif name in left:
                left.discard(name)
                yield name, arr
        outs = arr = None  # nothing of this node stays alive here past its last consumer
        for name in last_use.get(idx, ()):
            if name not in graph.params:
                env.pop(name, None)


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
