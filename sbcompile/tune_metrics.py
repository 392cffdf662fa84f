"""What the tune search keeps above its floor: an end-to-end figure of the spiking model against
the float one (``cosine``: the worst output's cosine; ``agreement``: the worst output's argmax
agreement), or a task metric against labels the user gives (``accuracy``: a sample is right when
the argmax over the last axis equals its label at every position; ``ctc``: when the greedy CTC
decode of its sequence, blanks and repeats dropped, equals its label sequence, padded with -1).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from sbcompile.errors import SbcError

COMPARED = ("cosine", "agreement")   # read from the analysis, against the float model
LABELLED = ("accuracy", "ctc")       # need a labels file
METRICS = COMPARED + LABELLED
RANGES = {"cosine": (-1.0, 1.0), "agreement": (0.0, 1.0), "accuracy": (0.0, 1.0),
          "ctc": (0.0, 1.0)}  # a floor lies in (low, high]


def parse_budget(text: str) -> tuple[str, float]:
    """``--budget``: ``FLOOR`` (end-to-end cosine) or ``METRIC=FLOOR``; the floor in range."""
    metric, sep, value = text.rpartition("=")
    metric = metric.strip() if sep else "cosine"
    if metric not in METRICS:
        raise SbcError(f"--budget '{text}': unknown metric '{metric}' (known: "
                       f"{', '.join(METRICS)})")
    try:
        floor = float(value)
    except ValueError:
        raise SbcError(f"--budget '{text}': the floor must be a number") from None
    check_floor(metric, floor, f"--budget '{text}'")
    return metric, floor


def check_floor(metric: str, floor: float, where: str) -> None:
    low, high = RANGES[metric]
    if not low < floor <= high:
        raise SbcError(f"{where}: a {metric} floor must be in ({low:g}, {high:g}], got {floor}")


def compared_value(metric: str, outputs_fidelity: dict) -> float:
    """The worst output's cosine or argmax agreement, from an analysis' outputs_fidelity."""
    key = "cosine" if metric == "cosine" else "argmax_agreement"
    values = [f[key] for f in outputs_fidelity.values() if key in f]
    if not values:
        raise SbcError("tune metric agreement needs an output with a class axis (argmax over "
                       "the last axis); use cosine")
    return float(min(values))


class LabelledMetric:
    """A task metric over the calibration samples, fed batch by batch (in calibration order) by
    the analysis' ``observe`` hook; scores the float and the spiking outputs alike."""

    def __init__(self, kind: str, labels: dict[str, np.ndarray], samples: int,
                 blank: int = 0) -> None:
        self.kind, self.labels, self.blank = kind, labels, blank
        for name, rows in labels.items():
            if rows.shape[0] != samples:
                raise SbcError(f"labels for output '{name}': {rows.shape[0]} rows, the "
                               f"calibration data holds {samples} samples")
        self.reset()

    def reset(self) -> None:
        self.offset = 0
        self.right = {"float": 0, "spiking": 0}

    def observe(self, float_outputs: dict, spiking_outputs: dict) -> None:
        size = None
        for name, rows in self.labels.items():
            want = rows[self.offset:self.offset + len(float_outputs[name])]
            size = len(want)
            for which, outs in (("float", float_outputs), ("spiking", spiking_outputs)):
                self.right[which] += int(np.sum(self._correct(outs[name], want)))
        self.offset += size or 0

    def result(self, which: str = "spiking") -> float:
        total = self.offset * len(self.labels)
        return self.right[which] / total if total else 0.0

    def _correct(self, out: np.ndarray, want: np.ndarray) -> np.ndarray:
        ids = np.asarray(out).argmax(-1)
        if self.kind == "accuracy":
            if ids.shape != want.shape:
                raise SbcError(f"labels of shape {list(want.shape[1:])} per sample do not match "
                               f"the output's argmax, {list(ids.shape[1:])}")
            return (ids == want).reshape(len(ids), -1).all(axis=1)
        return np.array([_ctc_decode(row, self.blank) == tuple(int(c) for c in label if c >= 0)
                         for row, label in zip(ids.reshape(len(ids), -1), want)])


def _ctc_decode(ids: np.ndarray, blank: int) -> tuple:
    keep = np.ones(len(ids), bool)
    keep[1:] = ids[1:] != ids[:-1]
    return tuple(int(c) for c in ids[keep & (ids != blank)])


def load_labels(path: str | Path, outputs: list[str]) -> dict[str, np.ndarray]:
    """A labels file (.npz keyed by graph output name, integer labels, samples on axis 0)."""
    from sbcompile.npz import load_npz

    data = load_npz(path)
    unknown = [k for k in data if k not in outputs]
    if unknown:
        raise SbcError(f"{path}: '{unknown[0]}' is not an output of the model (outputs: "
                       f"{', '.join(outputs)})")
    if not data:
        raise SbcError(f"{path}: holds no labels")
    for name, rows in data.items():
        if not np.issubdtype(rows.dtype, np.integer) or rows.ndim == 0:
            raise SbcError(f"{path}: labels '{name}' must be integers with samples on axis 0")
    return {k: v.astype(np.int64) for k, v in data.items()}
