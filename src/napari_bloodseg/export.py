"""Corrected image/mask pairs → a training folder that `bloodseg train` reads."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import numpy as np

from .infer import prepare_image
from .io import write_png

Split = Literal["train", "val", "test"]
SPLITS = ("train", "val", "test")


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "pair"


def add_training_pair(dataset: str | Path, image: np.ndarray, labels: np.ndarray, name: str, split: Split = "train") -> Path:
    """Write ``<dataset>/<split>/images/<name>.png`` and ``masks/<name>.png``; an existing pair is
    never replaced: the new one gets the next free name (``<name>_2``, …). Returns the mask path."""
    from ._writer import class_mask

    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}")
    rgb = prepare_image(image)
    mask = class_mask(labels)
    if rgb.shape[:2] != mask.shape:
        raise ValueError(f"image {rgb.shape[:2]} and labels {mask.shape} differ in size")
    root = Path(dataset) / split
    base = _safe_name(name)
    stem, k = base, 1
    while (root / "images" / f"{stem}.png").exists() or (root / "masks" / f"{stem}.png").exists():
        k += 1
        stem = f"{base}_{k}"
    write_png(root / "images" / f"{stem}.png", rgb)
    return write_png(root / "masks" / f"{stem}.png", mask)
