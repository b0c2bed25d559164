"""A source's healthy-RBC diameter, measured from its own images, and rescaling to the bank scale.

The bank keeps every cell at one scale: healthy red cells about :data:`TARGET_RBC_DIAMETER` px
across (the reference work's 40x tiles). For a source we measure the median equivalent diameter of
isolated, round, non-nucleated objects on the plasma background of its fields or crop backgrounds
(:func:`measure_rbc_diameter`), or of the cells themselves for single-RBC crops
(:func:`diameter_from_masks`); a crop is then rescaled by ``TARGET / measured``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage import color, measure, morphology, transform
from skimage.segmentation import clear_border

from .masks import _smooth, as_rgb, foreground

TARGET_RBC_DIAMETER = 36.0

#: Smallest object taken for a red cell (px): specks, platelets and noise below it are ignored.
MIN_RBC_DIAMETER_PX = 12.0


class ScaleError(ValueError):
    """The RBC diameter of a source could not be measured."""


@dataclass(frozen=True)
class ScaleEstimate:
    """Measured healthy-RBC diameter of a source (px) and how it was obtained."""

    diameter: float
    n_objects: int
    method: str

    @property
    def factor(self) -> float:
        """Rescale factor to the bank scale."""
        return TARGET_RBC_DIAMETER / self.diameter


def rbc_candidates(
    rgb: np.ndarray,
    min_solidity: float = 0.93,
    max_eccentricity: float = 0.75,
) -> list[float]:
    """Equivalent diameters (px) of isolated round non-nucleated objects of one image.

    Objects touching the frame, not convex (touching/overlapping cells), elongated, or holding dark
    (nuclear) pixels are left out.
    """
    rgb = as_rgb(rgb)
    lab = color.rgb2lab(_smooth(rgb))
    fg = foreground(lab, bright_fraction=0.15)
    fg = morphology.opening(fg, morphology.disk(2))
    fg = ndi.binary_fill_holes(fg)
    if not fg.any():
        return []
    L = lab[..., 0]
    dark = L < np.median(L[fg]) - 22.0
    lb = clear_border(measure.label(fg))
    out: list[float] = []
    for p in measure.regionprops(lb):
        if p.equivalent_diameter_area < MIN_RBC_DIAMETER_PX:
            continue
        if p.solidity < min_solidity or p.eccentricity > max_eccentricity:
            continue
        sl = lb[p.slice] == p.label
        if dark[p.slice][sl].mean() > 0.03:
            continue
        out.append(float(p.equivalent_diameter_area))
    return out


def robust_diameter(diameters: Iterable[float]) -> tuple[float, int]:
    """Median diameter of the dominant size class: an area-weighted median, then a window of
    0.75–1.33× around it refined three times. Returns (diameter, objects in the window)."""
    d = np.asarray(list(diameters), float)
    if len(d) == 0:
        raise ScaleError("no red cells found to measure")
    order = np.argsort(d)
    cw = np.cumsum(d[order] ** 2)
    m = float(d[order][np.searchsorted(cw, cw[-1] / 2)])
    sel = d
    for _ in range(3):
        sel = d[(d > 0.75 * m) & (d < 1.33 * m)]
        m = float(np.median(sel))
    return m, int(len(sel))


def measure_rbc_diameter(
    images: Iterable[np.ndarray],
    min_objects: int = 8,
) -> ScaleEstimate:
    """Healthy-RBC diameter (px) from fields or crop backgrounds (isolated round red cells).

    Raises :class:`ScaleError` when fewer than ``min_objects`` usable cells are found.
    """
    found: list[float] = []
    for img in images:
        found += rbc_candidates(img)
    if len(found) < min_objects:
        raise ScaleError(
            f"only {len(found)} isolated red cells found (need {min_objects}); "
            "pass the diameter explicitly (--rbc-diameter PX)"
        )
    d, n = robust_diameter(found)
    if n < min_objects:
        raise ScaleError(f"only {n} red cells of a consistent size (need {min_objects}); pass --rbc-diameter PX")
    return ScaleEstimate(d, n, "isolated round RBCs in the images")


def diameter_from_masks(masks: Iterable[np.ndarray], min_objects: int = 8, method: str = "") -> ScaleEstimate:
    """Healthy-RBC diameter from masks of single healthy red cells (e.g. RBC crop sources)."""
    ds = [2.0 * np.sqrt(np.count_nonzero(m) / np.pi) for m in masks]
    ds = [d for d in ds if d >= MIN_RBC_DIAMETER_PX]
    if len(ds) < min_objects:
        raise ScaleError(f"only {len(ds)} healthy red cell masks to measure (need {min_objects})")
    d, n = robust_diameter(ds)
    return ScaleEstimate(d, n, method or "healthy RBC masks")


def rbc_box_diameters(boxes: Iterable[tuple[float, float, float, float]], shape: tuple[int, int]) -> list[float]:
    """(h + w) / 2 of each roundish (row0, col0, row1, col1) box clear of the image border: one RBC each."""
    h, w = shape
    out = []
    for r0, c0, r1, c1 in boxes:
        bh, bw = r1 - r0, c1 - c0
        if r0 <= 1 or c0 <= 1 or r1 >= h - 1 or c1 >= w - 1 or min(bh, bw) <= 0:
            continue
        if 0.75 <= bh / bw <= 1.33:
            out.append((bh + bw) / 2)
    return out


def rescale_rgba(rgba: np.ndarray, factor: float) -> np.ndarray:
    """Rescale an RGBA sample by ``factor``; colour is smoothed (anti-aliased), alpha stays binary."""
    rgba = np.asarray(rgba)
    if abs(factor - 1.0) < 1e-3:
        return rgba.copy()
    h, w = rgba.shape[:2]
    shape = (max(1, int(round(h * factor))), max(1, int(round(w * factor))))
    rgb = transform.resize(rgba[..., :3], shape, order=1, anti_aliasing=factor < 1, preserve_range=True)
    a = transform.resize(rgba[..., 3].astype(float), shape, order=1, anti_aliasing=factor < 1, preserve_range=True)
    alpha = np.where(a >= 127.5, 255, 0).astype(np.uint8)
    return np.dstack([np.clip(np.round(rgb), 0, 255).astype(np.uint8), alpha])
