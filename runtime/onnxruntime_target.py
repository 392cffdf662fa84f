"""The onnxruntime target: the spiked model at onnxruntime's speed on the CPU, for evaluating it
over a data set.

It runs the artifact's onnx-qdq export (backends/export_onnx_qdq.py) in a default onnxruntime
session, in batches along axis 0 with a progress bar. The export gives the same bits under every
graph optimisation level (tested) and sums dynamic thresholds in the reference's order, so the
integer counts equal the reference's wherever the float work upstream rounds the same
(``benchmarks/real_models.py`` measures it on real models).
"""
from __future__ import annotations

import numpy as np

from sbcompile.errors import SbcError
from sbcompile.ir.graph import Graph
from sbcompile.progress import track


class OnnxruntimeProgram:
    """One onnxruntime session over the QDQ export of a spiking graph."""

    def __init__(self, graph: Graph) -> None:
        import onnxruntime as ort

        from sbcompile.backends.export_onnx_qdq import to_onnx

        self.graph = graph
        model = to_onnx(graph)
        self.session = ort.InferenceSession(model.SerializeToString(),
                                            providers=["CPUExecutionProvider"])
        self.outputs = [o.name for o in self.session.get_outputs()]
        first = graph.values[graph.inputs[0]].shape if graph.inputs else ()
        self.static_batch = first[0] if first and all(
            isinstance(graph.values[n].shape[0], int) and graph.values[n].shape[0] == first[0]
            for n in graph.inputs if graph.values[n].shape) else None

    def run(self, feeds: dict[str, np.ndarray], batch_size: int = 64,
            progress: bool = True) -> dict[str, np.ndarray]:
        """Graph outputs for ``feeds`` (batch on axis 0), run ``batch_size`` samples at a time
        (the model's own batch when its inputs fix one)."""
        from sbcompile.runtime.reference import check_feeds

        n = _samples(feeds)
        size = int(self.static_batch or batch_size)
        if self.static_batch and n % size:
            raise SbcError(f"the model's static batch is {size}; the inputs hold {n} samples, "
                           "not a multiple of it")
        parts: list[list[np.ndarray]] = [[] for _ in self.outputs]
        starts = range(0, n, size)
        steps = track(starts, len(starts), "onnxruntime") if progress else starts
        for start in steps:
            batch = check_feeds(self.graph, {k: v[start:start + size] for k, v in feeds.items()})
            for part, out in zip(parts, self.session.run(None, batch)):
                part.append(out)
        return {name: np.concatenate(part) for name, part in zip(self.outputs, parts)}


def _samples(feeds: dict[str, np.ndarray]) -> int:
    sizes = {np.asarray(v).shape[0] if np.ndim(v) else 1 for v in feeds.values()}
    if len(sizes) != 1:
        raise SbcError(f"inputs disagree on the number of samples: {sorted(sizes)}")
    return sizes.pop()


def run_onnxruntime(graph: Graph, feeds: dict[str, np.ndarray], batch_size: int = 64,
                    progress: bool = True) -> dict[str, np.ndarray]:
    return OnnxruntimeProgram(graph).run(feeds, batch_size, progress)
