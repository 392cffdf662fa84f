"""Two runs of one batch side by side (the float graph's and the spiked graph's), each value
handed to the measurements that read it as soon as both runs have made what a measurement
needs, then let go: memory holds the two interpreters' live sets and the few values waiting for
their partner, never every layer's activations of the batch."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import numpy as np

from sbcompile.errors import SbcError

Values = Iterator[tuple[str, np.ndarray]]
FLOAT, SPIKED = 0, 1


@dataclass(frozen=True)
class Watch:
    """A measurement: the values it reads from the float run and from the spiked run, and
    ``fire(float_values, spiked_values)`` (dicts holding at least those) once all are made."""

    float: frozenset[str]
    spiked: frozenset[str]
    fire: Callable[[dict, dict], None]


def watch(float_values: Iterable[str], spiked_values: Iterable[str],
          fire: Callable[[dict, dict], None]) -> Watch:
    return Watch(frozenset(float_values), frozenset(spiked_values), fire)


def side_by_side(float_values: Values, spiked_values: Values, watches: list[Watch]) -> None:
    """Drive the spiked run; run the float one only as far as the watches whose spiked values
    are complete need; fire each watch once, when both its sets are complete."""
    left = [(set(w.float), set(w.spiked)) for w in watches]
    readers: tuple[dict, dict] = ({}, {})
    for i, w in enumerate(watches):
        for side, names in ((FLOAT, w.float), (SPIKED, w.spiked)):
            for v in names:
                readers[side].setdefault(v, []).append(i)
    waiting = tuple({v: len(r) for v, r in readers[side].items()} for side in (FLOAT, SPIKED))
    held: tuple[dict, dict] = ({}, {})
    fired = [False] * len(watches)

    def fire(i: int) -> None:
        w = watches[i]
        fired[i] = True
        w.fire(held[FLOAT], held[SPIKED])
        for side, names in ((FLOAT, w.float), (SPIKED, w.spiked)):
            for v in names:
                waiting[side][v] -= 1
                if not waiting[side][v]:
                    held[side].pop(v, None)

    def take(side: int, name: str, arr: np.ndarray) -> list[int]:
        """Hold a value its watches read; the watches it completes (both sides)."""
        idx = readers[side].get(name)
        if not idx:
            return []
        held[side][name] = arr
        done = []
        for i in idx:
            left[i][side].discard(name)
            if not left[i][FLOAT] and not left[i][SPIKED] and not fired[i]:
                done.append(i)
        return done

    floats = iter(float_values)

    def float_until(i: int) -> None:
        """Advance the float run until watch ``i``'s float values are made, firing the watches
        completed on the way."""
        while left[i][FLOAT]:
            name, arr = next(floats, (None, None))
            if name is None:
                return
            for j in take(FLOAT, name, arr):
                fire(j)

    for i, w in enumerate(watches):
        if not w.float and not w.spiked:
            fire(i)
    for name, arr in spiked_values:
        spiked_done = [i for i in readers[SPIKED].get(name, ()) if not fired[i]]
        for i in take(SPIKED, name, arr):
            fire(i)
        for i in spiked_done:  # spiked side complete: bring the float run up to it
            if not left[i][SPIKED] and not fired[i]:
                float_until(i)
        name = arr = None
    for name, arr in floats:
        for j in take(FLOAT, name, arr):
            fire(j)
    missing = [i for i, done in enumerate(fired) if not done]
    if missing:
        f, s = left[missing[0]]
        raise SbcError(f"the runs made no value {sorted(f | s)[0]!r} that the analysis reads")
