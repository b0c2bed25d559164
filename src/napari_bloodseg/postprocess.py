"""Clean-up of the class map the network draws, at the model's scale.

The network draws WBCs a little fat, with thin WBC-class spurs along the RBCs that touch them: on
expert WBC masks of three annotation sets (Zheng DS1 and DS2, the BCCD WBC masks) 99 % of the true
WBC pixels are found but only 72-81 % of the predicted ones are WBC. :func:`tighten_wbcs` opens
the WBC regions (removing spurs thinner than ``opening`` RBC diameters), shaves a rim of
``erosion`` RBC diameters, and gives each removed pixel the class of the nearest non-WBC pixel
(glass, or the RBC the spur lay along).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

from .classes import WBC_CLASSES

WBC_IDS = np.array([int(c) for c in WBC_CLASSES])
WBC_OPENING = 0.25  # radius of the opening, x RBC diameter
WBC_EROSION = 0.04  # rim shaved off after it, x RBC diameter


def _inside(mask: np.ndarray, r: float) -> np.ndarray:
    """Pixels of ``mask`` farther than ``r`` from its edge (all of it when it has no edge)."""
    return ndi.distance_transform_edt(mask) > r if not mask.all() else mask


def _windows(mask: np.ndarray, pad: int, min_area: float = 0.0, border_is_edge: bool = True):
    """(window, part) per connected part of ``mask``: its bounding box grown by ``pad`` (clipped to
    the image), and the part's pixels in it. Parts under ``min_area`` pixels are left out, except
    at the image border when it is not an edge (the part may go on beyond it)."""
    comp, n = ndi.label(mask)
    h, w = mask.shape
    area = np.bincount(comp.ravel(), minlength=n + 1) if min_area > 0 else None
    for i, sl in enumerate(ndi.find_objects(comp), 1):
        if sl is None:
            continue
        if area is not None and area[i] < min_area:
            at_border = sl[0].start == 0 or sl[1].start == 0 or sl[0].stop == h or sl[1].stop == w
            if border_is_edge or not at_border:
                continue
        win = (slice(max(0, sl[0].start - pad), min(h, sl[0].stop + pad)),
               slice(max(0, sl[1].start - pad), min(w, sl[1].stop + pad)))
        yield win, comp[win] == i


def shrink_mask(mask: np.ndarray, opening: float, erosion: float = 0.0, border_is_edge: bool = False) -> np.ndarray:
    """``mask`` opened by a disc of radius ``opening`` px (parts and spurs thinner than it go), then
    eroded by ``erosion`` px. By distance transforms in a window round each part, so the cost does
    not grow with the radius. The mask continues beyond the image border unless ``border_is_edge``
    (then a strip along the border is as thin as it looks)."""
    keep = np.zeros_like(mask, dtype=bool)
    pad = math.ceil(opening + erosion) + 2
    # a part that cannot hold the disc goes whole; the disc holds at least pi (r - 1/sqrt 2)^2 pixels
    min_area = math.pi * max(0.0, opening - math.sqrt(0.5)) ** 2
    for win, part in _windows(mask, pad, min_area, border_is_edge):
        k = np.pad(mask[win], pad, mode="constant" if border_is_edge else "edge")
        if opening > 0:
            core = _inside(k, opening)
            k = (ndi.distance_transform_edt(~core) <= opening) & k if core.any() else np.zeros_like(k)
        if erosion > 0 and k.any():
            k = _inside(k, erosion)
        keep[win] |= k[pad:-pad, pad:-pad] & part
    return keep


def tighten_wbcs(labels: np.ndarray, rbc_diameter: float, opening: float = WBC_OPENING,
                 erosion: float = WBC_EROSION) -> np.ndarray:
    """``labels`` (uint8 class map) with its WBC regions tightened; a new array where anything
    changed. ``rbc_diameter``: healthy-RBC diameter in pixels of ``labels``."""
    if opening < 0 or erosion < 0:
        raise ValueError(f"opening and erosion must be >= 0 (RBC diameters), got {opening}, {erosion}")
    wbc = np.isin(labels, WBC_IDS)
    if not wbc.any() or (opening == 0 and erosion == 0):
        return labels
    r_open, r_ero = opening * rbc_diameter, erosion * rbc_diameter
    removed = wbc & ~shrink_mask(wbc, r_open, r_ero)
    if not removed.any():
        return labels
    out = labels.copy()
    # a removed pixel lies within r_open + r_ero of a non-WBC pixel, so the window holds its nearest
    for win, part in _windows(removed, math.ceil(r_open + r_ero) + 2):
        m = wbc[win]
        if m.all():  # no non-WBC pixel in reach: glass
            out[win][part] = 0
            continue
        idx = ndi.distance_transform_edt(m, return_distances=False, return_indices=True)
        out[win][part] = labels[win][tuple(idx)][part]
    return out
