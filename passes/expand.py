"""The expand pass: record, per spike encoder, the coding and T policy of the compile in
an ``Expansion`` record, with the T its count bound needs (for the unary codings, binary and
ternary, the bound itself: the calibrated T of the ``ternary`` preset). The T each input uses is
measured by analyse. The codings themselves, the expansion of counts into events and its exact
inverse, are defined in ``sbcompile.ir.codings``.
"""
from __future__ import annotations

import numpy as np

from sbcompile.config import CompileConfig
from sbcompile.ir.codings import SIGNED, steps_needed
from sbcompile.ir.graph import Graph
from sbcompile.ir.passes import PassBase, PassContext, PassResult
from sbcompile.ir.records import Expansion, set_expansions


def run(graph: Graph, config: CompileConfig) -> Graph:
    """Record each spike encoder's coding, T policy and T bound."""
    graph = graph.copy()
    set_expansions(graph, {n.outputs[0]: Expansion(config.coding, config.t_mode, config.window,
                                                   T=bound_steps(n.attrs.get("max_count"),
                                                                 config.coding))
                           for n in graph.nodes if n.op == "spike_encode"})
    return graph


def bound_steps(max_count: int | None, coding: str) -> int | None:
    """Steps that every count within +-max_count fits in ``coding`` (None when unbounded)."""
    if max_count is None:
        return None
    reach = [-max_count, max_count] if coding in SIGNED else [max_count]
    return steps_needed(np.array(reach), coding)


class Expand(PassBase):
    name = "expand"

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        return PassResult(run(graph, ctx.config))
