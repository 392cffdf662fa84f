"""The expand pass: record, per spike encoder, the coding and T policy of the compile in
``graph.meta['expansion']`` (T values are measured by analyse). The codings themselves, the
expansion of counts into events and its exact inverse, are defined in ``sbcompile.ir.codings``.
"""
from __future__ import annotations

from sbcompile.config import CompileConfig
from sbcompile.ir.graph import Graph


def run(graph: Graph, config: CompileConfig) -> Graph:
    """Record each spike encoder's coding and T policy (T values are measured by analyse)."""
    graph = graph.copy()
    graph.meta["expansion"] = {
        n.outputs[0]: {"coding": config.coding, "t_mode": config.t_mode,
                       "window": config.window, "bit_order": "lsb_first"}
        for n in graph.nodes if n.op == "spike_encode"}
    return graph
