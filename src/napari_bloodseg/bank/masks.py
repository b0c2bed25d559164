"""Cell masks for crops and fields that come without one (scikit-image, no learning).

Every extractor returns an :class:`Extraction`: a boolean mask of the one cell asked for, or the
reason the crop was rejected (:class:`RejectReason`). Colour work happens in CIE Lab on a lightly
smoothed image; "nuclear" (purple, haematoxylin/azure-stained) pixels are those whose blue-minus-
green score lies in the top class of a three-class Otsu split.

- :func:`extract_wbc`: centred leukocyte. Nucleus (purple), convex hull of its lobes as the seed,
  watershed on the distance transform of the non-background mask to cut off touching RBCs, then a
  per-image four-class colour model (nucleus, cytoplasm, RBC, background; Gaussian in Lab, fitted
  on the first result) to trim RBC pixels that overlap without a neck.
- :func:`extract_platelet`: the small purple object nearest the centre.
- :func:`extract_rbc`: the cell at the centre (or at a point) on a light or black surround.
- :func:`label_field`: all cells of a field (for centroid or box annotations).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Literal

import numpy as np
from scipy import ndimage as ndi
from skimage import color, feature, filters, measure, morphology, segmentation

from ..classes import PLATELET_CLASSES, RBC_CLASSES, WBC_CLASSES, BloodClass

CellKind = Literal["wbc", "platelet", "rbc"]
Surround = Literal["light", "dark"]
SURROUNDS: tuple[str, ...] = ("light", "dark")


#: How far a WBC box is widened before the leukocyte is looked for in it (x RBC diameter): boxes are drawn loosely.
WBC_BOX_MARGIN = 0.35


class RejectReason(str, Enum):
    """Why a crop gave no sample (counted per reason in import reports)."""

    EMPTY = "empty mask"
    BORDER = "cell touches the crop border"
    SEVERAL = "several cells"
    OFF_CENTRE = "no cell at the centre"
    SIZE = "implausible size"
    BOX = "mask does not match the box"
    AMBIGUOUS = "ambiguous class label"
    UNLABELLED = "no class label"


@dataclass(frozen=True)
class Extraction:
    """A cell mask, or why there is none."""

    mask: np.ndarray | None
    reason: RejectReason | None = None
    #: (rows, cols) slices of the input the mask covers; None = the whole input
    window: tuple[slice, slice] | None = None

    @property
    def ok(self) -> bool:
        return self.mask is not None and self.reason is None


def reject(reason: RejectReason) -> Extraction:
    return Extraction(None, reason)


def kind_of(cls: int) -> CellKind:
    """'wbc', 'platelet' or 'rbc' for a cell class id; ValueError for background."""
    c = BloodClass(int(cls))
    if c in WBC_CLASSES:
        return "wbc"
    if c in PLATELET_CLASSES:
        return "platelet"
    if c in RBC_CLASSES:
        return "rbc"
    raise ValueError(f"no cell kind for class {int(cls)} ({c.label}); allowed: cell classes 1-9")


# ----------------------------------------------------------------------------- helpers


class _Gauss:
    """A Gaussian colour model (full covariance, ridge-regularised)."""

    def __init__(self, pts: np.ndarray, reg: float = 0.5) -> None:
        self.mu = pts.mean(0)
        cov = np.cov(pts.T) + np.eye(pts.shape[1]) * reg
        self.inv = np.linalg.inv(cov)
        self.logdet = float(np.linalg.slogdet(cov)[1])

    def d2(self, x: np.ndarray) -> np.ndarray:
        d = x - self.mu
        return np.einsum("...i,ij,...j->...", d, self.inv, d)

    def ll(self, x: np.ndarray) -> np.ndarray:
        return -0.5 * self.d2(x) - 0.5 * self.logdet


def _sample(img: np.ndarray, mask: np.ndarray, n: int = 4000) -> np.ndarray:
    pts = img[mask]
    if len(pts) > n:
        pts = pts[np.random.default_rng(0).choice(len(pts), n, replace=False)]
    return pts


def as_rgb(img: np.ndarray) -> np.ndarray:
    """Any image array → RGB uint8 (H, W, 3); grey is repeated, alpha dropped, 16-bit scaled."""
    a = np.asarray(img)
    if a.ndim == 2:
        a = np.stack([a] * 3, -1)
    if a.ndim != 3 or a.shape[-1] not in (1, 3, 4):
        raise ValueError(f"expected an RGB(A) or grey image, got shape {a.shape}")
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, -1)
    a = a[..., :3]
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.uint16:
        return (a // 257).astype(np.uint8)
    if np.issubdtype(a.dtype, np.floating):
        scale = 255.0 if a.max(initial=0) <= 1.0 else 1.0
        return np.clip(a * scale, 0, 255).astype(np.uint8)
    return np.clip(a, 0, 255).astype(np.uint8)


def _smooth(rgb: np.ndarray) -> np.ndarray:
    return filters.gaussian(rgb.astype(np.float64) / 255.0, sigma=1, channel_axis=-1)


def nuclear_mask(f: np.ndarray, min_size: int = 10, floor: float = 0.0) -> np.ndarray:
    """Purple (nucleus / platelet granulomere) pixels of a smoothed float RGB image.

    Blue minus green above the top threshold of a three-class Otsu split (and above ``floor``,
    which keeps images without any purple object from yielding one).
    """
    s = f[..., 2] - f[..., 1]
    try:
        t = filters.threshold_multiotsu(s, 3)[-1]
    except ValueError:  # flat image
        return np.zeros(s.shape, bool)
    m = morphology.opening(s > max(t, floor), morphology.disk(1))
    return morphology.remove_small_objects(m, max_size=min_size)


def background_model(lab: np.ndarray, bright_fraction: float = 0.2) -> _Gauss:
    """Colour model of the plasma/slide background: the brightest pixels."""
    L = lab[..., 0]
    return _Gauss(_sample(lab, L >= np.percentile(L, 100 * (1 - bright_fraction))))


def unlike_glass(lab: np.ndarray, k: float = 30.0, bright_fraction: float = 0.2) -> np.ndarray:
    """Pixels whose squared Mahalanobis distance to the background (the brightest pixels) exceeds k."""
    return background_model(lab, bright_fraction).d2(lab) > k


def foreground(lab: np.ndarray, k: float = 30.0, bright_fraction: float = 0.2) -> np.ndarray:
    """Non-background pixels (:func:`unlike_glass`), specks opened away, holes filled."""
    fg = unlike_glass(lab, k, bright_fraction)
    fg = morphology.opening(fg, morphology.disk(1))
    return ndi.binary_fill_holes(fg)


def border_fraction(mask: np.ndarray) -> float:
    """Fraction of the mask's outline that lies on the image frame (0 = free of the border)."""
    if not mask.any():
        return 0.0
    on_frame = mask[0].sum() + mask[-1].sum() + mask[1:-1, 0].sum() + mask[1:-1, -1].sum()
    outline = segmentation.find_boundaries(np.pad(mask, 1), mode="inner")[1:-1, 1:-1].sum()
    return float(on_frame) / max(1.0, float(outline))


def clean_mask(mask: np.ndarray, point: tuple[float, float] | None = None) -> np.ndarray:
    """Fill holes; keep the component at ``point`` (row, col) or the largest one."""
    m = ndi.binary_fill_holes(np.asarray(mask, bool))
    lb = measure.label(m)
    if lb.max() <= 1:
        return m
    if point is not None:
        y, x = int(round(point[0])), int(round(point[1]))
        if 0 <= y < m.shape[0] and 0 <= x < m.shape[1] and lb[y, x]:
            return lb == lb[y, x]
    sizes = np.bincount(lb.ravel())
    sizes[0] = 0
    return lb == sizes.argmax()


def check_mask(
    mask: np.ndarray,
    point: tuple[float, float] | None = None,
    max_border: float = 0.02,
    min_area: int = 16,
) -> Extraction:
    """Validate a given (e.g. expert) mask: one filled component, free of the frame."""
    m = clean_mask(np.asarray(mask) > 0, point)
    if m.sum() < min_area:
        return reject(RejectReason.EMPTY)
    if border_fraction(m) > max_border:
        return reject(RejectReason.BORDER)
    return Extraction(m)


def _size_ok(mask: np.ndarray, rbc_diameter: float | None, lo: float, hi: float) -> bool:
    if rbc_diameter is None:
        return True
    d = 2.0 * np.sqrt(mask.sum() / np.pi)
    return lo * rbc_diameter <= d <= hi * rbc_diameter


# ----------------------------------------------------------------------------- WBC


def extract_wbc(
    rgb: np.ndarray,
    rbc_diameter: float | None = None,
    max_border: float = 0.02,
    refine_colour: bool = True,
    ring_width: float = 0.3,
    lobe_area: float = 0.06,
) -> Extraction:
    """Mask of the leukocyte nearest the centre of ``rgb`` (nucleus + cytoplasm).

    ``rbc_diameter`` (px in this image) sets the size scales; default a quarter of the crop.
    """
    rgb = as_rgb(rgb)
    h, w = rgb.shape[:2]
    d = float(rbc_diameter) if rbc_diameter else min(h, w) / 4.0
    f = _smooth(rgb)
    lab = color.rgb2lab(f)
    nuc_all = nuclear_mask(f, min_size=max(10, int(0.01 * d * d)))
    lab_n = measure.label(nuc_all)
    if lab_n.max() == 0:
        return reject(RejectReason.EMPTY)
    props = measure.regionprops(lab_n)
    spread = 0.25 * min(h, w)

    def centrality(p) -> float:
        r = np.hypot(p.centroid[0] - h / 2, p.centroid[1] - w / 2)
        return p.area * np.exp(-((r / spread) ** 2))

    best = max(props, key=centrality)
    if np.hypot(best.centroid[0] - h / 2, best.centroid[1] - w / 2) > 0.35 * min(h, w):
        return reject(RejectReason.OFF_CENTRE)
    nuc = lab_n == best.label
    dist_nuc = ndi.distance_transform_edt(~nuc)
    for p in props:  # further lobes of the same nucleus
        if p.label != best.label and p.area > lobe_area * d * d:
            if dist_nuc[lab_n == p.label].min() < 0.35 * d:
                nuc |= lab_n == p.label

    fg = foreground(lab)
    fg = ndi.binary_fill_holes(morphology.opening(fg, morphology.disk(1))) | nuc
    hull = morphology.convex_hull_image(nuc) & fg
    # geometric split from touching cells: watershed on the distance transform
    dt = ndi.distance_transform_edt(fg)
    peaks = feature.peak_local_max(
        dt, min_distance=max(3, int(d / 4)), threshold_abs=0.15 * d, labels=measure.label(fg)
    )
    grow = ndi.binary_dilation(hull, iterations=max(2, int(0.1 * d)))
    markers = np.zeros((h, w), np.int32)
    markers[~fg] = 1
    k = 3
    for y, x in peaks:
        if not grow[y, x]:
            markers[y, x] = k
            k += 1
    markers[hull] = 2
    wbc = segmentation.watershed(-dt, markers) == 2
    wbc = ndi.binary_fill_holes(morphology.opening(wbc, morphology.disk(2)) | nuc)
    geometric = wbc
    if refine_colour:  # trim RBC-coloured pixels (overlaps without a neck)
        ring = ndi.binary_dilation(hull, iterations=max(2, int(ring_width * d)))
        cyt = ndi.binary_erosion(wbc, iterations=2) & ~ndi.binary_dilation(nuc_all) & ring
        rbc = fg & ~ndi.binary_dilation(wbc, iterations=3) & ~nuc_all
        bgs = ndi.binary_erosion(~fg, iterations=2)
        if cyt.sum() >= 30 and rbc.sum() >= 100 and bgs.sum() >= 30:
            models = [_Gauss(_sample(lab, m)) for m in (nuc, cyt, rbc, bgs)]
            cls = np.stack([m.ll(lab) for m in models]).argmax(0)
            cand = morphology.opening(geometric & ((cls <= 1) | nuc), morphology.disk(2))
            lb = measure.label(cand)
            ids = np.unique(lb[nuc & cand])
            ids = ids[ids > 0]
            if len(ids):
                wbc = np.isin(lb, ids)
                wbc = ndi.binary_fill_holes(morphology.closing(wbc, morphology.disk(2)))
    # purple bits that are not this nucleus (platelets stuck to the cell) are cut off
    stray = nuc_all & ~ndi.binary_dilation(nuc, iterations=2)
    if stray.any():
        wbc &= ~ndi.binary_dilation(stray, iterations=2)
        wbc = morphology.opening(wbc, morphology.disk(2)) | nuc
    wbc = clean_mask(wbc, best.centroid)
    if wbc.sum() < 16:
        return reject(RejectReason.EMPTY)
    if border_fraction(wbc) > max_border:
        return reject(RejectReason.BORDER)
    if not _size_ok(wbc, rbc_diameter, 0.6, 4.0):
        return reject(RejectReason.SIZE)
    return Extraction(wbc)


# ----------------------------------------------------------------------------- platelet


def extract_platelet(
    rgb: np.ndarray,
    rbc_diameter: float | None = None,
    point: tuple[float, float] | None = None,
    max_border: float = 0.0,
) -> Extraction:
    """Mask of the small purple object nearest the centre (or ``point``, row/col)."""
    rgb = as_rgb(rgb)
    h, w = rgb.shape[:2]
    d = float(rbc_diameter) if rbc_diameter else min(h, w) / 4.0
    f = _smooth(rgb)
    purple = nuclear_mask(f, min_size=max(3, int(0.004 * d * d)), floor=0.06)
    lb = measure.label(purple)
    if lb.max() == 0:
        return reject(RejectReason.EMPTY)
    cy, cx = point if point is not None else (h / 2, w / 2)
    max_area = np.pi / 4 * (1.1 * d) ** 2  # giant platelets reach a red cell's size
    cands = [p for p in measure.regionprops(lb) if p.area <= max_area]
    if not cands:
        return reject(RejectReason.SIZE)
    best = min(cands, key=lambda p: np.hypot(p.centroid[0] - cy, p.centroid[1] - cx))
    if np.hypot(best.centroid[0] - cy, best.centroid[1] - cx) > max(0.6 * d, 0.2 * min(h, w)):
        return reject(RejectReason.OFF_CENTRE)
    core = lb == best.label
    # granules clustered in one platelet: merge purple bits close to the core, then its hull
    near = ndi.binary_dilation(core, iterations=max(1, int(0.06 * d)))
    for p in cands:
        if p.label != best.label and near[lb == p.label].any():
            core |= lb == p.label
    mask = morphology.convex_hull_image(core)
    mask = ndi.binary_dilation(mask, iterations=1)
    if border_fraction(mask) > max_border:
        return reject(RejectReason.BORDER)
    if not _size_ok(mask, rbc_diameter, 0.08, 1.1):
        return reject(RejectReason.SIZE)
    return Extraction(mask)


# ----------------------------------------------------------------------------- RBC


def _light_foreground(rgb: np.ndarray) -> np.ndarray:
    """Cell pixels on a near-white surround: Otsu on smoothed lightness, holes filled."""
    f = _smooth(rgb)
    L = color.rgb2lab(f)[..., 0]
    try:
        t = filters.threshold_otsu(L)
    except ValueError:
        return np.zeros(L.shape, bool)
    fg = L < t
    fg = morphology.opening(fg, morphology.disk(1))
    return ndi.binary_fill_holes(fg)


def _split_touching(fg: np.ndarray, d: float) -> np.ndarray:
    """Label a foreground mask, splitting touching round cells by a distance-transform watershed."""
    dt = ndi.distance_transform_edt(fg)
    lb = measure.label(fg)
    peaks = feature.peak_local_max(
        dt, min_distance=max(3, int(0.3 * d)), threshold_abs=max(2.0, 0.2 * d), labels=lb
    )
    markers = np.zeros(fg.shape, np.int32)
    for i, (y, x) in enumerate(peaks, 1):
        markers[y, x] = i
    if len(peaks) == 0:
        return lb
    out = segmentation.watershed(-dt, markers, mask=fg)
    # components without a peak keep their own label
    missing = fg & (out == 0)
    if missing.any():
        extra = measure.label(missing)
        out[missing] = extra[missing] + out.max()
    return out


def extract_rbc(
    rgb: np.ndarray,
    rbc_diameter: float | None = None,
    point: tuple[float, float] | None = None,
    surround: Surround = "light",
    max_border: float = 0.05,
    min_solidity: float = 0.9,
) -> Extraction:
    """Mask of the red cell at the centre (or ``point``, row/col).

    ``surround``: 'light' (plasma / near-white padding) or 'dark' (black padding, NIH crops).
    A cell that overlaps others so much that it is not convex is rejected as several cells.
    """
    if surround not in SURROUNDS:
        raise ValueError(f"unknown surround {surround!r}; allowed: {', '.join(SURROUNDS)}")
    rgb = as_rgb(rgb)
    h, w = rgb.shape[:2]
    if surround == "dark":
        fg = ndi.binary_fill_holes(morphology.opening(rgb.max(-1) > 12, morphology.disk(1)))
    else:
        fg = _light_foreground(rgb)
    if not fg.any():
        return reject(RejectReason.EMPTY)
    cy, cx = point if point is not None else (h / 2, w / 2)
    lb = measure.label(fg)
    y, x = int(np.clip(round(cy), 0, h - 1)), int(np.clip(round(cx), 0, w - 1))
    lab_id = lb[y, x]
    if lab_id == 0:  # the point may sit in a pale centre that did not fill: nearest component
        dist, (iy, ix) = ndi.distance_transform_edt(lb == 0, return_indices=True)
        r = 0.25 * (rbc_diameter or min(h, w) / 2)
        if dist[y, x] > r:
            return reject(RejectReason.OFF_CENTRE)
        lab_id = lb[iy[y, x], ix[y, x]]
    cell = lb == lab_id
    return _judge_rbc(cell, rbc_diameter, max_border, min_solidity)


def _judge_rbc(
    cell: np.ndarray, rbc_diameter: float | None, max_border: float, min_solidity: float
) -> Extraction:
    cell = ndi.binary_fill_holes(cell)
    if cell.sum() < 16:
        return reject(RejectReason.EMPTY)
    if border_fraction(cell) > max_border:
        return reject(RejectReason.BORDER)
    props = measure.regionprops(cell.astype(np.uint8))[0]
    if props.solidity < min_solidity:
        return reject(RejectReason.SEVERAL)
    if not _size_ok(cell, rbc_diameter, 0.55, 1.6):
        return reject(RejectReason.SEVERAL if rbc_diameter and props.equivalent_diameter_area > rbc_diameter else RejectReason.SIZE)
    return Extraction(cell)


def label_field(rgb: np.ndarray, rbc_diameter: float | None = None) -> np.ndarray:
    """Instance labels of all cells of a field on a plasma background (0 = background).

    Touching cells are split at their necks; overlapping ones stay together (and are later
    rejected as several cells when they are not convex).
    """
    rgb = as_rgb(rgb)
    lab = color.rgb2lab(_smooth(rgb))
    fg = foreground(lab, bright_fraction=0.15)
    fg = morphology.opening(fg, morphology.disk(2))
    d = rbc_diameter or min(rgb.shape[:2]) / 8.0
    return _split_touching(fg, d)


def pick_cell(
    labels: np.ndarray,
    point: tuple[float, float],
    rbc_diameter: float | None = None,
    other_points: np.ndarray | None = None,
    max_border: float = 0.0,
    min_solidity: float = 0.9,
    slices: list | None = None,
    max_contact: float = 0.4,
) -> Extraction:
    """The labelled cell at ``point`` (row, col) of a field, judged as an RBC.

    ``other_points`` (N, 2 row/col) are the field's other annotations: a cell that holds one of
    them too is several cells, and so is one sharing a contact line longer than ``max_contact``
    RBC diameters with a neighbour (an overlap, not a touch). The mask returned covers ``Extraction.window`` of the field only;
    pass ``slices = scipy.ndimage.find_objects(labels)`` when picking many cells of one field.
    """
    h, w = labels.shape
    y, x = int(np.clip(round(point[0]), 0, h - 1)), int(np.clip(round(point[1]), 0, w - 1))
    lab_id = int(labels[y, x])
    if lab_id == 0:
        r = 0.25 * (rbc_diameter or min(h, w) / 8)
        y0, y1, x0, x1 = max(0, int(y - r)), min(h, int(y + r) + 1), max(0, int(x - r)), min(w, int(x + r) + 1)
        win = labels[y0:y1, x0:x1]
        if not win.any():
            return reject(RejectReason.OFF_CENTRE)
        dist, (iy, ix) = ndi.distance_transform_edt(win == 0, return_indices=True)
        lab_id = int(win[iy[y - y0, x - x0], ix[y - y0, x - x0]])
    if slices is None:
        slices = ndi.find_objects(labels)
    sl = slices[lab_id - 1]
    if sl is None:
        return reject(RejectReason.EMPTY)
    window = (slice(max(0, sl[0].start - 1), min(h, sl[0].stop + 1)), slice(max(0, sl[1].start - 1), min(w, sl[1].stop + 1)))
    cell = labels[window] == lab_id
    if other_points is not None and len(other_points):
        op = np.round(np.asarray(other_points)).astype(int) - [window[0].start, window[1].start]
        hh, ww = cell.shape
        op = op[(op[:, 0] >= 0) & (op[:, 0] < hh) & (op[:, 1] >= 0) & (op[:, 1] < ww)]
        if len(op) and cell[op[:, 0], op[:, 1]].any():
            return reject(RejectReason.SEVERAL)
    # a long contact line with another labelled cell means an overlap the split only cut through
    win_labels = labels[window]
    ring = ndi.binary_dilation(cell) & ~cell & (win_labels > 0) & (win_labels != lab_id)
    if ring.sum() > max_contact * (rbc_diameter or np.sqrt(cell.sum())):
        return reject(RejectReason.SEVERAL)
    # outline pixels on the field's frame
    frame = np.zeros(cell.shape, bool)
    if window[0].start == 0:
        frame[0] = True
    if window[0].stop == h:
        frame[-1] = True
    if window[1].start == 0:
        frame[:, 0] = True
    if window[1].stop == w:
        frame[:, -1] = True
    on_frame = (cell & frame).sum()
    if on_frame:
        outline = segmentation.find_boundaries(np.pad(cell, 1), mode="inner")[1:-1, 1:-1].sum()
        if on_frame / max(1, outline) > max_border:
            return reject(RejectReason.BORDER)
    ex = _judge_rbc(cell, rbc_diameter, 1.0, min_solidity)
    return Extraction(ex.mask, ex.reason, window if ex.ok else None)


# ----------------------------------------------------------------------------- dispatch & crop


def extract_cell(
    rgb: np.ndarray,
    cls: int,
    rbc_diameter: float | None = None,
    point: tuple[float, float] | None = None,
    surround: Surround = "light",
) -> Extraction:
    """Extract the cell of class ``cls`` at the centre of ``rgb`` with the extractor for its kind."""
    kind = kind_of(cls)
    if kind == "wbc":
        return extract_wbc(rgb, rbc_diameter)
    if kind == "platelet":
        return extract_platelet(rgb, rbc_diameter, point)
    return extract_rbc(rgb, rbc_diameter, point, surround)


def crop_rgba(rgb: np.ndarray, mask: np.ndarray, margin: int = 3) -> np.ndarray:
    """RGBA crop of the mask's bounding box plus ``margin`` (alpha 255 inside, 0 outside)."""
    rgb = as_rgb(rgb)
    mask = np.asarray(mask, bool)
    if not mask.any():
        raise ValueError("empty mask")
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min() - margin, ys.max() + 1 + margin, xs.min() - margin, xs.max() + 1 + margin
    h, w = mask.shape
    pad = ((max(0, -y0), max(0, y1 - h)), (max(0, -x0), max(0, x1 - w)))
    rgba = np.dstack([rgb, np.where(mask, 255, 0).astype(np.uint8)])
    rgba = np.pad(rgba, pad + ((0, 0),), mode="edge")
    rgba[..., 3] = np.pad(np.where(mask, 255, 0).astype(np.uint8), pad, mode="constant")
    y0 += pad[0][0]
    y1 += pad[0][0]
    x0 += pad[1][0]
    x1 += pad[1][0]
    return np.ascontiguousarray(rgba[y0:y1, x0:x1])


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two boolean masks (1.0 when both are empty)."""
    a = np.asarray(a, bool)
    b = np.asarray(b, bool)
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else float(2.0 * (a & b).sum() / s)
