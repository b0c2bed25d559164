"""Which Segment dock belongs to which viewer, so that other docks can read and set its model
without knowing about Qt dock lookups (weak references: a closed dock drops out)."""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import Any, Protocol


class ModelHolder(Protocol):
    def model_path(self) -> Path | None: ...

    def use_model(self, path: str | Path) -> None: ...


_SEGMENT_DOCKS: dict[int, weakref.ReferenceType] = {}


def register_segment_dock(viewer: Any, dock: ModelHolder) -> None:
    """Record ``dock`` as ``viewer``'s Segment dock (the last one opened wins)."""
    _SEGMENT_DOCKS[id(viewer)] = weakref.ref(dock)


def segment_dock(viewer: Any) -> ModelHolder | None:
    """The viewer's open Segment dock, or None."""
    ref = _SEGMENT_DOCKS.get(id(viewer))
    dock = ref() if ref is not None else None
    if dock is None or getattr(dock, "_viewer", None) is not viewer:
        _SEGMENT_DOCKS.pop(id(viewer), None)
        return None
    return dock
