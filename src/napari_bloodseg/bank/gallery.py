"""A bank as a gallery: samples tiled in a grid (one row per class), for napari or a PNG.

:func:`read_bank_gallery` returns napari LayerData tuples (no napari import): an RGB image layer
and a labels layer holding the class id of every sample pixel. :func:`save_gallery_png` writes the
same grid with mask outlines drawn in each class's colour.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from skimage import segmentation, transform

from ..classes import CLASS_COLORS, CLASS_NAMES, NUM_CLASSES
from .store import Bank, Sample, is_bank

__all__ = ["gallery_grid", "is_bank", "read_bank_gallery", "save_gallery_png"]

BACKGROUND_GREY = 200


def _pick(samples: list[Sample], n: int, seed: int) -> list[Sample]:
    if len(samples) <= n:
        return samples
    idx = np.random.default_rng(seed).choice(len(samples), size=n, replace=False)
    return [samples[i] for i in sorted(idx)]


def gallery_grid(
    bank: Bank | str | os.PathLike,
    per_class: int = 8,
    tile: int = 72,
    split: str | None = None,
    source: str | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, list[list[str]]]:
    """(rgb (H, W, 3) uint8, labels (H, W) uint8 class ids, sample ids per row).

    One row per class present, up to ``per_class`` samples (a seeded random choice), each centred
    in a ``tile`` px square at bank scale (larger samples are shrunk to fit).
    """
    b = bank if isinstance(bank, Bank) else Bank.open(bank)
    rows: list[tuple[int, list[Sample]]] = []
    for c in range(1, NUM_CLASSES):
        ss = b.samples(c, split=split, source=source)
        if ss:
            rows.append((c, _pick(ss, per_class, seed + c)))
    n_rows = max(1, len(rows))
    n_cols = max([len(ss) for _, ss in rows], default=1)
    rgb = np.full((n_rows * tile, n_cols * tile, 3), BACKGROUND_GREY, np.uint8)
    labels = np.zeros((n_rows * tile, n_cols * tile), np.uint8)
    ids: list[list[str]] = []
    for r, (c, ss) in enumerate(rows):
        ids.append([])
        for k, s in enumerate(ss):
            try:
                img, mask = s.load()
            except (OSError, ValueError):
                continue
            h, w = mask.shape
            f = min(1.0, (tile - 2) / max(h, w))
            if f < 1.0:
                shape = (max(1, int(h * f)), max(1, int(w * f)))
                img = (transform.resize(img, shape, order=1, anti_aliasing=True, preserve_range=True)).astype(np.uint8)
                mask = transform.resize(mask.astype(float), shape, order=1) >= 0.5
                h, w = shape
            y0 = r * tile + (tile - h) // 2
            x0 = k * tile + (tile - w) // 2
            win = rgb[y0 : y0 + h, x0 : x0 + w]
            win[mask] = img[mask]
            labels[y0 : y0 + h, x0 : x0 + w][mask] = c
            ids[-1].append(s.sample_id)
    return rgb, labels, ids


def read_bank_gallery(path: str, per_class: int = 8, tile: int = 72) -> list[tuple]:
    """napari LayerData tuples for a bank folder: [(rgb, kwargs, 'image'), (labels, kwargs, 'labels')]."""
    name = Path(path).name or str(path)
    rgb, labels, ids = gallery_grid(path, per_class=per_class, tile=tile)
    features = {"index": list(range(NUM_CLASSES)), "class_name": list(CLASS_NAMES)}
    meta = {"bank": str(path), "tile": tile, "sample_ids": ids}
    return [
        (rgb, {"name": f"{name} samples", "rgb": True, "metadata": meta}, "image"),
        (labels, {"name": f"{name} classes", "features": features, "metadata": meta}, "labels"),
    ]


def save_gallery_png(
    bank: Bank | str | os.PathLike,
    out: str | os.PathLike,
    per_class: int = 10,
    tile: int = 72,
    zoom: int = 2,
    split: str | None = None,
    source: str | None = None,
    seed: int = 0,
) -> Path:
    """Write the grid with each mask's outline in its class colour (``zoom`` x nearest upscaling)."""
    import imageio.v3 as iio

    rgb, labels, _ = gallery_grid(bank, per_class, tile, split=split, source=source, seed=seed)
    if zoom > 1:
        rgb = np.repeat(np.repeat(rgb, zoom, 0), zoom, 1)
        labels = np.repeat(np.repeat(labels, zoom, 0), zoom, 1)
    edge = segmentation.find_boundaries(labels, mode="inner") & (labels > 0)
    out_img = rgb.copy()
    colours = CLASS_COLORS.copy()
    colours[3] = (255, 0, 128)  # the class table's pale pink is invisible on cells; outline it darker
    out_img[edge] = colours[labels[edge]]
    # row separators
    out_img[::tile * zoom] = 120
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(out, out_img)
    return out
