"""The Lava program: a serialisable plan (JSON) plus arrays, stored as artifact members
``lava/...``.

The plan is self-contained: graph inputs and outputs, value types, the spike encoders and their
synapse layers (the int8 weight parameter, the node's attributes and its fan-in split), the
compute nodes (IR node JSON, run by the reference kernels) and the Loihi 2 mapping. Arrays are
the graph parameters the program reads, in one safetensors member under ``param/<name>``: a
synapse layer is its int8 weight and its geometry, never an expanded matrix, so a program costs
no more than the weights. Nothing is ever unpickled.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from sbcompile.errors import ArtifactError
from sbcompile.ir.graph import Graph, Value
from sbcompile.runtime.lava.connectivity import Geometry, layer_geometry

FORMAT = 1
PLAN_MEMBER = "lava/plan.json"
ARRAYS_MEMBER = "lava/arrays.safetensors"
_PLAN_KEYS = ("format", "name", "mode", "inputs", "outputs", "values", "encoders", "synapses",
              "compute", "mapping")


@dataclass
class LavaProgram:
    plan: dict
    arrays: dict[str, np.ndarray]
    _geometries: dict[str, Geometry] = field(default_factory=dict, repr=False, compare=False)

    @property
    def mode(self) -> str:
        return self.plan["mode"]

    def param(self, name: str) -> np.ndarray:
        return self.arrays[f"param/{name}"]

    def params(self) -> dict[str, np.ndarray]:
        return {k[len("param/"):]: v for k, v in self.arrays.items() if k.startswith("param/")}

    def geometry(self, layer: dict) -> Geometry:
        """The layer's synapse geometry (weight shape, input and output shapes, strides...)."""
        name = layer["name"]
        if name not in self._geometries:
            self._geometries[name] = layer_geometry(layer["op"], self.param(layer["weight"]).shape,
                                                    layer["attrs"], tuple(layer["in_shape"]))
        return self._geometries[name]

    def interface(self) -> Graph:
        """A node-less graph with the program's inputs, outputs and value types (for checking
        feeds with the reference interpreter's rules)."""
        values = {k: Value(k, tuple(shape), dtype) for k, (shape, dtype) in
                  self.plan["values"].items()}
        return Graph(self.plan["name"], list(self.plan["inputs"]), list(self.plan["outputs"]),
                     values, [])

    # ---- artifact members -----------------------------------------------------------------
    def to_members(self) -> dict[str, bytes]:
        arrays = {k: np.array(v, order="C") for k, v in self.arrays.items()}  # keeps 0-d shapes
        return {PLAN_MEMBER: json.dumps(self.plan, sort_keys=True, allow_nan=False).encode(),
                ARRAYS_MEMBER: st_save(arrays)}

    @classmethod
    def from_members(cls, members: dict[str, bytes], graph: Graph | None = None) -> "LavaProgram":
        """The program stored in artifact members (its plan is self-contained: ``graph`` is not
        needed, and taken for the shape every target program loads in)."""
        for name in (PLAN_MEMBER, ARRAYS_MEMBER):
            if name not in members:
                raise ArtifactError(f"Lava program member '{name}' is missing")
        try:
            plan = json.loads(members[PLAN_MEMBER])
            arrays = st_load(members[ARRAYS_MEMBER])
        except Exception as e:  # malformed bytes behind a valid checksum
            raise ArtifactError(f"Lava program is malformed ({e})") from None
        program = cls(plan, arrays)
        program.check()
        return program

    def check(self) -> None:
        """Raise ArtifactError if the plan lacks a key or refers to a missing array."""
        plan = self.plan
        if not isinstance(plan, dict) or any(k not in plan for k in _PLAN_KEYS):
            missing = [k for k in _PLAN_KEYS if not isinstance(plan, dict) or k not in plan]
            raise ArtifactError(f"Lava program plan lacks '{missing[0]}'")
        if plan["format"] != FORMAT:
            raise ArtifactError(f"Lava program format {plan['format']} is not {FORMAT}")
        needed = [f"param/{s['weight']}" for s in plan["synapses"]]
        needed += [f"param/{e['threshold']}" for e in plan["encoders"] if e["threshold"]]
        for key in needed:
            if key not in self.arrays:
                raise ArtifactError(f"Lava program array '{key}' is missing")
