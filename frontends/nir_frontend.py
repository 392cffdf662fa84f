"""NIR frontend: a NIR graph (``.nir``) -> a validated IR Graph, for the primitives sbcompile
supports: Input, Output, Affine, Linear, Scale, Conv2d, Flatten, SumPool2d, AvgPool2d, IF, LIF
and Threshold.

NIR shapes carry no batch axis; the IR graph adds a leading ``batch`` axis. Neurons are read as
one time step from rest (v = 0) with the step dt = ``STEP`` (the one snnTorch's NIR import uses):
an IF neuron holds v = r * I, a LIF neuron v = (dt / tau) * (v_leak + r * I), and both output 1.0
where v > v_threshold, else 0.0; a Threshold node outputs 1.0 where its input exceeds the
threshold. The inputs of a node with several incoming edges are summed, as NIR specifies.
"""
from __future__ import annotations

import math
from pathlib import Path

import networkx as nx
import nir
import numpy as np

from sbcompile.errors import SbcError, UnsupportedError
from sbcompile.ir.graph import Graph
from sbcompile.ir.validate import validate
from sbcompile.nir_time import STEP

BATCH = "batch"


class _Builder:
    def __init__(self, name: str):
        self.graph = Graph(name, [], [], {}, [])

    def param(self, base: str, array) -> str:
        return self.graph.add_param(base, np.asarray(array, dtype=np.float32)
                                    if np.asarray(array).dtype.kind == "f" else np.asarray(array))

    def node(self, op: str, inputs: list[str], base: str, **attrs) -> str:
        """A node of ``op`` and its output value, both named from ``base``; the output's shape
        and dtype are the op's rules' (``ir.shapes``)."""
        return self.graph.add_node(op, inputs, [base], base, **attrs)[0]


def _shape(types: dict, key: str) -> tuple:
    value = types.get(key)
    if value is None:
        raise UnsupportedError(f"the NIR graph leaves the shape of '{key}' unknown")
    return (BATCH,) + tuple(int(d) for d in np.asarray(value).reshape(-1))


def _pair(value) -> list[int]:
    arr = np.asarray(value).reshape(-1)
    return [int(arr[0])] * 2 if arr.size == 1 else [int(v) for v in arr]


def _spikes(b: _Builder, name: str, v: str, threshold) -> str:
    above = b.node("greater", [v, b.param(f"{name}.v_threshold", threshold)], f"{name}.fired")
    return b.node("cast", [above], name, to="float32")


def _affine(b, name, node, x, shape):
    inputs = [x, b.param(f"{name}.weight", node.weight)]
    if isinstance(node, nir.Affine):
        inputs.append(b.param(f"{name}.bias", node.bias))
    return b.node("linear", inputs, name)


def _scale(b, name, node, x, shape):
    return b.node("mul", [x, b.param(f"{name}.scale", node.scale)], name)


def _conv(b, name, node, x, shape):
    kernel = list(node.weight.shape[2:])
    dilation = _pair(node.dilation)
    if isinstance(node.padding, str):
        if node.padding == "same" and (_pair(node.stride) != [1, 1] or
                                       any(k % 2 == 0 for k in kernel)):
            raise UnsupportedError(f"node '{name}' (Conv2d): 'same' padding needs stride 1 and "
                                   "odd kernels")
        pad = [0, 0] if node.padding == "valid" else [(k - 1) * d // 2
                                                      for k, d in zip(kernel, dilation)]
    else:
        pad = _pair(node.padding)
    return b.node("conv", [x, b.param(f"{name}.weight", node.weight),
                           b.param(f"{name}.bias", node.bias)], name,
                  strides=_pair(node.stride), pads=pad + pad, dilations=dilation,
                  group=int(node.groups))


def _flatten(b, name, node, x, shape):
    dims = list(shape[1:])
    start, end = node.start_dim % len(dims), node.end_dim % len(dims)
    new = dims[:start] + [math.prod(dims[start:end + 1])] + dims[end + 1:]
    target = b.graph.add_param(f"{name}.shape", np.array([0] + new, np.int64))
    return b.node("reshape", [x, target], name)


def _pool(b, name, node, x, shape):
    kernel, stride, pad = _pair(node.kernel_size), _pair(node.stride), _pair(node.padding)
    y = b.node("avg_pool", [x], name if isinstance(node, nir.AvgPool2d) else f"{name}.mean",
               kernel=kernel, strides=stride, pads=pad + pad, count_include_pad=1)
    if isinstance(node, nir.AvgPool2d):
        return y
    return b.node("mul", [y, b.param(f"{name}.window", np.float32(math.prod(kernel)))], name)


def _if(b, name, node, x, shape):
    v = b.node("mul", [x, b.param(f"{name}.r", node.r)], f"{name}.v")
    return _spikes(b, name, v, node.v_threshold)


def _lif(b, name, node, x, shape):
    drive = b.node("mul", [x, b.param(f"{name}.r", node.r)], f"{name}.drive")
    drive = b.node("add", [drive, b.param(f"{name}.v_leak", node.v_leak)], f"{name}.drive")
    v = b.node("mul", [drive, b.param(f"{name}.dt_over_tau", STEP / np.asarray(node.tau))],
               f"{name}.v")
    return _spikes(b, name, v, node.v_threshold)


def _threshold(b, name, node, x, shape):
    return _spikes(b, name, x, node.threshold)


CONVERTERS = {nir.Affine: _affine, nir.Linear: _affine, nir.Scale: _scale, nir.Conv2d: _conv,
              nir.Flatten: _flatten, nir.SumPool2d: _pool, nir.AvgPool2d: _pool, nir.IF: _if,
              nir.LIF: _lif, nir.Threshold: _threshold}


def load_nir(path: str | Path) -> Graph:
    """The NIR file at ``path`` as a validated IR graph. Raises SbcError naming the file or the
    node sbcompile does not support."""
    path = Path(path)
    if not path.is_file():
        raise SbcError(f"{path}: no such file")
    try:
        graph = nir.read(path)
    except Exception as e:  # h5py and nir raise many kinds on a file that is not NIR
        raise SbcError(f"{path}: not a readable NIR file ({e})") from None
    order = nx.DiGraph(graph.edges)
    order.add_nodes_from(graph.nodes)
    if not nx.is_directed_acyclic_graph(order):
        raise UnsupportedError(f"{path}: recurrent NIR graphs are not supported")
    b = _Builder(path.stem)
    produced: dict[str, str] = {}
    for name in nx.lexicographical_topological_sort(order):
        node = graph.nodes[name]
        sources = [produced[p] for p in sorted(order.predecessors(name))]
        if isinstance(node, nir.Input):
            shape = _shape(node.input_type, "input")
            produced[name] = b.graph.add_value(name, shape, "float32")
            b.graph.inputs.append(produced[name])
            continue
        if not sources:
            raise UnsupportedError(f"{path}: node '{name}' ({type(node).__name__}) has no input")
        x = sources[0]
        shape = b.graph.values[x].shape
        for other in sources[1:]:
            x = b.node("add", [x, other], f"{name}.sum")
        if isinstance(node, nir.Output):
            produced[name] = x
            b.graph.outputs.append(x)
            continue
        convert = CONVERTERS.get(type(node))
        if convert is None:
            raise UnsupportedError(f"{path}: node '{name}' ({type(node).__name__}) is not a NIR "
                                   f"primitive sbcompile supports (supported: "
                                   f"{', '.join(c.__name__ for c in CONVERTERS)})")
        produced[name] = convert(b, name, node, x, shape)
    validate(b.graph)
    return b.graph
