"""``export(artifact, format, path)``: the compiled spiking graph in an exchange format.

Each format module offers ``inexpressible(graph) -> [(node, reason)]``,
``to_bytes(graph) -> bytes`` and ``notes(graph) -> [str]`` (how a peer must run the file). A
graph the format cannot hold fully is refused with one error listing every such node, unless
``allow_partial`` exports the expressible prefix: the nodes before the first inexpressible one,
with the values they hand on as outputs (cut again while the prefix itself ends in something the
format cannot hold). Files are written atomically.
"""
from __future__ import annotations

import importlib
from pathlib import Path

from sbcompile.artifact import Artifact, write_atomic
from sbcompile.errors import SbcError, UnsupportedError, first_few
from sbcompile.ir.graph import Graph

FORMATS = {"onnx-qdq": "export_onnx_qdq", "nir": "export_nir", "netx": "export_netx"}


def export(artifact: Artifact | str | Path, format: str, path: str | Path,
           allow_partial: bool = False) -> dict:
    """Write ``artifact``'s spiking graph to ``path`` in ``format``; returns what was written:
    {"format", "path", "left_out": [node names not exported], "notes": [deviations]}."""
    if format not in FORMATS:
        raise SbcError(f"unknown export format '{format}' (known: {', '.join(FORMATS)})")
    if not isinstance(artifact, Artifact):
        artifact = Artifact.load(artifact)
    module = importlib.import_module(f"sbcompile.backends.{FORMATS[format]}")
    graph = artifact.graph
    problems = module.inexpressible(graph)
    left_out: list[str] = []
    if problems and not allow_partial:
        raise UnsupportedError(f"{format} cannot hold {len(problems)} node(s): "
                               + first_few([reason for _, reason in problems])
                               + " (allow_partial exports the prefix before them)")
    while problems:  # a cut can leave a prefix that ends badly (a ReLU without its layer)
        if not problems[0][0]:
            raise UnsupportedError(f"{format} cannot hold the graph: {problems[0][1]}")
        graph, dropped = expressible_prefix(graph, problems[0][0])
        left_out = dropped + left_out
        problems = module.inexpressible(graph)
    data = module.to_bytes(graph)
    write_atomic(Path(path), lambda f: f.write(data))
    return {"format": format, "path": str(path), "left_out": left_out,
            "notes": module.notes(graph)}


def expressible_prefix(graph: Graph, first_bad: str) -> tuple[Graph, list[str]]:
    """The nodes before ``first_bad`` (graph order), outputting every value they produce that a
    later node or the graph output reads, reading only the inputs they use; and the names of the
    nodes left out."""
    names = [n.name for n in graph.nodes]
    cut = names.index(first_bad)
    kept, dropped = graph.nodes[:cut], graph.nodes[cut:]
    available = set(graph.inputs) | {o for n in kept for o in n.outputs}
    wanted = [i for n in dropped for i in n.inputs] + list(graph.outputs)
    outputs = list(dict.fromkeys(v for v in wanted if v in available
                                 and v not in graph.params and v not in graph.inputs))
    if not outputs:
        raise SbcError(f"nothing before node '{first_bad}' can be exported")
    prefix = graph.copy()
    prefix.nodes = prefix.nodes[:cut]
    prefix.outputs = outputs
    prefix.remove_unused()
    read = {i for n in prefix.nodes for i in n.inputs} | set(outputs)
    prefix.inputs = [i for i in prefix.inputs if i in read]
    return prefix, [n.name for n in dropped]
