"""Which layers get spiked: linear projections (linear, matmul with a constant 2-D weight) and,
when configured, convolutions; minus the layers excluded by name pattern."""
from __future__ import annotations

import fnmatch

from sbcompile.config import CompileConfig
from sbcompile.ir.graph import Graph, Node


def is_excluded(name: str, config: CompileConfig) -> bool:
    return any(fnmatch.fnmatchcase(name, pat) for pat in config.exclude)


def spike_targets(graph: Graph, config: CompileConfig) -> list[tuple[Node, str]]:
    """(node, spiked input value) for every layer whose input is to be spiked."""
    result = []
    for node in graph.nodes:
        if is_excluded(node.name, config):
            continue
        if node.op == "linear" and node.inputs[1] in graph.params:
            result.append((node, node.inputs[0]))
        elif node.op == "matmul" and node.inputs[1] in graph.params \
                and graph.params[node.inputs[1]].ndim == 2:
            result.append((node, node.inputs[0]))
        elif node.op == "conv" and config.spike_conv and node.inputs[1] in graph.params:
            result.append((node, node.inputs[0]))
    return result
