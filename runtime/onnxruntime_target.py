"""The onnxruntime target: the spiked model at onnxruntime's speed on the CPU, for evaluating it
over a data set.

Its program is the artifact's onnx-qdq export (backends/export_onnx_qdq.py, lowered by
backends/onnxruntime.py) with the integer counts and accumulators as extra outputs; it runs in a
default onnxruntime session, in batches along axis 0 with a progress bar. The export gives the
same bits under every graph optimisation level (tested) and sums dynamic thresholds in the
reference's order, so the counts equal the reference's wherever the float work upstream rounds
the same (``benchmarks/real_models.py`` measures it on real models).
"""
from __future__ import annotations

from functools import cached_property

import numpy as np

from sbcompile.batch_axes import batch_axes
from sbcompile.errors import ArtifactError, SbcError
from sbcompile.ir.graph import Graph
from sbcompile.ir.ops import INTEGER_OPS
from sbcompile.progress import track

MODEL_MEMBER = "onnxruntime/model.onnx"


class OnnxruntimeProgram:
    """The QDQ export of a spiking graph and the session that runs it (``TargetProgram``)."""

    def __init__(self, graph: Graph, model: bytes) -> None:
        self.graph = graph
        self.model = model

    def to_members(self) -> dict[str, bytes]:
        return {MODEL_MEMBER: self.model}

    @classmethod
    def from_members(cls, members: dict[str, bytes], graph: Graph) -> "OnnxruntimeProgram":
        if MODEL_MEMBER not in members:
            raise ArtifactError(f"the artifact has no onnxruntime program (member "
                                f"'{MODEL_MEMBER}')")
        return cls(graph, members[MODEL_MEMBER])

    @cached_property
    def session(self):
        import onnxruntime as ort

        try:
            session = ort.InferenceSession(self.model, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types
            raise ArtifactError(f"the onnxruntime program does not load: {e}") from None
        inputs = {i.name for i in session.get_inputs()}
        outputs = {o.name for o in session.get_outputs()}
        integers = {n.outputs[0] for n in self.graph.nodes if n.op in INTEGER_OPS}
        if inputs != set(self.graph.inputs) or outputs != set(self.graph.outputs) | integers:
            raise ArtifactError("the onnxruntime program is not the graph's: it reads "
                                f"{sorted(inputs)} and writes {len(outputs)} values, the graph "
                                f"reads {self.graph.inputs} and has {len(integers)} integer "
                                f"values and {len(self.graph.outputs)} outputs")
        return session

    @property
    def static_batch(self) -> int | None:
        dims = {self.graph.values[n].shape[0] for n in self.graph.inputs
                if self.graph.values[n].shape}
        return dims.pop() if len(dims) == 1 and isinstance(next(iter(dims)), int) else None

    def run(self, feeds: dict[str, np.ndarray], batch_size: int = 64, progress: bool = True,
            keep_integers: bool = False) -> dict[str, np.ndarray]:
        """Graph outputs and the encoders' counts (and, ``keep_integers``, every accumulator)
        for ``feeds`` (batch on axis 0), ``batch_size`` samples at a time (the model's own batch
        when its inputs fix one)."""
        from sbcompile.runtime.reference import check_feeds

        names = [o.name for o in self.session.get_outputs()]
        if not keep_integers:  # the encoders' counts stay: every run is checked on them
            counts = {n.outputs[0] for n in self.graph.nodes if n.op == "spike_encode"}
            names = [n for n in names if n in self.graph.outputs or n in counts]
        axis0 = {np.shape(v)[0] if np.ndim(v) else None for v in feeds.values()}
        if any(a != 0 for a in batch_axes(self.graph).values()) or len(axis0) > 1:
            # a state on axis 1, a scalar, a fixed state beside a sequence: one run
            return dict(zip(names, self.session.run(names, check_feeds(self.graph, feeds))))
        n = _samples(feeds)
        size = int(self.static_batch or batch_size)
        if self.static_batch and n % size:
            raise SbcError(f"the model's static batch is {size}; the inputs hold {n} samples, "
                           "not a multiple of it")
        parts: list[list[np.ndarray]] = [[] for _ in names]
        starts = range(0, n, size)
        for start in track(starts, len(starts), "onnxruntime") if progress else starts:
            batch = check_feeds(self.graph, {k: v[start:start + size] for k, v in feeds.items()})
            for part, out in zip(parts, self.session.run(names, batch)):
                part.append(out)
        return {name: np.concatenate(part) for name, part in zip(names, parts)}


def _samples(feeds: dict[str, np.ndarray]) -> int:
    sizes = {np.asarray(v).shape[0] if np.ndim(v) else 1 for v in feeds.values()}
    if len(sizes) != 1:
        raise SbcError(f"inputs disagree on the number of samples: {sorted(sizes)}")
    return sizes.pop()
