"""The Lava program: a serialisable plan (JSON) plus arrays, stored as artifact members
``lava/...``.

The plan is self-contained: graph inputs and outputs, value types, the spike encoders and their
synapse layers (connectivity as CSR arrays of exact int8 weights), the compute nodes (IR node JSON,
run by the reference kernels) and the Loihi 2 mapping. Arrays live in one safetensors member
under ``param/<graph param>`` and ``synapse/<layer>/<part>``; nothing is ever unpickled.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from sbcompile.errors import ArtifactError
from sbcompile.ir.graph import Graph, Value
from sbcompile.runtime.lava.connectivity import Csr

FORMAT = 1
PLAN_MEMBER = "lava/plan.json"
ARRAYS_MEMBER = "lava/arrays.safetensors"
_PLAN_KEYS = ("format", "name", "mode", "inputs", "outputs", "values", "encoders", "synapses",
              "compute", "mapping")


@dataclass
class LavaProgram:
    plan: dict
    arrays: dict[str, np.ndarray]

    @property
    def mode(self) -> str:
        return self.plan["mode"]

    def param(self, name: str) -> np.ndarray:
        return self.arrays[f"param/{name}"]

    def params(self) -> dict[str, np.ndarray]:
        return {k[len("param/"):]: v for k, v in self.arrays.items() if k.startswith("param/")}

    def synapse_matrix(self, layer: dict) -> Csr:
        base = f"synapse/{layer['name']}/"
        return Csr(layer["rows"], layer["cols"], self.arrays[base + "indptr"],
                   self.arrays[base + "indices"], self.arrays[base + "data"])

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
    def from_members(cls, members: dict[str, bytes]) -> "LavaProgram":
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
        needed = [f"synapse/{s['name']}/{part}" for s in plan["synapses"]
                  for part in ("indptr", "indices", "data")]
        needed += [f"param/{e['threshold']}" for e in plan["encoders"] if e["threshold"]]
        for key in needed:
            if key not in self.arrays:
                raise ArtifactError(f"Lava program array '{key}' is missing")
