"""Where a model's inputs hold their samples: the batch axis of every graph input, read from the
model's symbolic dims (the `.npz` contract of the CLI and of calibration data).

The batch dim is the symbolic dim that most inputs share (ties: one whose name says "batch",
else the one on axis 0 of the first input that has a symbolic axis 0). An input batches on the axis where it holds that dim (a
recurrent state [layers, batch, hidden] batches on axis 1); an input whose axis 0 is symbolic
under another name batches on axis 0 (exporters such as tf2onnx name each input's batch dim
apart); any other input (a scalar sample rate, a fixed table) has no batch axis and is given
once, for every sample. A model without symbolic dims has no batch axes here (its static batch,
if any, is the calibration set's business).
"""
from __future__ import annotations

from collections import Counter

import numpy as np

from sbcompile.errors import SbcError
from sbcompile.ir.graph import Graph


def batch_dim(shapes: dict[str, tuple]) -> str | None:
    """The batch dim of inputs of these shapes ({name: dims}, symbolic dims as strings), or
    None when no dim is symbolic."""
    symbolic = {n: [d for d in s if isinstance(d, str)] for n, s in shapes.items()}
    shared = Counter(d for dims in symbolic.values() for d in set(dims))
    if not shared:
        return None
    first_axis0 = next((s[0] for s in shapes.values() if s and isinstance(s[0], str)), None)
    top = max(shared.values())
    tied = [d for d, c in shared.items() if c == top]
    named = [d for d in tied if "batch" in d.lower()]
    return named[0] if named else first_axis0 if first_axis0 in tied else tied[0]


def batch_axes(graph: Graph) -> dict[str, int | None]:
    """{input name: its batch axis, or None when given once}; empty when no input has a
    symbolic dim."""
    shapes = {n: graph.values[n].shape for n in graph.inputs}
    dim = batch_dim(shapes)
    if dim is None:
        return {}
    axes: dict[str, int | None] = {}
    for name, shape in shapes.items():
        if dim in shape:
            axes[name] = list(shape).index(dim)
        elif shape and isinstance(shape[0], str):
            axes[name] = 0
        else:
            axes[name] = None
    return axes


def sample_count(graph: Graph, data: dict[str, np.ndarray], axes: dict[str, int | None],
                 what: str = "calibration input") -> int:
    """The number of samples ``data`` holds on its inputs' batch axes (they must agree); an
    input without a batch axis must be given once (its rank as the model declares)."""
    counts: dict[str, int] = {}
    for name, arr in data.items():
        if name not in axes:
            continue  # not an input: check_feeds names it
        shape, declared = np.shape(arr), graph.values[name].shape
        axis = axes[name]
        if axis is None:
            if len(shape) != len(declared):
                raise SbcError(f"{what} '{name}' has shape {list(shape)}; the model declares "
                               f"{list(declared)} with no batch axis: give it once, as the model "
                               "takes it (it is the same for every sample)")
            continue
        if len(shape) != len(declared):
            raise SbcError(f"{what} '{name}' has shape {list(shape)}; the model declares "
                           f"{list(declared)} (samples on axis {axis}, '{declared[axis]}')")
        counts[name] = shape[axis]
    if not counts:
        raise SbcError(f"no {what} has a batch axis: the model's inputs "
                       f"({', '.join(graph.inputs)}) declare no symbolic batch dim")
    if len(set(counts.values())) > 1:
        first, *rest = counts.items()
        other = next((n, c) for n, c in rest if c != first[1])
        raise SbcError(f"{what} '{other[0]}' holds {other[1]} samples on its batch axis "
                       f"{axes[other[0]]}, '{first[0]}' holds {first[1]} on axis "
                       f"{axes[first[0]]} (batch axes follow the model's symbolic dims)")
    n = next(iter(counts.values()))
    if n == 0:
        name = next(iter(counts))
        raise SbcError(f"{what} '{name}' holds no samples (its batch axis {axes[name]} is empty)")
    return n


def take(data: dict[str, np.ndarray], axes: dict[str, int | None], start: int,
         stop: int) -> dict[str, np.ndarray]:
    """Samples ``start:stop`` of every batched input; inputs given once as they are."""
    out = {}
    for name, arr in data.items():
        axis = axes.get(name)
        if axis is None:
            out[name] = arr
        else:
            index = [slice(None)] * np.ndim(arr)
            index[axis] = slice(start, stop)
            out[name] = np.asarray(arr)[tuple(index)]
    return out


def input_samples(graph: Graph, feeds: dict[str, np.ndarray]) -> int:
    """The samples ``feeds`` hold (1 for a model without symbolic batch dims, or a first input
    without axes)."""
    axes = batch_axes(graph)
    if axes:
        return sample_count(graph, feeds, axes, "input")
    first = np.asarray(next(iter(feeds.values())))
    return first.shape[0] if first.ndim else 1
