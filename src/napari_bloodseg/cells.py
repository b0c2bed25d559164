"""From a class map to cells: touching cells separated, a per-cell table, and the counts a
hematologist reads (WBC differential, parasitemia, platelets)."""

from __future__ import annotations

import csv
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from skimage import feature, measure, segmentation

from .classes import CLASS_NAMES, NUM_CLASSES, RBC_CLASSES, WBC_CLASSES, BloodClass
from .postprocess import shrink_mask

# Cell groups split as one: an RBC partly predicted infected is still one RBC; its class is the majority.
GROUPS: dict[str, tuple[int, ...]] = {
    "rbc": tuple(int(c) for c in RBC_CLASSES),
    "wbc": tuple(int(c) for c in WBC_CLASSES),
    "thrombocyte": (int(BloodClass.THROMBOCYTE),),
    "platelet clump": (int(BloodClass.PLATELET_CLUMP),),
}
# Typical diameter of each group relative to a healthy RBC, and the smallest area kept (× RBC area).
REL_DIAMETER = {"rbc": 1.0, "wbc": 1.5, "thrombocyte": 0.3, "platelet clump": 1.0}
MIN_AREA = {"rbc": 0.15, "wbc": 0.4, "thrombocyte": 0.01, "platelet clump": 0.05}  # cut by the image border
PALLOR_AREA = 0.25  # holes in a cell mask up to this (x RBC area) are its centre; larger ones are glass
# A whole cell inside the image is larger: even microcytes have ~0.35 of a normal RBC's area, so
# smaller RBC-class blobs are debris or platelets the model mistook (they would inflate parasitemia).
# Even a small lymphocyte is about an RBC across: a WBC-class blob under 0.6 of an RBC's area is a
# stain speck, a platelet clump or a dark corner the model mistook (real fields: none of 56 matched
# WBCs was under 1.4).
MIN_AREA_WHOLE = {"rbc": 0.3, "wbc": 0.6, "thrombocyte": 0.01, "platelet clump": 0.05}
# WBC-class fringes the model draws along RBC edges next to a WBC (a few pixels wide) are opened
# away before instances are cut, so they neither inflate the WBC nor count as cells.
WBC_OPENING = 0.1  # radius, x RBC diameter
_SPLIT = {"rbc": True, "wbc": True, "thrombocyte": True, "platelet clump": False}
# Where a smear is thick, RBCs overlap by up to half their width and their union has no clear waist,
# so one peak per ~0.3 diameters merges them. An RBC part of over RBC_CLUMP_AREA RBC areas is no single
# cell: it is cut again with peaks allowed RBC_CLUMP_PEAK_DISTANCE diameters apart (held-out
# bcd_draaslan fields, all boxed: median count error 0.150 → 0.105; a round cell has one peak
# whatever the distance, and the area guard keeps elongated single cells whole).
RBC_CLUMP_AREA = 1.4
RBC_CLUMP_PEAK_DISTANCE = 0.15
PEAK_DISTANCE = 0.3  # x the group's diameter


@dataclass
class CellRecord:
    id: int
    class_id: int
    class_name: str
    centroid_row: float
    centroid_col: float
    area_px: int
    min_row: int
    min_col: int
    max_row: int
    max_col: int
    mean_probability: float
    cut_by_border: bool = False  # touches the image edge: part of the cell may lie outside the image


def _split(mask: np.ndarray, diameter: float, peak_distance: float = PEAK_DISTANCE) -> np.ndarray:
    """Distance-transform watershed: one marker per cell core, cores at least ``peak_distance``
    diameters apart (in rows or columns)."""
    dist = ndi.distance_transform_edt(mask)
    coarse = measure.label(mask)
    peaks = feature.peak_local_max(
        dist, min_distance=max(1, int(round(diameter * peak_distance))), threshold_abs=max(1.0, diameter * 0.15),
        labels=coarse, exclude_border=False,
    )
    markers = np.zeros(mask.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    # components without a peak (thin, small) keep one marker of their own
    missing = np.setdiff1d(np.unique(coarse[mask]), np.unique(coarse[tuple(peaks.T)]) if len(peaks) else [])
    for lab in missing:
        rr, cc = np.nonzero(coarse == lab)
        markers[rr[len(rr) // 2], cc[len(cc) // 2]] = markers.max() + 1
    return segmentation.watershed(-dist, markers, mask=mask)


def _split_rbc_clumps(parts: np.ndarray, diameter: float) -> np.ndarray:
    """``parts`` with each part larger than RBC_CLUMP_AREA RBCs cut again at RBC_CLUMP_PEAK_DISTANCE."""
    limit = RBC_CLUMP_AREA * np.pi * (diameter / 2) ** 2
    sizes = np.bincount(parts.ravel())
    big = np.nonzero(sizes > limit)[0]
    big = big[big > 0]
    if not len(big):
        return parts
    out = parts.copy()
    next_id = int(parts.max()) + 1
    boxes = ndi.find_objects(parts)
    for p in big:
        sl = boxes[p - 1]
        part = parts[sl] == p
        sub = _split(part, diameter, RBC_CLUMP_PEAK_DISTANCE)
        if sub.max() > 1:
            out[sl][part] = sub[part] + next_id
            next_id += int(sub.max())
    return out


def _fill_small_holes(mask: np.ndarray, max_area: int, inside: np.ndarray | None = None) -> np.ndarray:
    """``mask`` with its holes of at most ``max_area`` pixels filled; with ``inside``, only the holes
    holding some of it (a speck the model drew in a cell's centre, not bare glass between cells)."""
    holes = ndi.binary_fill_holes(mask) & ~mask
    lab, n = ndi.label(holes)
    if n == 0:
        return mask
    keep = np.bincount(lab.ravel()) <= max_area
    keep[0] = False
    if inside is not None:
        keep &= np.bincount(lab.ravel(), weights=inside.ravel(), minlength=n + 1) > 0
    return mask | keep[lab]


def find_cells(
    labels: np.ndarray, rbc_diameter: float = 36.0, confidence: np.ndarray | None = None
) -> tuple[np.ndarray, list[CellRecord]]:
    """Instances (int32 map, 0 = none) and one record per cell.

    ``rbc_diameter`` is the healthy-RBC diameter in pixels of ``labels``; ``confidence`` the winning
    class probability x 255 (as from inference) for each cell's mean probability."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be 2-D, got shape {labels.shape}")
    instances = np.zeros(labels.shape, np.int32)
    records: list[CellRecord] = []
    rbc_area = np.pi * (rbc_diameter / 2) ** 2
    # A platelet-class speck in an RBC's (or WBC's) pale centre is a hole in that cell's mask: the
    # model's mistake, not a platelet. Holes up to half an RBC count; larger ones are glass.
    bodies, _ = ndi.label(np.isin(labels, GROUPS["rbc"] + GROUPS["wbc"]))
    cell_sized = np.bincount(bodies.ravel()) >= MIN_AREA_WHOLE["rbc"] * rbc_area  # not a rim the model drew round a platelet
    cell_sized[0] = False
    cells_filled = _fill_small_holes(cell_sized[bodies], max(1, int(0.5 * rbc_area)))
    h, w = labels.shape
    for group, ids in GROUPS.items():
        mask = np.isin(labels, ids)
        if not mask.any():
            continue
        if group in ("rbc", "wbc"):  # a speck in a cell's centre leaves a ring, which splits into "cells"
            mask = _fill_small_holes(mask, max(1, int(PALLOR_AREA * rbc_area)), inside=labels != 0)
        if group == "wbc":
            mask = shrink_mask(mask, WBC_OPENING * rbc_diameter, border_is_edge=True)
        d = rbc_diameter * REL_DIAMETER[group]
        parts = _split(mask, d) if _SPLIT[group] else measure.label(mask)
        if group == "rbc":
            parts = _split_rbc_clumps(parts, d)
        for r in measure.regionprops(parts):
            r0, c0, r1, c1 = r.bbox
            cut = r0 == 0 or c0 == 0 or r1 == h or c1 == w
            if r.area < (MIN_AREA if cut else MIN_AREA_WHOLE)[group] * rbc_area:
                continue
            rr, cc = r.coords[:, 0], r.coords[:, 1]
            if group in ("thrombocyte", "platelet clump") and cells_filled[rr, cc].all():
                continue  # enclosed by one RBC or WBC: its centre, not a platelet
            votes = np.bincount(labels[rr, cc], minlength=NUM_CLASSES)
            cls = int(max(ids, key=lambda c: votes[c]))
            prob = float(confidence[rr, cc].mean() / 255) if confidence is not None else float("nan")
            cid = len(records) + 1
            instances[rr, cc] = cid
            records.append(CellRecord(cid, cls, CLASS_NAMES[cls], round(float(r.centroid[0]), 2),
                                      round(float(r.centroid[1]), 2), int(r.area), r0, c0, r1, c1, round(prob, 4),
                                      bool(cut)))
    return instances, records


def summarize(records: list[CellRecord], rbc_diameter: float | None = None) -> dict:
    """Counts per class, parasitemia (% infected of all RBCs) and the WBC differential (%)."""
    counts = {name: 0 for name in CLASS_NAMES[1:]}
    for r in records:
        counts[r.class_name] += 1
    infected = counts[CLASS_NAMES[BloodClass.INFECTED_RBC]]
    rbc = infected + counts[CLASS_NAMES[BloodClass.HEALTHY_RBC]]
    wbc_names = [CLASS_NAMES[c] for c in WBC_CLASSES]
    wbc = sum(counts[n] for n in wbc_names)
    return {
        "counts": counts,
        "counts_total": len(records),
        "rbc_total": rbc,
        # RBCs wholly inside the image: for counting frames over adjacent fields, and for comparing
        # with counts that skip cells cut by the field's edge (as Chula's annotation mostly does)
        "rbc_whole": sum(r.class_id in GROUPS["rbc"] and not r.cut_by_border for r in records),
        "infected_rbc": infected,
        "parasitemia_percent": round(100 * infected / rbc, 3) if rbc else None,
        "wbc_total": wbc,
        "wbc_differential_percent": {n: (round(100 * counts[n] / wbc, 2) if wbc else None) for n in wbc_names},
        "platelets": counts[CLASS_NAMES[BloodClass.THROMBOCYTE]],
        "platelet_clumps": counts[CLASS_NAMES[BloodClass.PLATELET_CLUMP]],
        "rbc_diameter_px": rbc_diameter,
    }


def write_table(records: list[CellRecord], path: str | os.PathLike) -> None:
    fields = list(CellRecord.__dataclass_fields__)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in records:
            w.writerow(asdict(r))


def write_report(result, image, csv_path: str | os.PathLike, json_path: str | os.PathLike) -> dict:
    """Cells of a :class:`~napari_bloodseg.infer.Segmentation` → per-cell CSV and JSON summary."""
    _, records = find_cells(result.labels, result.rbc_diameter, result.confidence)
    summary = summarize(records, result.rbc_diameter)
    summary["rbc_diameter_estimated"] = result.rbc_diameter_estimated
    summary["rbc_cells_measured"] = result.rbc_cells_measured
    summary["rbc_diameter_method"] = getattr(result, "rbc_scale_method", "given")
    summary["backend"] = getattr(result, "backend", None)  # what ran the network, e.g. 'openvino fp32'
    summary["rbc_diameter_uncertain"] = result.rbc_diameter_uncertain
    summary["image_shape"] = list(np.asarray(image).shape[:2])
    save_report(records, summary, csv_path, json_path)
    return summary


def save_report(records: list[CellRecord], summary: dict, csv_path: str | os.PathLike, json_path: str | os.PathLike) -> None:
    """The per-cell CSV and the JSON summary, each written whole or not at all."""
    from .checkpoint import atomic_write

    atomic_write(csv_path, lambda tmp: write_table(records, tmp))
    atomic_write(json_path, lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=1)))

