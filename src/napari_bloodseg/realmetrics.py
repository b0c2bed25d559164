"""Scores of a segmentation against the annotations of real fields (see realfields): the metrics of
the real-field benchmark (DESIGN.md, "Real-world evaluation"), plain functions with no Qt.

Per field: WBC boxes matched one-to-one by IoU, WBC mask Dice, the WBC type a user would read
(majority class inside the true WBC), RBC counts, infected calls on malaria-free fields and the
automatic scale error. Per source: :func:`aggregate` pools the field scores into the metrics
named in DESIGN.md, each suffixed ``_auto`` / ``_given`` for the two scale modes;
:func:`evaluate_source` runs one model over a source's held-out fields and draws its picture sheet.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from .autoscale import measure_rbc_blobs
from .classes import CLASS_NAMES, RBC_CLASSES, WBC_CLASSES, BloodClass
from .realfields import SOURCE_RBC_DIAMETER, Box, box_iou

if TYPE_CHECKING:
    from .cells import CellRecord
    from .infer import Segmenter
    from .realfields import RealField

Cells = tuple[np.ndarray, list["CellRecord"]]  # find_cells output: instance map and records
Camera = Callable[[np.ndarray, str], np.ndarray]  # (field image, field name) -> the image as another camera takes it

_WBC_IDS = tuple(int(c) for c in WBC_CLASSES)
_RBC_IDS = tuple(int(c) for c in RBC_CLASSES)

#: A user's own box-annotated set (`bloodseg evaluate --boxes`): every WBC boxed; RBC counts where
#: all RBCs are boxed (its fields' ``rbc_boxes``), platelets where it boxes them
LAB = "lab"
# Which metrics a source can give (the rest lack the annotation)
MASK_SOURCES = frozenset({"zheng1", "zheng2", "bccd_wbc_masks"})
# WBC-centred crops: their few RBCs are mostly cut by the crop's edge, so their size says nothing of the map
CROP_SOURCES = frozenset({"zheng1", "zheng2"})
WBC_BOX_SOURCES = frozenset({"bccd", "wbc_rpi", "pig_wbc", "bcd_draaslan", LAB})
RBC_COUNT_SOURCES = frozenset({"bccd", "bcd_draaslan", "chula", LAB})  # BCCD's boxes miss cells: reported anyway
NO_MALARIA_SOURCES = frozenset({"chula", "bccd", "bcd_draaslan", "wbc_rpi"})
PLATELET_BOX_SOURCES = frozenset({"bccd", LAB})
_PLATELET_IDS = (int(BloodClass.THROMBOCYTE), int(BloodClass.PLATELET_CLUMP))
STRATIFIED_SOURCES = frozenset({"wbc_rpi"})  # subset stratified by WBC type
MODES = ("auto", "given")
SHARED = "shared"  # the third mode: runs of SHARED_BATCH fields at the median of their automatic estimates
SHARED_BATCH = 10  # as `bloodseg segment --shared-scale` over a folder of one microscope's fields

# Chula's point files often label only the abnormal cells: a field counts as completely annotated
# when its points are at least this share of the cells a classical count finds
CHULA_COMPLETE = 0.8
CHULA_DIAMETER = SOURCE_RBC_DIAMETER["chula"]
CLASSICAL_MIN_AREA = 0.3  # x the area of an RBC disc

# Fields per source in a default run: under 10 minutes on 2 CPU cores with a training run beside
# it. Pig fields are upscaled ~3x, Chula and wbc_rpi are full 640-720 px fields, the rest small or
# downscaled; automatic scales that upscale a BCCD or wbc_rpi field ~4x dominate the cost.
DEFAULT_PER_SOURCE = {"bccd": 14, "bccd_wbc_masks": 14, "zheng1": 30, "zheng2": 24, "chula": 10,
                      "wbc_rpi": 15, "pig_wbc": 6, "bcd_draaslan": 24}
QUICK_PER_SOURCE = 3
SHEET_ROWS = 4
SHEET_PANEL_HEIGHT = 300


# ---------------------------------------------------------------- boxes and instances

def match_boxes(pred_boxes: Sequence[Box], true_boxes: Sequence[Box], iou: float = 0.5) -> tuple[int, int]:
    """(matched, false): greedy one-to-one matching, highest IoU first, pairs with IoU >= ``iou``.
    ``false`` is the number of predicted boxes left unmatched."""
    pairs = sorted(((box_iou(p, t), i, j) for i, p in enumerate(pred_boxes) for j, t in enumerate(true_boxes)),
                   reverse=True)
    used_p: set[int] = set()
    used_t: set[int] = set()
    for v, i, j in pairs:
        if v < iou:
            break
        if i in used_p or j in used_t:
            continue
        used_p.add(i)
        used_t.add(j)
    return len(used_p), len(pred_boxes) - len(used_p)


class WbcInstance(NamedTuple):
    box: Box  # (min_row, min_col, max_row + 1, max_col + 1)
    class_id: int
    coords: np.ndarray  # (n, 2) rows, cols of its pixels


def cells_of(labels: np.ndarray, rbc_diameter: float) -> Cells:
    """The cells a user's count sees (:func:`napari_bloodseg.cells.find_cells`)."""
    from .cells import find_cells

    return find_cells(np.asarray(labels), float(rbc_diameter))


def wbc_instances(labels: np.ndarray, rbc_diameter: float, cells: Cells | None = None) -> list[WbcInstance]:
    """Predicted WBCs as the counting sees them; ``cells``: find_cells output when already at hand."""
    instances, records = cells if cells is not None else cells_of(labels, rbc_diameter)
    out = []
    for r in records:
        if r.class_id in _WBC_IDS:
            coords = np.argwhere(instances == r.id)
            out.append(WbcInstance((float(r.min_row), float(r.min_col), float(r.max_row), float(r.max_col)),
                                   int(r.class_id), coords))
    return out


# ---------------------------------------------------------------- WBC masks and types

def wbc_dice(pred_labels: np.ndarray, true_mask: np.ndarray) -> float:
    """Dice of all WBC-class pixels together against the expert WBC mask."""
    from .metrics import dice

    return dice(np.isin(np.asarray(pred_labels), _WBC_IDS), np.asarray(true_mask, bool))


def _box_slices(shape: tuple[int, int], box: Box) -> tuple[slice, slice]:
    """The pixels a (row0, col0, row1, col1) box covers, cut to an image of ``shape`` (may be empty)."""
    r0, c0, r1, c1 = (float(v) for v in box)
    h, w = shape[:2]
    return slice(max(0, math.floor(r0)), min(h, math.ceil(r1))), slice(max(0, math.floor(c0)), min(w, math.ceil(c1)))


def _region_mask(shape: tuple[int, int], region: np.ndarray | Box) -> np.ndarray:
    if isinstance(region, np.ndarray) and region.shape == shape:
        return region.astype(bool)
    m = np.zeros(shape, bool)
    m[_box_slices(shape, region)] = True
    return m


def wbc_type_majority(pred_labels: np.ndarray, region: np.ndarray | Box) -> int | None:
    """The most frequent WBC class inside ``region`` (a boolean mask of the labels' shape, or a box),
    None when no WBC-class pixel lies there. Ties go to the lower class id."""
    labels = np.asarray(pred_labels)
    inside = labels[_region_mask(labels.shape, region)]
    votes = np.bincount(inside.ravel(), minlength=max(_WBC_IDS) + 1)[list(_WBC_IDS)]
    if votes.max() == 0:
        return None
    return _WBC_IDS[int(np.argmax(votes))]


def _recalls(truth_types: Sequence[int], predicted_types: Sequence[int | None]) -> dict[int, float]:
    """{true class id: share of its WBCs predicted as it}; a None prediction is wrong."""
    if len(truth_types) != len(predicted_types):
        raise ValueError(f"{len(truth_types)} true types but {len(predicted_types)} predictions")
    t = np.array([int(v) for v in truth_types], int)
    p = np.array([-1 if v is None else int(v) for v in predicted_types], int)
    return {int(c): float(np.mean(p[t == c] == c)) for c in np.unique(t)}


def balanced_accuracy(truth_types: Sequence[int], predicted_types: Sequence[int | None]) -> float | None:
    """Mean over the true classes present of their recall; a None prediction is wrong.
    None when there is no truth."""
    r = _recalls(truth_types, predicted_types)
    return float(np.mean(list(r.values()))) if r else None


def type_recall(truth_types: Sequence[int], predicted_types: Sequence[int | None]) -> dict[str, float] | None:
    """{class name: recall} per true class present (what the balanced accuracy averages); None when
    there is no truth."""
    r = _recalls(truth_types, predicted_types)
    return {CLASS_NAMES[c]: round(v, 4) for c, v in r.items()} or None


# ---------------------------------------------------------------- RBCs and scale

def platelets_found(labels: np.ndarray, boxes: Sequence[Box]) -> int:
    """How many of the platelet ``boxes`` hold a thrombocyte or platelet-clump pixel of ``labels``.
    A box, not a blob: annotators box a platelet loosely, and the map may draw it a little off."""
    return sum(bool(np.isin(labels[_box_slices(labels.shape, box)], _PLATELET_IDS).any()) for box in boxes)


def rbc_records(records: Sequence[CellRecord]) -> list[CellRecord]:
    return [r for r in records if r.class_id in _RBC_IDS]


def rbc_count(labels: np.ndarray, rbc_diameter: float, cells: Cells | None = None) -> int:
    """RBCs (infected + healthy) the counting finds."""
    _, records = cells if cells is not None else cells_of(labels, rbc_diameter)
    return len(rbc_records(records))


def rbc_count_error(pred: float, true: float) -> float:
    """|pred - true| / true."""
    if true <= 0:
        raise ValueError(f"true RBC count must be positive, got {true}")
    return abs(pred - true) / true


def false_infected_rate(records: Sequence[CellRecord]) -> float | None:
    """Infected-RBC calls / all RBC calls (None without RBC calls): on a malaria-free field, every
    infected call is false."""
    rbc = rbc_records(records)
    if not rbc:
        return None
    return sum(r.class_id == BloodClass.INFECTED_RBC for r in rbc) / len(rbc)


def scale_error(estimate: float, truth: float) -> float:
    """|estimate / truth - 1|."""
    return abs(estimate / truth - 1.0)


def phone_camera(rgb: np.ndarray, name: str) -> np.ndarray:
    """A :data:`Camera`: the field as a phone through the eyepiece takes it (augment.cheap_camera),
    its noise seeded by the field's name, so every model sees the same pictures."""
    import zlib

    from .augment import cheap_camera

    return cheap_camera(rgb, np.random.default_rng(zlib.crc32(name.encode())))


CAMERAS: dict[str, Camera | None] = {"none": None, "phone": phone_camera}


def shared_diameters(names: Sequence[str], estimates: Sequence[float], batch: int = SHARED_BATCH) -> list[float]:
    """Per field, the RBC diameter it is segmented at when the fields, in name order (acquisition
    order in every source here), run in batches of ``batch`` at one shared scale: the median of the
    batch's estimates (``bloodseg segment --shared-scale``). A last batch shorter than half a batch
    joins the one before."""
    from .autoscale import shared_scale

    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    if len(names) != len(estimates):
        raise ValueError("names and estimates must have one entry per field")
    order = sorted(range(len(names)), key=lambda i: names[i])
    runs = [order[i : i + batch] for i in range(0, len(order), batch)]
    if len(runs) > 1 and len(runs[-1]) < batch / 2:
        last = runs.pop()
        runs[-1] += last
    out = [0.0] * len(names)
    for run in runs:
        d = shared_scale([estimates[i] for i in run]).diameter
        for i in run:
            out[i] = d
    return out


def shared_scale_within(names: Sequence[str], estimates: Sequence[float], truths: Sequence[float],
                        batch: int = SHARED_BATCH, tol: float = 0.15) -> float | None:
    """Share of fields within ``tol`` of their truth at :func:`shared_diameters`."""
    if len(truths) != len(names):
        raise ValueError("names, estimates and truths must have one entry per field")
    d = shared_diameters(names, estimates, batch)
    return sum(scale_error(di, t) <= tol for di, t in zip(d, truths)) / len(names) if names else None


def classical_cell_count(rgb: np.ndarray, rbc_diameter: float = CHULA_DIAMETER) -> int:
    """Cells of a field found without the model (bank.masks.label_field instances of at least
    0.3 x an RBC disc): the yardstick for whether a point file labels every cell."""
    from .bank.masks import label_field

    lab = label_field(rgb, rbc_diameter)
    areas = np.bincount(lab.ravel())[1:]
    return int((areas >= CLASSICAL_MIN_AREA * math.pi * (rbc_diameter / 2) ** 2).sum())


def rbc_truth_count(f: RealField, rgb: np.ndarray | None = None) -> int | None:
    """The field's true RBC count when its RBC annotation can be trusted to be complete:
    RBC boxes (bcd_draaslan; BCCD, whose boxes miss some cells), or points at least
    ``CHULA_COMPLETE`` x the classical count (needs ``rgb``). None otherwise."""
    if f.source not in RBC_COUNT_SOURCES:
        return None
    if f.rbc_boxes is not None:
        return len(f.rbc_boxes) or None
    if f.rbc_points is not None and rgb is not None and len(f.rbc_points):
        d = f.rbc_diameter or CHULA_DIAMETER
        return len(f.rbc_points) if len(f.rbc_points) >= CHULA_COMPLETE * classical_cell_count(rgb, d) else None
    return None


# ---------------------------------------------------------------- one field

@dataclass
class FieldScore:
    """One field segmented in one scale mode."""

    name: str
    mode: str  # auto / given
    rbc_diameter: float  # used
    rbc_diameter_truth: float | None
    wbc_dice: float | None = None
    types: list[tuple[int, int | None]] = field(default_factory=list)  # (true, predicted) per typed WBC
    n_true_wbc: int | None = None  # None: the source has no WBC boxes
    n_matched_wbc: int = 0
    n_pred_wbc: int = 0
    rbc_true: int | None = None
    rbc_pred: int = 0
    rbc_pred_whole: int = 0  # of rbc_pred, those not cut by the image edge
    infected_pred: int = 0
    scale: float = 1.0  # model pixels per input pixel
    n_true_platelets: int | None = None  # None: the source has no platelet boxes
    n_found_platelets: int = 0
    rbc_size: float | None = None  # the map's RBC diameter over the true one (None: too few RBCs or no truth)

    @property
    def wbc_found(self) -> float | None:
        return self.n_matched_wbc / self.n_true_wbc if self.n_true_wbc else None

    @property
    def false_wbc(self) -> int:
        return self.n_pred_wbc - self.n_matched_wbc

    @property
    def rbc_count_error(self) -> float | None:
        return rbc_count_error(self.rbc_pred, self.rbc_true) if self.rbc_true else None

    @property
    def rbc_whole_count_error(self) -> float | None:
        """The count error when only RBCs not cut by the image edge are counted: the reading for
        sources whose annotators skip cut cells (Chula's points do, mostly)."""
        return rbc_count_error(self.rbc_pred_whole, self.rbc_true) if self.rbc_true else None

    @property
    def false_infected_rate(self) -> float | None:
        return self.infected_pred / self.rbc_pred if self.rbc_pred else None

    @property
    def scale_error(self) -> float | None:
        return scale_error(self.rbc_diameter, self.rbc_diameter_truth) if self.rbc_diameter_truth else None


def score_field(f: RealField, labels: np.ndarray, rbc_diameter: float, mode: str = "given",
                true_mask: np.ndarray | None = None, rbc_true: int | None = None, scale: float = 1.0) -> FieldScore:
    """Score one segmentation (``labels`` at the field's size, made with ``rbc_diameter``) against
    ``f``'s annotations. ``true_mask``: the field's expert WBC mask (read from ``f`` if None);
    ``rbc_true``: from :func:`rbc_truth_count`."""
    labels = np.asarray(labels)
    cells = cells_of(labels, rbc_diameter)
    s = FieldScore(f.name, mode, float(rbc_diameter), f.rbc_diameter, rbc_true=rbc_true, scale=float(scale))
    if f.mask_path is not None:
        m = f.wbc_mask() if true_mask is None else true_mask
        if m is not None:
            s.wbc_dice = wbc_dice(labels, m)
            if f.wbc_type is not None:
                s.types.append((int(f.wbc_type), wbc_type_majority(labels, m)))
    if f.source in WBC_BOX_SOURCES:
        preds = wbc_instances(labels, rbc_diameter, cells)
        s.n_true_wbc = len(f.wbc_boxes)
        s.n_pred_wbc = len(preds)
        s.n_matched_wbc, _ = match_boxes([p.box for p in preds], f.wbc_boxes)
        for box, t in zip(f.wbc_boxes, f.wbc_types):
            if t is not None:
                s.types.append((int(t), wbc_type_majority(labels, box)))
    if f.source in PLATELET_BOX_SOURCES and f.platelet_boxes is not None:
        s.n_true_platelets = len(f.platelet_boxes)
        s.n_found_platelets = platelets_found(labels, f.platelet_boxes)
    rbc = rbc_records(cells[1])
    s.rbc_pred = len(rbc)
    s.rbc_pred_whole = sum(not r.cut_by_border for r in rbc)
    s.infected_pred = sum(r.class_id == BloodClass.INFECTED_RBC for r in rbc)
    if f.rbc_diameter and f.source not in CROP_SOURCES:
        m, _ = measure_rbc_blobs(labels, float(f.rbc_diameter))
        s.rbc_size = m / float(f.rbc_diameter) if m else None
    return s


# ---------------------------------------------------------------- one source

def _median(vals: list[float]) -> float | None:
    return float(np.median(vals)) if vals else None


def aggregate(scores: Sequence[FieldScore], source: str, mode: str) -> dict[str, float | int | None]:
    """The source's metrics for one mode (keys suffixed ``_<mode>``); None where the source has the
    annotation but no field gave a value."""
    out: dict[str, float | int | None] = {}
    sfx = f"_{mode}"
    if source in MASK_SOURCES:
        d = [s.wbc_dice for s in scores if s.wbc_dice is not None]
        out["wbc_dice" + sfx] = float(np.mean(d)) if d else None
    if source in WBC_BOX_SOURCES:
        n_true = sum(s.n_true_wbc or 0 for s in scores)
        out["wbc_found" + sfx] = sum(s.n_matched_wbc for s in scores) / n_true if n_true else None
        out["false_wbc_per_field" + sfx] = float(np.mean([s.false_wbc for s in scores])) if scores else None
    types = [t for s in scores for t in s.types]
    if types or source in MASK_SOURCES | {"wbc_rpi", "bccd"}:
        truth, pred = [t for t, _ in types], [p for _, p in types]
        out["wbc_type_balanced_acc" + sfx] = balanced_accuracy(truth, pred)
        out["wbc_type_recall" + sfx] = type_recall(truth, pred)
    if source in RBC_COUNT_SOURCES:
        errs = [s.rbc_count_error for s in scores if s.rbc_count_error is not None]
        out["rbc_count_err_median" + sfx] = _median(errs)
        out["rbc_whole_count_err_median" + sfx] = _median([s.rbc_whole_count_error for s in scores
                                                           if s.rbc_whole_count_error is not None])
        out["n_rbc_fields" + sfx] = len(errs)
    sizes = [s.rbc_size for s in scores if s.rbc_size is not None]
    if sizes:
        # the map's RBCs against the true diameter: about 1 where it draws single cells; well above 1
        # where it runs RBCs and the glass or plasma between them into sheets (which no count sees on
        # sources without RBC annotations)
        out["rbc_size_ratio_median" + sfx] = _median(sizes)
        out["rbc_size_within_15pct" + sfx] = float(np.mean([abs(r - 1) <= 0.15 for r in sizes]))
    if source in PLATELET_BOX_SOURCES:
        n_true = sum(s.n_true_platelets or 0 for s in scores)
        out["platelets_found" + sfx] = sum(s.n_found_platelets for s in scores) / n_true if n_true else None
    if source in NO_MALARIA_SOURCES:
        rbc = sum(s.rbc_pred for s in scores)
        out["false_infected_rate" + sfx] = sum(s.infected_pred for s in scores) / rbc if rbc else None
    if mode in ("auto", SHARED):
        errs = [s.scale_error for s in scores if s.scale_error is not None]
        out["scale_within_15pct" + sfx] = float(np.mean([e <= 0.15 for e in errs])) if errs else None
        out["scale_err_median" + sfx] = _median(errs)
    if mode == "auto":
        out["upscaled_over_4x_auto"] = sum(s.scale > 4 for s in scores)
    return out


def _spread(items: list, n: int) -> list:
    """``n`` items evenly spread over ``items`` (all of them when n >= len)."""
    if n >= len(items):
        return list(items)
    if n <= 0:
        return []
    idx = np.unique(np.linspace(0, len(items) - 1, n).round().astype(int))
    return [items[i] for i in idx]


def _field_type(f: RealField) -> int:
    t = f.wbc_type if f.wbc_type is not None else next((v for v in f.wbc_types if v is not None), None)
    return -1 if t is None else int(t)


def select_fields(fields: Sequence[RealField], n: int, stratify: bool = False,
                  first: Sequence[RealField] = ()) -> list[RealField]:
    """A deterministic, evenly spread subset of at most ``n`` fields. ``stratify``: by WBC type, as
    even a share of ``n`` per type as the fields allow (every type represented when n >= types);
    ``first``: fields taken before the rest (evenly spread among themselves when too many)."""
    first_names = {f.name for f in first}
    chosen = _spread(list(first), n)
    rest = [f for f in fields if f.name not in first_names]
    n -= len(chosen)
    if not stratify:
        return chosen + _spread(rest, n)
    groups: dict[int, list] = {}
    for f in rest:
        groups.setdefault(_field_type(f), []).append(f)
    keys = sorted(groups)
    quota = dict.fromkeys(keys, 0)
    while n > 0 and any(quota[k] < len(groups[k]) for k in keys):
        for k in keys:
            if n > 0 and quota[k] < len(groups[k]):
                quota[k] += 1
                n -= 1
    return chosen + [f for k in keys for f in _spread(groups[k], quota[k])]


def heldout_fields(source: str, data: str | Path | None = None) -> list[RealField]:
    """Fields never trained on: every split but train (Zheng: all). wbc_rpi fields with an empty
    label file are left out: every field of that set shows a WBC, so empty means unannotated."""
    from .realfields import read_fields

    return [f for f in read_fields(source, data) if f.split != "train" and (source != "wbc_rpi" or f.wbc_boxes)]


def _round(v):
    if isinstance(v, float):
        return round(v, 4) if math.isfinite(v) else None
    return v


@dataclass
class _SheetRow:
    name: str
    rgb: np.ndarray
    overlays: dict[str, tuple[np.ndarray, float]]  # mode → (overlay, diameter used)
    truth_d: float | None
    boxes: list[Box]
    mask: np.ndarray | None
    reviewed: int = 0  # the last this many boxes were added on review (drawn yellow)


def evaluate_source(segmenter: Segmenter, source: str, data: str | Path | None = None,
                    per_source: int | None = None, sheet: str | Path | None = None,
                    log: Callable[[str], None] | None = None, shared_batch: int | None = SHARED_BATCH,
                    camera: Camera | None = None) -> dict:
    """Segment the held-out fields of ``source`` (a subset of at most ``per_source``; default
    :data:`DEFAULT_PER_SOURCE`) at automatic and at given scale, and return its metrics
    (``{METRIC_auto: v, METRIC_given: v, ..., "n": fields, "errors": failed segmentations,
    "seconds": s}``, floats rounded to 4 digits). An InputError (or unreadable image) of one field
    is counted in ``errors`` and that field left out of the mode that failed. ``sheet``: a PNG
    path for the picture sheet of the first few fields. ``shared_batch``: also segment the fields
    in runs of that many at one shared scale (:func:`shared_diameters` of the automatic estimates;
    keys ``METRIC_shared``); None: not. ``camera``: each image as ``camera(rgb, field name)`` returns
    it (e.g. :func:`phone_camera`), the truth unchanged."""
    t0 = time.perf_counter()
    n = DEFAULT_PER_SOURCE.get(source, 20) if per_source is None else per_source
    fields = heldout_fields(source, data)
    first: list = []
    rgb_cache: dict[str, np.ndarray] = {}
    truth_cache: dict[str, int | None] = {}
    if source == "chula":  # most held-out point files are incomplete: the complete ones first
        for f in fields:
            try:
                rgb_cache[f.name] = f.image()
            except ValueError:
                continue
            truth_cache[f.name] = rbc_truth_count(f, rgb_cache[f.name])
        first = [f for f in fields if truth_cache.get(f.name)]
    chosen = select_fields(fields, n, stratify=source in STRATIFIED_SOURCES, first=first)
    out = evaluate_fields(segmenter, chosen, source, sheet, log, shared_batch, rgb_cache, truth_cache, camera)
    out["seconds"] = time.perf_counter() - t0
    return {k: _round(v) for k, v in out.items()}


def evaluate_fields(segmenter: Segmenter, chosen: Sequence[RealField], source: str, sheet: str | Path | None = None,
                    log: Callable[[str], None] | None = None, shared_batch: int | None = SHARED_BATCH,
                    rgb_cache: dict[str, np.ndarray] | None = None,
                    truth_cache: dict[str, int | None] | None = None, camera: Camera | None = None) -> dict:
    """:func:`evaluate_source` for given fields of ``source`` (a benchmark source, or :data:`LAB`);
    ``rgb_cache`` / ``truth_cache``: images and RBC truths already read, by field name."""
    from .infer import InputError

    rgb_cache = {} if rgb_cache is None else rgb_cache
    truth_cache = {} if truth_cache is None else truth_cache
    sheet_names = {f.name for f in _spread(chosen, SHEET_ROWS)} if sheet else set()
    scores: dict[str, list[FieldScore]] = {m: [] for m in MODES}
    errors, scored = 0, 0
    rows: list[_SheetRow] = []
    kept: dict[str, tuple] = {}  # for the shared-scale pass: name -> (field, rgb, mask, rbc truth)

    def segment_and_score(f, rgb, d, mode, mask, rbc_true):
        """Segment at ``d`` (None: automatic), score into ``scores[mode]``; None (an error) on InputError."""
        nonlocal errors
        try:
            seg = segmenter.segment(rgb, d)
        except InputError as e:
            errors += 1
            if log:
                log(f"  {source}/{f.name} ({mode}): {e}")
            return None
        scores[mode].append(score_field(f, seg.labels, seg.rbc_diameter, mode, mask, rbc_true, seg.scale))
        return seg

    for f in chosen:
        try:
            rgb = rgb_cache.pop(f.name) if f.name in rgb_cache else f.image()
        except ValueError as e:  # InputError is one
            errors += len(MODES)
            if log:
                log(f"  {source}/{f.name}: {e}")
            continue
        mask = f.wbc_mask()
        rbc_true = truth_cache[f.name] if f.name in truth_cache else rbc_truth_count(f, rgb)
        if camera is not None:  # after the truth: an RBC count from points must not see the camera's look
            rgb = camera(rgb, f.name)
        row = (_SheetRow(f.name, rgb, {}, f.rbc_diameter, list(f.wbc_boxes), mask, f.reviewed_wbc)
               if f.name in sheet_names else None)
        ok = False
        for mode in MODES:
            d = None if mode == "auto" else f.rbc_diameter
            if mode == "given" and d is None:
                continue  # no truth diameter: given scale impossible
            seg = segment_and_score(f, rgb, d, mode, mask, rbc_true)
            if seg is None:
                continue
            ok = True
            if mode == "auto" and shared_batch:
                kept[f.name] = (f, rgb, mask, rbc_true)
            if row is not None:
                from .classes import overlay

                row.overlays[mode] = (overlay(rgb, seg.labels), seg.rbc_diameter)
        scored += ok
        if row is not None:
            rows.append(row)
    if shared_batch and kept:
        auto = [sc for sc in scores["auto"] if sc.name in kept]
        scores[SHARED] = []
        for sc, d in zip(auto, shared_diameters([sc.name for sc in auto], [sc.rbc_diameter for sc in auto], shared_batch)):
            f, rgb, mask, rbc_true = kept.pop(sc.name)
            seg = segment_and_score(f, rgb, d, SHARED, mask, rbc_true)
            row = next((r for r in rows if r.name == f.name), None)
            if seg is not None and row is not None:
                from .classes import overlay

                row.overlays[SHARED] = (overlay(rgb, seg.labels), seg.rbc_diameter)
    out: dict = {}
    for mode in scores:
        out.update(aggregate(scores[mode], source, mode))
    out["n"] = scored
    out["errors"] = errors
    if source in WBC_BOX_SOURCES:
        out["wbc_boxes_added_on_review"] = sum(f.reviewed_wbc for f in chosen)
    if sheet:
        write_sheet(rows, sheet, source)
    return out


# ---------------------------------------------------------------- picture sheet

REVIEWED_BOX_COLOUR = (255, 220, 0)

def _panel(img: np.ndarray, height: int, boxes: Sequence[Box] = (), outline: np.ndarray | None = None,
           text: str = "", reviewed: int = 0):
    from PIL import Image, ImageDraw

    h, w = img.shape[:2]
    img = np.array(img[..., :3], np.uint8)
    if outline is not None:
        from scipy import ndimage as ndi
        from skimage.segmentation import find_boundaries

        edge = find_boundaries(outline, mode="inner")
        k = max(0, round(h / height) - 1)  # survives the resize
        if k:
            edge = ndi.binary_dilation(edge, iterations=k)
        img[edge] = 255
    s = height / h
    im = Image.fromarray(img).resize((max(1, round(w * s)), height), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(im)
    for i, (r0, c0, r1, c1) in enumerate(boxes):
        colour = REVIEWED_BOX_COLOUR if i >= len(boxes) - reviewed else (255, 255, 255)
        draw.rectangle([c0 * s, r0 * s, c1 * s, r1 * s], outline=colour, width=2)
    if text:
        draw.rectangle([0, 0, 7 * len(text) + 6, 14], fill=(0, 0, 0))
        draw.text((3, 2), text, fill=(255, 255, 255))
    return im


def write_sheet(rows: Sequence[_SheetRow], path: str | Path, source: str = "",
                height: int = SHEET_PANEL_HEIGHT) -> Path:
    """One PNG: a row per field, image | auto-scale overlay | given-scale overlay (| shared-scale
    overlay when the rows have one), true WBC boxes or mask outline in white (boxes added on review in
    yellow), the RBC diameters used
    written on the panels (palette PNG: small)."""
    from PIL import Image, ImageDraw

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    panels = []
    modes = MODES + ((SHARED,) if any(SHARED in r.overlays for r in rows) else ())
    for r in rows:
        truth = f"{r.truth_d:.1f}" if r.truth_d else "?"
        name = r.name if len(r.name) <= 20 else r.name[:17] + "..."
        row = [_panel(r.rgb, height, r.boxes, r.mask, f"{source}/{name} truth d={truth}", r.reviewed)]
        for mode in modes:
            if mode in r.overlays:
                ov, d = r.overlays[mode]
                row.append(_panel(ov, height, r.boxes, r.mask, f"{mode} d={d:.1f} px", r.reviewed))
            else:
                blank = Image.new("RGB", row[0].size, (40, 40, 40))
                ImageDraw.Draw(blank).text((5, 5), f"{mode}: no result", fill=(255, 255, 255))
                row.append(blank)
        panels.append(row)
    gap = 4
    width = max([sum(p.width for p in row) + gap * (len(row) - 1) for row in panels], default=height)
    sheet = Image.new("RGB", (width, max(1, len(panels)) * (height + gap)), (30, 30, 30))
    for i, row in enumerate(panels):
        x = 0
        for p in row:
            sheet.paste(p, (x, i * (height + gap)))
            x += p.width + gap
    tmp = path.with_name(f".{path.name}.tmp")
    sheet.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(tmp, format="PNG", optimize=True)
    tmp.replace(path)
    return path
