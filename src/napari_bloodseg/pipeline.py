"""Batch runs that keep the model busy: the next input is loaded in a thread while the current one
runs, and warnings are filed under the input that raised them, whichever thread raised it."""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def prefetch(items: Iterable[T], load: Callable[[T], R], ahead: int = 1) -> Iterator[tuple[T, Future]]:
    """Yield (item, future of ``load(item)``) in order, with the loads of the next ``ahead`` items
    already running in one background thread (so loads run one at a time, in order).
    ``future.result()`` returns the load's value or raises its exception."""
    items = list(items)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="bloodseg-load") as pool:
        futures = [pool.submit(load, x) for x in items[: ahead + 1]]
        try:
            for i, item in enumerate(items):
                if i + ahead + 1 < len(items):
                    futures.append(pool.submit(load, items[i + ahead + 1]))
                yield item, futures[i]
                futures[i] = None  # the caller is done with it: free the image
        finally:
            for f in futures:
                if f is not None:
                    f.cancel()


class WarningsByKey:
    """Within its ``with`` block, warnings raised under :meth:`under` (in any thread) are kept per key
    instead of shown; others go to the warning display that was active before."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()
        self._kept: dict[object, list[str]] = {}

    def __enter__(self) -> "WarningsByKey":
        self._cm = warnings.catch_warnings()
        self._cm.__enter__()
        warnings.simplefilter("always")
        previous = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            key = getattr(self._local, "key", None)
            if key is None:
                previous(message, category, filename, lineno, file, line)
                return
            with self._lock:
                self._kept.setdefault(key, []).append(" ".join(str(message).split()))

        warnings.showwarning = show
        return self

    def __exit__(self, *exc) -> None:
        self._cm.__exit__(*exc)

    @contextmanager
    def under(self, key: object) -> Iterator[None]:
        """File warnings this thread raises inside the block under ``key``."""
        old = getattr(self._local, "key", None)
        self._local.key = key
        try:
            yield
        finally:
            self._local.key = old

    def pop(self, key: object) -> list[str]:
        """The messages kept under ``key`` (one line each), forgetting them."""
        with self._lock:
            return self._kept.pop(key, [])
