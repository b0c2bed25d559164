"""Corrected image/mask pairs → a training folder that `bloodseg train` reads."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import numpy as np

from .classes import class_mask
from .infer import prepare_image
from .io import write_png

Split = Literal["train", "val", "test"]
SPLITS = ("train", "val", "test")


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "pair"


def to_training_scale(rgb: np.ndarray, mask: np.ndarray, rbc_diameter: float) -> tuple[np.ndarray, np.ndarray]:
    """Rescale a pair whose healthy RBCs are ``rbc_diameter`` px across to the models' training
    scale (36 px): the image smoothly, the mask by nearest class."""
    from .checkpoint import TRAINING_RBC_DIAMETER
    from .infer import _resize_uint8

    if not (rbc_diameter > 0 and np.isfinite(rbc_diameter)):
        raise ValueError(f"RBC diameter must be a positive number of pixels, got {rbc_diameter}")
    s = TRAINING_RBC_DIAMETER / float(rbc_diameter)
    h, w = mask.shape
    nh, nw = max(8, round(h * s)), max(8, round(w * s))
    if abs(s - 1) < 0.02 or (nh, nw) == (h, w):
        return rgb, mask
    return _resize_uint8(rgb, nh, nw, smooth=True), _resize_uint8(mask, nh, nw, smooth=False)


def add_training_pair(dataset: str | Path, image: np.ndarray, labels: np.ndarray, name: str, split: Split = "train",
                      rbc_diameter: float | None = None) -> Path:
    """Write ``<dataset>/<split>/images/<name>.png`` and ``masks/<name>.png``; an existing pair is
    never replaced: the new one gets the next free name (``<name>_2``, …). ``rbc_diameter``: the
    image's healthy-RBC size in px (e.g. what Segment used), to store the pair at the training
    scale; None stores it as it is. Returns the mask path."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}")
    rgb = prepare_image(image)
    mask = class_mask(labels)
    if rgb.shape[:2] != mask.shape:
        raise ValueError(f"image {rgb.shape[:2]} and labels {mask.shape} differ in size")
    if rbc_diameter is not None:
        rgb, mask = to_training_scale(rgb, mask, rbc_diameter)
    root = Path(dataset) / split
    base = _safe_name(name)
    stem, k = base, 1
    while (root / "images" / f"{stem}.png").exists() or (root / "masks" / f"{stem}.png").exists():
        k += 1
        stem = f"{base}_{k}"
    write_png(root / "images" / f"{stem}.png", rgb)
    return write_png(root / "masks" / f"{stem}.png", mask)
