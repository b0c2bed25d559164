"""Whole fields with annotations: Chula RBC-12 point labels (``rbc-points``) and Pascal VOC boxes (``voc``, BCCD)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

from ...classes import BloodClass
from ..store import Bank
from .boxes import NEIGHBOUR
from .base import (
    LICENCES,
    LayoutError,
    SourceInfo,
    _find_ci,
    _images,
    _measure_images,
    _need_dir,
    _Plan,
    _rel,
    _scale_for,
    _skip,
    _Task,
)


def _annotated_fields(src: Path, bank: Bank, opts: dict, expected: str, image_dir: Path | None, label_dir: Path | None,
                      dirs: str, source: str, kind: str) -> tuple[list[Path], SourceInfo]:
    """Shared preamble of the field importers: check the layout, list the fields, fix the scale."""
    if not (image_dir and label_dir and image_dir.is_dir() and label_dir.is_dir()):
        raise LayoutError(f"expected {expected}; missing {dirs} in {src}")
    images = _images(image_dir)
    if not images:
        raise LayoutError(f"expected {expected}; no images in {image_dir}")
    scale = _scale_for(bank, source, opts.get("rbc_diameter"), lambda: _measure_images(images))
    return images, SourceInfo(source, opts.get("licence") or LICENCES[kind], scale)


def _plan_rbc_points(src: Path, bank: Bank, opts: dict) -> _Plan:
    expected = "RBC point layout SRC/Dataset/*.jpg + SRC/Label/<stem>.txt with lines 'x y type' (Chula RBC-12)"
    _need_dir(src, expected)
    source, lab = "chula", _find_ci(src, "Label")
    images, info = _annotated_fields(src, bank, opts, expected, _find_ci(src, "Dataset"), lab, "Dataset/ or Label/",
                                     source, "rbc-points")
    scale = info.scale
    tasks, skipped = [], Counter()
    for img in images:
        txt = lab / f"{img.stem}.txt"
        if not txt.is_file():
            tasks.append(_skip(img, src, source, "fields without a label file"))
            continue
        pts: list[tuple[float, float, int]] = []
        ids: list[int] = []
        notes: Counter = Counter()
        for line in txt.read_text().splitlines():
            parts = line.split()
            if len(parts) < 3:
                continue
            try:
                x, y, t = float(parts[0]), float(parts[1]), int(float(parts[2]))
            except ValueError:
                notes["unparsable label lines"] += 1
                continue
            if t == 0:
                ids.append(len(pts))
                pts.append((y, x, int(BloodClass.HEALTHY_RBC)))
            else:
                notes["points of other RBC types (not 0 = normal)"] += 1
                pts.append((y, x, -1))
        if ids:
            tasks.append(_Task("points", str(img), _rel(img, src), source, f"chula:{img.stem}", scale.diameter,
                               points=pts, ids=ids, notes=dict(notes)))
        else:
            tasks.append(_skip(img, src, source, "fields without a normal (type 0) RBC point"))
    return _Plan({source: info}, tasks, skipped)


VOC_CLASSES = {"RBC": int(BloodClass.HEALTHY_RBC), "Platelets": int(BloodClass.THROMBOCYTE)}


def _plan_voc(src: Path, bank: Bank, opts: dict) -> _Plan:
    from ...realfields import (
        box_iou,  # not at module level: realfields imports the bank
    )

    expected = "Pascal VOC layout SRC/JPEGImages/*.jpg + SRC/Annotations/<stem>.xml (BCCD)"
    _need_dir(src, expected)
    source, ann = "bccd-voc", src / "Annotations"
    images, info = _annotated_fields(src, bank, opts, expected, src / "JPEGImages", ann, "JPEGImages/ or Annotations/",
                                     source, "voc")
    scale = info.scale
    tasks, skipped = [], Counter()
    for img in images:
        xml = ann / f"{img.stem}.xml"
        if not xml.is_file():
            tasks.append(_skip(img, src, source, "images without annotations"))
            continue
        try:
            root = ET.parse(xml).getroot()
        except ET.ParseError:
            tasks.append(_skip(img, src, source, "unparsable annotation files"))
            continue
        boxes, ids = [], []
        notes: Counter = Counter()
        for i, obj in enumerate(root.iter("object")):
            name = (obj.findtext("name") or "").strip()
            bb = obj.find("bndbox")
            if bb is None:
                continue
            try:
                x0, y0, x1, y1 = (int(float(bb.findtext(k) or "nan")) for k in ("xmin", "ymin", "xmax", "ymax"))
            except ValueError:
                notes["unparsable boxes"] += 1
                continue
            cls = VOC_CLASSES.get(name, NEIGHBOUR)
            if any(box_iou((y0, x0, y1, x1), b[:4]) > 0.8 and b[4] == cls for b in boxes):
                notes["duplicate boxes"] += 1
                continue
            if cls != NEIGHBOUR:
                ids.append(len(boxes))
            elif name == "WBC":
                notes["WBC boxes (not used: take BCCD WBCs from bccd-wbc)"] += 1
            else:
                notes[f"boxes of unknown class {name!r}"] += 1
            boxes.append((y0, x0, y1, x1, cls))
        if ids:
            tasks.append(_Task("boxes", str(img), _rel(img, src), source, f"bccd:{img.stem}", scale.diameter,
                               boxes=boxes, ids=ids, notes=dict(notes)))
        else:
            tasks.append(_skip(img, src, source, "images without RBC or platelet boxes"))
    return _Plan({source: info}, tasks, skipped)
