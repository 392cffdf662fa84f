"""The Triton program: the kernel plan of a spiking graph and its packed weights.

Serialised as two artifact members: ``triton/plan.json`` (format, the spiked layers and their
encoders, dispatch settings) and ``triton/weights.safetensors`` (per layer: W^T int8 [K, N],
input-major, for the event GEMV; the group scales float32 [G, N]). The K-major int8 weight the
tensor-core GEMM reads is the graph's own ``spike_linear`` weight [N, K], so it is not stored
twice; a program is therefore loaded together with its graph.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from sbcompile.errors import ArtifactError
from sbcompile.ir.graph import Graph

FORMAT = "sbcompile-triton/1"
PLAN_MEMBER = "triton/plan.json"
WEIGHTS_MEMBER = "triton/weights.safetensors"


@dataclass
class EncodeStep:
    """A ``spike_encode`` whose counts feed fast layers."""
    node: str
    channels: int  # inputs of the layers it feeds (the counts' last axis)
    unit: int  # channels per event-list block pointer (divides every consumer's block)
    event_max_rows: int  # at most this many count rows take the event GEMV (0: none)
    density: float | None = None  # the count density the dispatch was planned for


@dataclass
class LinearStep:
    """A ``spike_linear`` on fast counts, with the ``spike_decode`` fused into it, if any."""
    node: str
    decode: str | None
    weight: str  # graph parameter: int8 [N, K], K-major
    wt: str  # program tensor: int8 [K, N], input-major
    scale: str | None  # program tensor: float32 [G, N]
    bias: str | None  # graph parameter: float32 [N]
    group_size: int | None
    gemm: bool  # K and the group are multiples of 32: the int8 GEMM can take it
    dense: bool = False  # the dense-count GEMV can take it (one group, or power-of-two groups)
    weights: int = 0  # N * K: small layers take the fused dense-count GEMV, others the GEMM


@dataclass
class TritonProgram:
    graph: Graph
    encodes: dict[str, EncodeStep] = field(default_factory=dict)  # by spike_encode node name
    linears: dict[str, LinearStep] = field(default_factory=dict)  # by spike_linear node name
    tensors: dict[str, np.ndarray] = field(default_factory=dict)
    device_cache: dict = field(default_factory=dict, repr=False)

    def to_members(self) -> dict[str, bytes]:
        plan = {"format": FORMAT, "graph": self.graph.name,
                "encodes": [asdict(e) for e in self.encodes.values()],
                "linears": [asdict(s) for s in self.linears.values()]}
        return {PLAN_MEMBER: json.dumps(plan, indent=1, sort_keys=True).encode(),
                WEIGHTS_MEMBER: st_save({k: np.ascontiguousarray(v)
                                         for k, v in self.tensors.items()})}

    @classmethod
    def from_members(cls, members: dict[str, bytes], graph: Graph) -> "TritonProgram":
        for name in (PLAN_MEMBER, WEIGHTS_MEMBER):
            if name not in members:
                raise ArtifactError(f"the artifact has no Triton program (member '{name}')")
        try:
            plan = json.loads(members[PLAN_MEMBER])
            tensors = st_load(members[WEIGHTS_MEMBER])
            if plan.get("format") != FORMAT:
                raise ArtifactError(f"Triton program format {plan.get('format')!r} is not "
                                    f"{FORMAT!r}")
            encodes = {e["node"]: EncodeStep(**e) for e in plan["encodes"]}
            linears = {s["node"]: LinearStep(**s) for s in plan["linears"]}
        except ArtifactError:
            raise
        except (ValueError, KeyError, TypeError) as e:
            raise ArtifactError(f"malformed Triton program ({e})") from None
        names = {n.name for n in graph.nodes}
        for node in [*encodes, *linears]:
            if node not in names:
                raise ArtifactError(f"the Triton program names node '{node}' that the graph "
                                    "does not have")
        return cls(graph, encodes, linears, tensors)
