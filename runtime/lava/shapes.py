"""Concrete shapes of every value of a Lava program for given inputs.

Port sizes must be fixed before the simulation starts, but the IR may leave dims symbolic or
unknown (``batch``, ``Min(16, sequence)``, ``unk__0``). The op table's shape rules
(``sbcompile.ir.shapes``) give them from the feeds' shapes: compute nodes and encoders by their
op's rule, synapse layers as [leading dims..., per-token acc shape]. Small integer tensors
computed from shapes (``shape -> gather -> concat -> reshape``) are evaluated with the reference
kernels on their real (constant) values, so that the shapes they carry resolve.
"""
from __future__ import annotations

import numpy as np

from sbcompile.errors import SbcError
from sbcompile.ir.graph import Node
from sbcompile.ir.ops import node_attrs
from sbcompile.ir.shapes import constant_values, known, propagate
from sbcompile.runtime.reference import KERNELS


def infer_shapes(plan: dict, params: dict[str, np.ndarray],
                 feeds: dict[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
    shapes = {name: tuple(p.shape) for name, p in params.items()}
    shapes.update({name: tuple(np.shape(feeds[name])) for name in plan["inputs"]})
    values = constant_values(params)
    pending = [Node.from_json(n) for n in plan["compute"]]
    pending += [Node.from_json(e["node"]) for e in plan["encoders"]]
    synapses = list(plan["synapses"])
    while pending or synapses:
        ready = [n for n in pending if all(i in shapes for i in n.inputs if i)]
        linked = [s for s in synapses if s["counts"] in shapes]
        if not ready and not linked:
            raise SbcError("the Lava program reads a value that nothing produces")
        for node in ready:
            propagate(node, shapes, values, _evaluate)
            pending.remove(node)
        for s in linked:
            counts = shapes[s["counts"]]
            lead = counts[:-1] if s["op"] == "spike_linear" else counts[:1]
            shapes[s["acc"]] = tuple(lead) + tuple(s["token_shape"])
            synapses.remove(s)
    result = {}
    for name in plan["values"]:
        if name in shapes:
            shape = shapes[name]
            if shape is None or not all(known(d) for d in shape):
                raise SbcError(f"the shape of value '{name}' does not follow from the inputs' "
                               f"shapes (got {shape})")
            result[name] = tuple(int(d) for d in shape)
    return result


def _evaluate(node: Node, args: list):
    return KERNELS[node.op](node_attrs(node), *args)
