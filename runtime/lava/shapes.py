"""Concrete shapes of every value of a Lava program for given inputs.

Port sizes must be fixed before the simulation starts, but the IR may leave dims symbolic or
unknown (``batch``, ``Min(16, sequence)``, ``unk__0``). Shapes are therefore propagated through
the program on zero-filled inputs of the feeds' shapes: compute nodes run their reference kernel
(shape semantics are data-independent in the IR's op set), encoders keep their input's shape and
synapse layers produce [leading dims..., per-token acc shape]. Only shapes are kept.
"""
from __future__ import annotations

import numpy as np

from sbcompile.errors import SbcError
from sbcompile.ir.graph import Node
from sbcompile.runtime.reference import KERNELS, node_attrs


def infer_shapes(plan: dict, params: dict[str, np.ndarray],
                 feeds: dict[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
    env = {name: np.zeros(np.shape(feeds[name]), dtype=plan["values"][name][1])
           for name in plan["inputs"]}
    pending = [("node", n) for n in plan["compute"]] + [("encoder", e) for e in
                                                         plan["encoders"]]
    pending += [("synapse", s) for s in plan["synapses"]]
    with np.errstate(all="ignore"):
        while pending:
            ready = [(kind, item) for kind, item in pending if _ready(kind, item, env, params)]
            if not ready:
                raise SbcError("the Lava program reads a value that nothing produces")
            for kind, item in ready:
                _propagate(kind, item, env, params)
                pending.remove((kind, item))
    return {name: tuple(int(d) for d in np.shape(env[name])) for name in plan["values"]
            if name in env}


def _inputs(kind: str, item: dict) -> list[str]:
    if kind == "node":
        return [i for i in item["inputs"] if i]
    return [item["x"]] if kind == "encoder" else [item["counts"]]


def _ready(kind: str, item: dict, env: dict, params: dict) -> bool:
    return all(i in env or i in params for i in _inputs(kind, item))


def _propagate(kind: str, item: dict, env: dict, params: dict) -> None:
    if kind == "synapse":
        counts = env[item["counts"]]
        lead = counts.shape[:-1] if item["op"] == "spike_linear" else counts.shape[:1]
        env[item["acc"]] = np.zeros(lead + tuple(item["token_shape"]), dtype=np.int32)
        return
    node = Node.from_json(item if kind == "node" else item["node"])
    args = [(env[i] if i in env else params[i]) if i else None for i in node.inputs]
    out = KERNELS[node.op](node_attrs(node), *args)
    env.update(zip(node.outputs, out if isinstance(out, tuple) else (out,)))
