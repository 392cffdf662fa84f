"""The pass protocol, after onnx-ir's ``PassBase`` / ``PassResult``: a pass is an object with a
``name``, ``applies(graph, ctx)`` (whether it has work on this graph under this context) and
``run(graph, ctx) -> PassResult``; what it reads beyond the graph comes in the ``PassContext``.
A pass copies the graph before changing it. The driver walks a list of them
(``sbcompile/passmanager.py``): it times each, measures its memory, and validates the result."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sbcompile.ir.graph import Graph


@dataclass
class PassContext:
    """What the passes of one compile share: the config, the calibration inputs (a
    CalibrationSet, or None), the float graph the spiked one is measured against, and whether
    count bounds are measured (a search that measures on the calibration inputs skips them:
    they never clip those)."""

    config: Any
    calib: Any = None
    float_graph: Graph | None = None
    measure_bounds: bool = True


@dataclass(frozen=True)
class PassResult:
    graph: Graph
    modified: bool = True


class PassBase:
    """One pass; subclasses set ``name`` and implement ``run`` (and ``applies`` when they have
    nothing to do on some graphs)."""

    name = ""

    def applies(self, graph: Graph, ctx: PassContext) -> bool:
        return True

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        raise NotImplementedError
