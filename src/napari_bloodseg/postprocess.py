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
    pad = int(math.ceil(r_open + r_ero)) + 2
    comp, _ = ndi.label(wbc)
    out = labels
    h, w = labels.shape
    for i, sl in enumerate(ndi.find_objects(comp), 1):
        if sl is None:
            continue
        win = (slice(max(0, sl[0].start - pad), min(h, sl[0].stop + pad)),
               slice(max(0, sl[1].start - pad), min(w, sl[1].stop + pad)))
        m = wbc[win]
        # the image border is no WBC edge: the map continues the border pixels beyond it
        mp = np.pad(m, pad, mode="edge")
        # opening and erosion by distance transforms: the cost does not grow with the radius
        keep = mp
        if r_open > 0:
            core = _inside(mp, r_open)
            keep = (ndi.distance_transform_edt(~core) <= r_open) & mp if core.any() else np.zeros_like(mp)
        if r_ero > 0 and keep.any():
            keep = _inside(keep, r_ero)
        keep = keep[pad:-pad, pad:-pad]
        removed = (comp[win] == i) & ~keep
        if not removed.any():
            continue
        if out is labels:
            out = labels.copy()
        lw = labels[win]
        if m.all():  # no non-WBC pixel in reach: glass
            fill = np.zeros_like(lw)
        else:
            idx = ndi.distance_transform_edt(m, return_distances=False, return_indices=True)
            fill = lw[tuple(idx)]
        out[win][removed] = fill[removed]
    return out
