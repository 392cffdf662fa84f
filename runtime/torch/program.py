"""The PyTorch program: what the torch target stores besides the graph, and the module built
from both.

One artifact member, ``torch/plan.json``: the format and, per spike encoder, the expected
fraction of nonzero counts the GPU dispatch plans with (event GEMV for few sparse rows, the
dense-count GEMV, the int8 GEMM). The module itself is built from the graph on load (no code is
stored or unpickled).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from sbcompile.errors import ArtifactError
from sbcompile.ir.graph import Graph

FORMAT = "sbcompile-torch/1"
PLAN_MEMBER = "torch/plan.json"


@dataclass
class TorchProgram:
    graph: Graph
    densities: dict[str, float] = field(default_factory=dict)  # counts value -> nonzero share

    def to_members(self) -> dict[str, bytes]:
        plan = {"format": FORMAT, "graph": self.graph.name, "densities": self.densities}
        return {PLAN_MEMBER: json.dumps(plan, indent=1, sort_keys=True).encode()}

    @classmethod
    def from_members(cls, members: dict[str, bytes], graph: Graph) -> "TorchProgram":
        if PLAN_MEMBER not in members:
            raise ArtifactError(f"the artifact has no torch program (member '{PLAN_MEMBER}')")
        try:
            plan = json.loads(members[PLAN_MEMBER])
            if plan.get("format") != FORMAT:
                raise ArtifactError(f"torch program format {plan.get('format')!r} is not "
                                    f"{FORMAT!r}")
            densities = {str(k): float(v) for k, v in plan["densities"].items()}
        except ArtifactError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ArtifactError(f"malformed torch program ({e})") from None
        unknown = [k for k in densities if k not in graph.values]
        if unknown:
            raise ArtifactError(f"the torch program plans value '{unknown[0]}' that the graph "
                                "does not have")
        return cls(graph, densities)

    def module(self, device: str = "cpu", wide: bool | None = None, interpret: bool = False,
               cuda_graphs: bool = True):
        """The model as a ``SpikingModule`` on ``device``. ``wide`` (None: on the CPU) makes
        the float ops follow the reference's float64 order. On a GPU each encoder and its
        layers run fused on the Triton kernels, the whole model captured per input shape as
        a CUDA graph (``cuda_graphs``); ``interpret`` runs those kernels on Triton's CPU
        interpreter instead (CPU tensors, for tests)."""
        import torch

        from sbcompile.runtime.torch.module import SpikingModule

        dev = torch.device("cpu" if interpret else device)
        wide = dev.type == "cpu" if wide is None else wide
        chains = "direct" if interpret else "op"
        if dev.type == "cuda":
            import sbcompile.runtime.torch.triton_ops  # noqa: F401  (registers the kernels)
        return SpikingModule(self.graph, wide=wide, chains=chains, densities=self.densities,
                             cuda_graphs=cuda_graphs and dev.type == "cuda",
                             device="cuda" if interpret else dev.type).to(dev).eval()
