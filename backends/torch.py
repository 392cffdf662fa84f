"""PyTorch backend: check that every node of the spiking IR has a PyTorch kernel and plan the
GPU dispatch (``runtime/torch`` builds and runs the module).

The plan is each encoder's expected fraction of nonzero counts: ``config.triton_density`` when
set, else what the analysis measured on the calibration inputs (``expected_densities``).
"""
from __future__ import annotations

from sbcompile.config import CompileConfig
from sbcompile.errors import SbcError
from sbcompile.ir.graph import Graph
from sbcompile.ir.ops import INTEGER_OPS
from sbcompile.ir.records import analysis, spiked_layers
from sbcompile.ir.validate import validate
from sbcompile.runtime.torch.float_ops import TORCH_KERNELS
from sbcompile.runtime.torch.program import TorchProgram

__all__ = ["TorchProgram", "lower"]


def lower(graph: Graph, config: CompileConfig | None = None) -> TorchProgram:
    """The torch program of a spiking IR graph; SbcError naming the first node without a
    PyTorch kernel."""
    validate(graph)
    for node in graph.nodes:
        if node.op not in TORCH_KERNELS and node.op not in INTEGER_OPS:
            raise SbcError(f"node '{node.name}': op '{node.op}' has no PyTorch kernel")
    return TorchProgram(graph, expected_densities(graph, config))


def expected_densities(graph: Graph, config: CompileConfig | None = None) -> dict[str, float]:
    """Expected nonzero fraction per counts value: the ``triton_density`` setting for all, else
    1 - count_zero of the layers the analysis measured (those reading the counts)."""
    setting = config.triton_density if config is not None else None
    layers = spiked_layers(graph)
    if setting is not None:
        return {info.counts: float(setting) for info in layers.values()}
    measured = analysis(graph)
    return {layers[m["name"]].counts: 1.0 - m["sparsity"]["count_zero"]
            for m in (measured.layers if measured else []) if m["name"] in layers}
