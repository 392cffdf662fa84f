"""Progress bars for long work: shown on a terminal (stderr), silent otherwise."""
from __future__ import annotations

import contextlib
import sys
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")


_quiet = False  # an outer display (the tune search's) is showing: inner bars stay silent


@contextlib.contextmanager
def quiet():
    """Silence ``track`` inside a block that shows its own progress display."""
    global _quiet
    previous, _quiet = _quiet, True
    try:
        yield
    finally:
        _quiet = previous


def track(items: Iterable[T], total: int | None, description: str) -> Iterator[T]:
    if _quiet or not sys.stderr.isatty():
        yield from items
        return
    from rich.console import Console
    from rich.progress import track as rich_track

    yield from rich_track(items, total=total, description=description,
                          console=Console(stderr=True), transient=True)


@contextlib.contextmanager
def counter(total: int, description: str) -> Iterator[Callable[[], None]]:
    """A bar of ``total`` steps for work that reports as each step finishes (in any order):
    the block calls the function it gets once a step."""
    if _quiet or not sys.stderr.isatty():
        yield lambda: None
        return
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn)

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda: bar.advance(task)
