"""Training labels derived from annotated real fields (boxes, points), for whole-field training.

Real fields teach what composites cannot: the glass, stain, optics and camera of other labs. Their
annotations are boxes or points, so the label map is partial:
- glass far from any cell → background; cell bodies outside WBC boxes → healthy RBC (none of
  these sources has malaria) or, for small purple bodies, ``NOT_WBC`` (platelet or debris);
- inside a WBC box, the WBC extracted by the bank's own mask extraction → its type, or
  ``SOME_WBC`` when the source gives no type; the rest of the box → ignore;
- cell edges and anything unsure → ignore (255).
A field with an expert WBC mask (Zheng, BCCD WBC masks) takes the mask instead: the mask's box is
the WBC box, the mask (one pixel in from its edge) is the field's WBC type, its edge and the rest
of the box are ignored, and the labels outside the box are derived as above (what a user's
correction of a field would hold: the WBC drawn, the rest the obvious glass and RBCs).
The field is first rescaled to the training scale (healthy RBC 36 px) from its truth diameter.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage import filters, measure, morphology

from .bank import masks as M
from .classes import IGNORE_INDEX, NOT_WBC, SOME_WBC, WBC_CLASSES, BloodClass
from .realfields import RealField

TRAIN_RBC_DIAMETER = 36.0


def optical_density(rgb: np.ndarray, d: float) -> np.ndarray:
    """Per-channel optical density against the local glass brightness (the brightest level
    within about two RBC diameters, smoothed): flat-fields vignetting and uneven light."""
    f = ndi.gaussian_filter(rgb.astype(np.float32), (1, 1, 0)) + 1.0
    size = max(5, int(2 * d) | 1)
    small = max(1, int(d / 6))
    sub = f[::small, ::small]
    glass = np.stack([ndi.maximum_filter(sub[..., c], size=max(3, size // small)) for c in range(3)], -1)
    glass = ndi.gaussian_filter(glass, (max(1.0, d / small / 2),) * 2 + (0,))
    glass = np.repeat(np.repeat(glass, small, 0), small, 1)[: f.shape[0], : f.shape[1]]
    return np.log(np.maximum(glass, f) / f)


def _loose_box(box, d: float, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """(y0, x0, y1, x1) of a WBC box widened by WBC_BOX_MARGIN RBC diameters, clipped to ``shape``."""
    r0, c0, r1, c1 = box
    m = M.WBC_BOX_MARGIN * d
    return (max(0, int(r0 - m)), max(0, int(c0 - m)),
            min(shape[0], int(np.ceil(r1 + m))), min(shape[1], int(np.ceil(c1 + m))))


def _fill_cell_centres(fg: np.ndarray, d: float) -> tuple[np.ndarray, np.ndarray]:
    """(``fg`` with its cell-centre holes filled, the other holes). A pale RBC shows only its rim, so
    the hole in it is the cell; a hole larger than one RBC or not round (the glass pocket between
    touching cells) is glass, which filling every hole would teach to call RBC."""
    holes = ndi.binary_fill_holes(fg) & ~fg
    lab = measure.label(holes)
    cell, unsure = np.zeros_like(fg), np.zeros_like(fg)
    rbc_area = np.pi * (d / 2) ** 2
    for r in measure.regionprops(lab):
        if r.area <= 1.1 * rbc_area and r.solidity >= 0.75:
            cell[lab == r.label] = True
        elif r.area < 0.3 * rbc_area:  # a ragged small hole: a cell's centre or a gap, who knows
            unsure[lab == r.label] = True
    return fg | cell, holes & ~cell & ~unsure


def derive_labels(rgb: np.ndarray, wbc_boxes: list, wbc_types: list, d: float = TRAIN_RBC_DIAMETER,
                  threshold_outside_boxes: bool = False, open_plasma_is_glass: bool = False) -> np.ndarray:
    """Partial class map of an RGB field at RBC diameter ``d`` px with its WBC boxes (see module doc).
    ``threshold_outside_boxes``: the cell/glass threshold from the pixels outside the WBC boxes only
    (for fields a WBC fills a good part of, where it would otherwise split WBC from RBCs).
    ``open_plasma_is_glass``: every stretch between cells open over more than two RBC areas is glass,
    however pale (for pale sources such as wbc_rpi, whose plasma is hardly clearer than its cells; on
    BCCD it would call pale rimless RBCs glass, so it is off unless asked for)."""
    h, w = rgb.shape[:2]
    out = np.full((h, w), IGNORE_INDEX, np.uint8)
    dark = rgb.max(-1) < 35  # eyepiece vignette and black frame: neither glass nor cells
    od = optical_density(rgb, d)
    total = od.sum(-1)
    valid = ~ndi.binary_dilation(dark, iterations=3)
    in_box = np.zeros((h, w), bool)
    for box in wbc_boxes:
        y0, x0, y1, x1 = _loose_box(box, d, (h, w))
        in_box[y0:y1, x0:x1] = True
    sample = total[valid & ~in_box] if threshold_outside_boxes else total[valid]
    if sample.size == 0:  # the WBC's box covers the whole field: threshold on all of it
        sample = total[valid]
    if sample.size == 0:
        return out
    try:
        t = max(0.12, float(filters.threshold_otsu(sample)))
    except ValueError:
        return out
    fg = morphology.opening((total > t) & valid, morphology.disk(2))
    fg, enclosed = _fill_cell_centres(fg, d)
    # glass only where clearly clear: pale cells lie between glass and the threshold (left unlabelled);
    # glass enclosed by a ring of touching cells is glass too, however pale the field
    glass = (total < 0.45 * t) & ~fg | enclosed
    if open_plasma_is_glass:
        open_ = measure.label(~fg & ~enclosed & valid)
        sizes = np.bincount(open_.ravel())
        sizes[0] = 0
        glass |= sizes[open_] > 2 * np.pi * (d / 2) ** 2
    glass = ndi.binary_erosion(glass & valid, iterations=max(2, int(0.08 * d)))
    out[glass | ndi.binary_erosion(dark, iterations=3)] = BloodClass.BACKGROUND
    # nuclei and platelet granules absorb red; RBCs hardly do
    red = od[..., 0]
    purple = (red > max(0.25, 2.5 * float(np.median(red[fg])) if fg.any() else 0.25)) & fg
    purple = morphology.remove_small_objects(purple, max_size=3)
    rbc_area = np.pi * (d / 2) ** 2
    inner = ndi.binary_erosion(fg, iterations=max(1, int(0.06 * d)))
    lb = measure.label(fg & ~in_box)
    for r in measure.regionprops(lb):
        rr, cc = r.coords[:, 0], r.coords[:, 1]
        body = inner[rr, cc]
        big = r.area >= 0.35 * rbc_area and purple[rr, cc].mean() < 0.3
        out[rr[body], cc[body]] = BloodClass.HEALTHY_RBC if big else NOT_WBC
    # purple bodies outside WBC boxes: platelets (or unboxed debris), not WBCs
    out[ndi.binary_dilation(purple, iterations=2) & ~in_box & (out != BloodClass.BACKGROUND)] = NOT_WBC
    out[in_box] = IGNORE_INDEX
    for (r0, c0, r1, c1), t_ in zip(wbc_boxes, wbc_types):
        y0, x0, y1, x1 = _loose_box((r0, c0, r1, c1), d, (h, w))
        if y1 - y0 < 8 or x1 - x0 < 8:
            continue
        ex = M.extract_wbc(rgb[y0:y1, x0:x1], rbc_diameter=d, max_border=0.3)
        if not ex.ok:
            continue
        cell = ndi.binary_erosion(ex.mask, iterations=1)
        if not cell.any():
            continue
        cy, cx = np.argwhere(cell).mean(0) + (y0, x0)
        if not (r0 <= cy <= r1 and c0 <= cx <= c1):  # the box holds another cell than the one found
            continue
        region = out[y0:y1, x0:x1]
        region[cell] = int(t_) if t_ is not None else SOME_WBC
    return out


def field_pair(field: RealField, d: float = TRAIN_RBC_DIAMETER,
               open_plasma_is_glass: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(RGB, partial class map) of a real field rescaled to RBC diameter ``d`` (see module doc;
    ``open_plasma_is_glass`` as in :func:`derive_labels`)."""
    if not field.rbc_diameter:
        raise ValueError(f"{field.source}:{field.name} has no RBC diameter to rescale by")
    from .infer import _resize_uint8

    rgb = field.image()
    s = d / field.rbc_diameter
    h, w = rgb.shape[:2]
    nh, nw = max(8, round(h * s)), max(8, round(w * s))
    if (nh, nw) != (h, w):
        rgb = _resize_uint8(rgb, nh, nw, smooth=True)
    boxes = [tuple(v * s for v in b) for b in field.wbc_boxes]
    true = field.wbc_mask()
    if true is None:
        return rgb, derive_labels(rgb, boxes, field.wbc_types, d, open_plasma_is_glass=open_plasma_is_glass)
    if true.shape != (nh, nw):
        true = _resize_uint8(true.astype(np.uint8) * 255, nh, nw, smooth=True) > 127
    if not true.any():
        raise ValueError(f"{field.source}:{field.name}: its WBC mask is empty")
    rows, cols = np.nonzero(true)
    box = (float(rows.min()), float(cols.min()), float(rows.max() + 1), float(cols.max() + 1))
    out = derive_labels(rgb, [*boxes, box], [*field.wbc_types, None], d, threshold_outside_boxes=True,
                        open_plasma_is_glass=open_plasma_is_glass)
    y0, x0, y1, x1 = _loose_box(box, d, out.shape)  # the WBC derive_labels extracted there gives way to the mask
    region = out[y0:y1, x0:x1]
    region[region == SOME_WBC] = IGNORE_INDEX
    out[ndi.binary_dilation(true, iterations=1)] = IGNORE_INDEX
    out[ndi.binary_erosion(true, iterations=1)] = SOME_WBC if field.wbc_type is None else int(field.wbc_type)
    return rgb, out


def wbc_types_from_boxes(labels: np.ndarray, boxes: list[tuple[float, float, float, float, int]]
                         ) -> tuple[np.ndarray, int, int]:
    """A class map whose WBC pixels inside each WBC-type box take the box's type (the correction an
    annotated field gives for free): (new map, boxes applied, WBC-type boxes with no WBC pixel in the
    map). Boxes are (row0, col0, row1, col1, class id); boxes of other classes are left alone."""
    wbc_ids = [int(c) for c in WBC_CLASSES]
    out = np.array(labels, copy=True)
    h, w = out.shape
    applied = empty = 0
    for r0, c0, r1, c1, cls in boxes:
        if int(cls) not in wbc_ids:
            continue
        y0, x0 = max(0, int(np.floor(r0))), max(0, int(np.floor(c0)))
        y1, x1 = min(h, int(np.ceil(r1))), min(w, int(np.ceil(c1)))
        region = out[y0:y1, x0:x1]
        wbc = np.isin(region, wbc_ids)
        if not wbc.any():
            empty += 1
            continue
        region[wbc] = int(cls)
        applied += 1
    return out, applied, empty
