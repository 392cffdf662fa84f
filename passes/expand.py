"""The expand pass: record, per spike encoder, the coding and T policy of the compile in
an ``Expansion`` record (T values are measured by analyse). The codings themselves, the
expansion of counts into events and its exact inverse, are defined in ``sbcompile.ir.codings``.
"""
from __future__ import annotations

from sbcompile.config import CompileConfig
from sbcompile.ir.graph import Graph
from sbcompile.ir.records import Expansion, set_expansions


def run(graph: Graph, config: CompileConfig) -> Graph:
    """Record each spike encoder's coding and T policy (T values are measured by analyse)."""
    graph = graph.copy()
    set_expansions(graph, {n.outputs[0]: Expansion(config.coding, config.t_mode, config.window)
                           for n in graph.nodes if n.op == "spike_encode"})
    return graph
