"""Running one import task (in a worker process): read the source image, extract or check each cell's mask, crop and rescale it to the bank scale."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi
from skimage import measure

from ...classes import BloodClass
from ...io import imread
from .. import masks as M
from .base import _Crop, _crop_from, _mask_levels, _Result, _Task


def _run_task(t: _Task) -> _Result:
    res = _Result(t)
    if t.notes:
        res.skipped.update(t.notes)
    if t.kind == "skip":
        res.skipped[t.note or "skipped"] += 1
        return res
    try:
        img = imread(t.path)
        rgb = M.as_rgb(img)
    except Exception as e:  # noqa: BLE001 - any decoder failure means unreadable
        res.error = f"{t.rel}: {type(e).__name__}: {e}"
        return res
    try:
        if t.kind == "crop":
            assert t.cls is not None
            alpha = np.asarray(img)[..., 3] if np.asarray(img).ndim == 3 and np.asarray(img).shape[-1] == 4 else None
            if alpha is not None and (alpha < 128).any() and (alpha >= 128).any():
                ex = M.check_mask(alpha >= 128, max_border=1.0)
            elif t.cls == BloodClass.PLATELET_CLUMP:
                ex = _extract_clump(rgb, t.diameter)
            else:
                ex = M.extract_cell(rgb, t.cls, t.diameter, surround=t.surround)  # type: ignore[arg-type]
            res.crops.append(_crop_from(0, t.cls, rgb, ex, t.diameter))
        elif t.kind == "masked":
            assert t.cls is not None and t.mask_path is not None
            try:
                m = _mask_levels(t.mask_path)
            except Exception as e:  # noqa: BLE001
                res.error = f"{t.mask_path}: {type(e).__name__}: {e}"
                return res
            if m.shape != rgb.shape[:2]:
                res.error = f"{t.rel}: mask shape {m.shape} differs from image {rgb.shape[:2]}"
                return res
            h, w = m.shape
            ex = M.check_mask(m, point=(h / 2, w / 2))
            res.crops.append(_crop_from(0, t.cls, rgb, ex, t.diameter))
        elif t.kind == "components":
            assert t.cls is not None and t.mask_path is not None
            m = _mask_levels(t.mask_path)
            if m.shape != rgb.shape[:2]:
                res.error = f"{t.rel}: mask shape {m.shape} differs from image {rgb.shape[:2]}"
                return res
            lb = measure.label(m)
            min_area = math.pi / 4 * (0.6 * t.diameter) ** 2
            k = 0
            for p in measure.regionprops(lb):
                if p.area < 0.15 * min_area:  # mask noise
                    continue
                ex = M.check_mask(lb == p.label, max_border=0.0)
                if ex.ok and p.area < min_area:
                    ex = M.reject(M.RejectReason.SIZE)
                res.crops.append(_crop_from(k, t.cls, rgb, ex, t.diameter))
                k += 1
            if k == 0:
                res.crops.append(_Crop(0, t.cls, None, M.RejectReason.EMPTY.value))
        elif t.kind == "points":
            assert t.points is not None
            labels = M.label_field(rgb, t.diameter)
            slices = ndi.find_objects(labels)
            allp = np.array([(r, c) for r, c, _ in t.points], float).reshape(-1, 2)
            for i, (r, c, cls) in enumerate(t.points):
                if cls < 0:
                    continue
                others = np.delete(allp, i, axis=0)
                ex = M.pick_cell(labels, (r, c), t.diameter, other_points=others, slices=slices)
                res.crops.append(_crop_from(i, cls, rgb, ex, t.diameter))
        elif t.kind == "boxes":
            _run_boxes(t, rgb, res)
        else:
            raise ValueError(f"unknown task kind {t.kind!r}")
    except Exception as e:  # noqa: BLE001 - report, never abort the whole import
        res.error = f"{t.rel}: failed: {type(e).__name__}: {e}"
    return res


def _run_boxes(t: _Task, rgb: np.ndarray, res: _Result) -> None:
    """One sample per box of a bank class; boxes of class -1 are neighbours only."""
    from ...realfields import (
        box_iou,  # not at module level: realfields imports the bank
    )

    assert t.boxes is not None
    h, w = rgb.shape[:2]
    labels: np.ndarray | None = None
    cells: np.ndarray | None = None
    slices: list | None = None
    centres = np.array([((b[0] + b[2]) / 2, (b[1] + b[3]) / 2) for b in t.boxes], float).reshape(-1, 2)
    for i, (y0, x0, y1, x1, cls) in enumerate(t.boxes):
        if cls < 0:
            continue
        kind = M.kind_of(cls)
        if kind == "rbc":
            if labels is None:
                labels = M.label_field(rgb, t.diameter)
                slices = ndi.find_objects(labels)
            others = np.delete(centres, i, axis=0)
            ex = M.pick_cell(labels, tuple(centres[i]), t.diameter, other_points=others, slices=slices)
            if ex.ok and ex.window is not None:
                ys, xs = np.nonzero(ex.mask)
                oy, ox = ex.window[0].start, ex.window[1].start
                if box_iou((oy + ys.min(), ox + xs.min(), oy + ys.max() + 1, ox + xs.max() + 1), (y0, x0, y1, x1)) < 0.5:
                    ex = M.reject(M.RejectReason.BOX)
            if t.tight_boxes and ex.reason == M.RejectReason.SEVERAL:
                if cells is None:
                    cells = _cell_pixels(rgb)
                ex = _rbc_in_box(cells, t.boxes, i)
            res.crops.append(_crop_from(i, cls, rgb, ex, t.diameter))
            continue
        if kind == "wbc":
            pad = int(M.WBC_BOX_MARGIN * t.diameter) + 2
        else:
            pad = int(max(y1 - y0, x1 - x0) * 0.5) + 2
        cy0, cy1, cx0, cx1 = max(0, y0 - pad), min(h, y1 + pad), max(0, x0 - pad), min(w, x1 + pad)
        if cy1 - cy0 < 4 or cx1 - cx0 < 4:
            res.crops.append(_Crop(i, cls, None, M.RejectReason.EMPTY.value))
            continue
        crop = rgb[cy0:cy1, cx0:cx1]
        pt = ((y0 + y1) / 2 - cy0, (x0 + x1) / 2 - cx0)
        if kind == "wbc":
            ex = M.extract_wbc(crop, rbc_diameter=t.diameter)
            if ex.ok:
                cy, cx = np.argwhere(ex.mask).mean(0) + (cy0, cx0)
                if not (y0 <= cy <= y1 and x0 <= cx <= x1):  # the cell found is not the boxed one
                    ex = M.reject(M.RejectReason.BOX)
        elif cls == BloodClass.PLATELET_CLUMP:
            ex = _extract_clump(crop, t.diameter)
        else:
            ex = M.extract_platelet(crop, t.diameter, point=pt)
        res.crops.append(_crop_from(i, cls, crop, ex, t.diameter))


def _cell_pixels(rgb: np.ndarray) -> np.ndarray:
    """Pixels unlike the glass, without filling the holes (glass pockets between touching cells)."""
    from skimage import color

    return M.unlike_glass(color.rgb2lab(M._smooth(rgb)), k=30.0, bright_fraction=0.15)


def _rbc_in_box(cells: np.ndarray, boxes: list[tuple[int, int, int, int, int]], i: int) -> M.Extraction:
    """An RBC where touching cells could not be told apart: the cell pixels within the disc its
    tight box draws (pale centre filled), when the box is roundish and clear of the frame, no other
    RBC box overlaps it and the cell fills most of the disc."""
    from ...realfields import (
        box_iou,  # not at module level: realfields imports the bank
    )

    y0, x0, y1, x1, _ = boxes[i]
    h, w = cells.shape
    bh, bw = y1 - y0, x1 - x0
    if y0 <= 1 or x0 <= 1 or y1 >= h - 1 or x1 >= w - 1:
        return M.reject(M.RejectReason.BORDER)
    if min(bh, bw) < 6 or not 0.75 <= bh / bw <= 1.33:
        return M.reject(M.RejectReason.SEVERAL)
    if any(j != i and b[4] >= 0 and M.kind_of(b[4]) == "rbc" and box_iou(b[:4], boxes[i][:4]) > 0.15
           for j, b in enumerate(boxes)):
        return M.reject(M.RejectReason.SEVERAL)  # overlapping cells
    yy, xx = np.mgrid[y0:y1, x0:x1]
    disc = ((yy + 0.5 - (y0 + y1) / 2) / (bh / 2)) ** 2 + ((xx + 0.5 - (x0 + x1) / 2) / (bw / 2)) ** 2 <= 1
    cell = ndi.binary_fill_holes(cells[y0:y1, x0:x1] & disc)
    lab, n = ndi.label(cell)
    if n == 0:
        return M.reject(M.RejectReason.EMPTY)
    cell = lab == 1 + int(np.argmax(ndi.sum(cell, lab, range(1, n + 1))))
    if cell.sum() < 0.85 * disc.sum():
        return M.reject(M.RejectReason.BOX)
    return M.Extraction(cell, None, (slice(y0, y1), slice(x0, x1)))


def _extract_clump(rgb: np.ndarray, diameter: float) -> M.Extraction:
    """A platelet clump without a mask: purple objects near the centre merged and closed."""
    from skimage import filters, morphology

    f = filters.gaussian(rgb.astype(float) / 255, sigma=1, channel_axis=-1)
    purple = M.nuclear_mask(f, min_size=3, floor=0.06)
    if not purple.any():
        return M.reject(M.RejectReason.EMPTY)
    r = max(2, int(0.15 * diameter))
    merged = morphology.closing(ndi.binary_dilation(purple, iterations=r), morphology.disk(r))
    merged = ndi.binary_erosion(merged, iterations=max(1, r - 1))
    h, w = purple.shape
    return M.check_mask(merged, point=(h / 2, w / 2), max_border=0.0)


# ----------------------------------------------------------------------------- helpers
