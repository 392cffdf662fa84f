"""Streaming fidelity metrics (cosine, SNR, max abs error) between an approximation and a reference,
accumulated batch by batch in float64 so memory stays bounded."""
from __future__ import annotations

import math

import numpy as np

from sbcompile.errors import SbcError


class Fidelity:
    def __init__(self) -> None:
        self.dot = self.aa = self.bb = self.ee = 0.0
        self.max_abs = 0.0

    def update(self, approx: np.ndarray, ref: np.ndarray) -> None:
        a = np.asarray(approx, dtype=np.float64).ravel()
        b = np.asarray(ref, dtype=np.float64).ravel()
        for values, model in ((b, "float"), (a, "spiked")):
            if not np.all(np.isfinite(values)):  # no figure measures it (nor JSON holds it)
                raise SbcError(f"the {model} model computes Inf or NaN on these inputs (a "
                               "float32 overflow): its fidelity cannot be measured")
        e = a - b
        self.dot += float(a @ b)
        self.aa += float(a @ a)
        self.bb += float(b @ b)
        self.ee += float(e @ e)
        self.max_abs = max(self.max_abs, float(np.abs(e).max(initial=0.0)))

    def result(self) -> dict:
        denom = math.sqrt(self.aa * self.bb)
        cosine = self.dot / denom if denom > 0 else (1.0 if self.aa == self.bb else 0.0)
        ratio = self.bb / self.ee if self.ee else math.inf
        # no signal, or one that underflows beside a huge error (or both infinite): -inf dB
        snr = 10 * math.log10(ratio) if ratio > 0 else -math.inf
        return {"cosine": cosine, "snr_db": _json_float(snr), "max_abs_err": self.max_abs}


def _json_float(x: float) -> float | None:
    """JSON has no infinities: an exact match (no error at all) reports snr_db as null."""
    return None if math.isinf(x) else x
