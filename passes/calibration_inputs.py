"""Calibration data whose inputs do not all hold their samples on axis 0: batch axes read from the
model's symbolic dims (``sbcompile.batch_axes``), inputs without one given once and passed with
every batch (a scalar sample rate, a fixed table), a recurrent state split on its own batch axis.
"""
from __future__ import annotations

import numpy as np

from sbcompile.batch_axes import batch_axes, sample_count, take
from sbcompile.errors import SbcError
from sbcompile.ir.graph import Graph
from sbcompile.passes.calibrate import CalibrationSet
from sbcompile.runtime.reference import check_feeds


class AxisCalibrationSet(CalibrationSet):
    """A dict of arrays streamed in batches along each input's own batch axis."""

    def __init__(self, graph: Graph, data: dict[str, np.ndarray],
                 axes: dict[str, int | None]) -> None:
        self.axes, self._graph = axes, graph
        self.feeds, self.static_batch, self.dropped = None, None, 0
        self.samples = sample_count(graph, data, axes)
        self.arrays = {k: np.asarray(v) for k, v in data.items()}
        check_feeds(graph, take(self.arrays, axes, 0, 1))  # names, shapes, dtypes, up front

    def batch_size(self, requested: int) -> int:
        return requested

    def batches(self, requested: int):
        for start in range(0, self.samples, requested):
            yield check_feeds(self._graph, take(self.arrays, self.axes, start, start + requested))

    def num_batches(self, requested: int) -> int:
        return -(-self.samples // requested)


def by_batch_axes(graph: Graph, data: dict[str, np.ndarray]) -> AxisCalibrationSet | None:
    """The calibration set along the model's batch axes, when some input batches off axis 0 or
    has no batch axis; None when every input batches on axis 0 (the plain case)."""
    axes = batch_axes(graph)
    if not axes or all(a == 0 for a in axes.values()):
        return None
    if not data:
        raise SbcError("calibration data is empty")
    return AxisCalibrationSet(graph, data, axes)
