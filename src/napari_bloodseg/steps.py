"""Long jobs as generators that yield (done, total) and return their result."""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import TypeVar

R = TypeVar("R")


def drain(gen: Generator[tuple[int, int], None, R], progress: Callable[[int, int], None] | None = None) -> R:
    """Run a step generator to the end, reporting each (done, total); return its return value."""
    while True:
        try:
            done, total = next(gen)
        except StopIteration as stop:
            return stop.value
        if progress is not None:
            progress(done, total)
