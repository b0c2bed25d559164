"""Whole fields with cell boxes in the layouts detection sets ship in: YOLO text labels (``yolo``,
e.g. Roboflow exports, wbc_rpi, pig_wbc) and one CSV of boxes (``boxes-csv``, e.g. bcd_draaslan).

Each box whose name is a bank class becomes a sample: the bank's own mask extraction inside the box
(RBCs: the segmented cell at the box centre; WBCs: the leukocyte in the box widened by a third of an
RBC; platelets: the purple object in it); every other box is only a neighbour. Detection boxes are
drawn tight, so an RBC among touching cells that the segmentation cannot tell apart is taken as the
cell pixels in the disc its box draws (a roundish box clear of the frame that no other RBC box
overlaps; bcd_draaslan's crowded fields: 8 RBCs of 2,236 boxes without this, 488 with it). Box names: the class
table's names (any case, ``_``/``-`` for spaces, plurals) and the usual aliases (RBC, red blood cell,
erythrocyte → healthy RBC; platelet, PLT → thrombocyte). A WBC box without a type (WBC, white blood
cell, leukocyte) gives no sample: the bank needs a type.
"""

from __future__ import annotations

import csv
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from ...classes import CLASS_NAMES, BloodClass, class_id
from ..scale import ScaleEstimate, rbc_box_diameters
from ..store import Bank
from .base import (
    IMAGE_EXTS,
    LICENCES,
    LayoutError,
    SourceInfo,
    _images,
    _measure_images,
    _need_dir,
    _Plan,
    _rel,
    _scale_for,
    _skip,
    _Task,
)

BoxFormat = Literal["yolo", "boxes-csv"]

#: A field: its image, (height, width), boxes in px (row0, col0, row1, col1, class, NEIGHBOUR or
#: UNTYPED_WBC) and the reasons its other annotations give no sample.
_Field = tuple[Path, tuple[int, int], list[tuple[float, float, float, float, int]], Counter]

#: A box of a class the bank does not hold: a neighbour only.
NEIGHBOUR = -1
#: A WBC box without a type: a neighbour for the bank, 'some WBC' for training pairs.
UNTYPED_WBC = -2

_ALIASES: dict[str, int] = {
    "rbc": BloodClass.HEALTHY_RBC, "red blood cell": BloodClass.HEALTHY_RBC, "erythrocyte": BloodClass.HEALTHY_RBC,
    "red cell": BloodClass.HEALTHY_RBC, "normal rbc": BloodClass.HEALTHY_RBC,
    "platelet": BloodClass.THROMBOCYTE, "plt": BloodClass.THROMBOCYTE,
    "infected": BloodClass.INFECTED_RBC, "parasitized": BloodClass.INFECTED_RBC,
}
_UNTYPED_WBC = frozenset({"wbc", "white blood cell", "leukocyte", "leucocyte", "white cell"})


def box_class(name: str) -> int | None:
    """Bank class of a box name; None for a WBC without a type; ValueError for any other name."""
    key = re.sub(r"[\s_\-]+", " ", str(name)).strip().lower()
    for k in (key, key[:-1] if key.endswith("s") else key):
        if k in _UNTYPED_WBC:
            return None
        if k in _ALIASES:
            return int(_ALIASES[k])
        try:
            cid = class_id(k)
        except ValueError:
            continue
        if cid != BloodClass.BACKGROUND:
            return cid
    allowed = ", ".join(n for n in CLASS_NAMES if n != CLASS_NAMES[BloodClass.BACKGROUND])
    raise ValueError(f"box class {name!r} is no blood cell class; allowed: {allowed} (or RBC, platelet, WBC)")


def _box_name_classes(names: Sequence[str]) -> tuple[list[int], list[str]]:
    """(class id or NEIGHBOUR per name, notes for the names that give no sample)."""
    ids, notes = [], []
    for n in names:
        try:
            c = box_class(n)
        except ValueError:
            ids.append(NEIGHBOUR)
            notes.append(f"boxes of unknown class {n!r}")
            continue
        ids.append(UNTYPED_WBC if c is None else c)
        notes.append("WBC boxes without a type (the bank needs one)" if c is None else "")
    return ids, notes


def split_unit(stem: str, group_by: str) -> str:
    """The split unit of a field: the image, or with ``slide`` its name up to a trailing ``_<number>``."""
    if group_by == "slide":
        return re.sub(r"_\d+$", "", stem)
    if group_by != "image":
        raise ValueError(f"unknown grouping {group_by!r}; allowed: image, slide")
    return stem


def split_units(fields: list[_Field], group_by: str, hold: set[str], src: Path) -> dict[Path, str]:
    """Each field's split unit (:func:`split_unit`); ValueError when ``hold`` names one no field has."""
    units = {p: split_unit(p.stem, group_by) for p, _, _, _ in fields}
    unknown = sorted(hold - set(units.values()))
    if unknown:
        raise ValueError(f"--hold-out names no {group_by} of {src}: {', '.join(unknown[:5])}"
                         + (f" (and {len(unknown) - 5} more)" if len(unknown) > 5 else ""))
    return units


def _image_shape(path: Path) -> tuple[int, int] | None:
    """(height, width) from the file's header; None when it cannot be read."""
    from ...realfields import _image_size  # not at module level: realfields imports the bank

    try:
        return _image_size(path)
    except Exception:  # noqa: BLE001 - any decoder failure means unreadable
        return None


def box_scale(fields: list[_Field]) -> ScaleEstimate | None:
    """The RBC diameter from the healthy-RBC boxes (median of the roundish ones clear of the border)."""
    ds = [d for _, shape, boxes, _ in fields
          for d in rbc_box_diameters([b[:4] for b in boxes if b[4] == BloodClass.HEALTHY_RBC], shape)]
    if len(ds) < 20:
        return None
    return ScaleEstimate(float(np.median(ds)), len(ds), "median of the RBC boxes")


@dataclass
class BoxFields:
    """What a box layout holds: its fields, the files that give nothing (file, why) and its default
    source name."""

    source: str
    fields: list[_Field]
    missing: list[tuple[Path, str]] = dc_field(default_factory=list)
    bad_rows: int = 0  # CSV rows without four numbers


def read_box_fields(fmt: BoxFormat, src: str | Path, box_classes: Sequence[str] | None = None) -> BoxFields:
    """The fields of a ``yolo`` or ``boxes-csv`` folder (LayoutError when it has none)."""
    src = Path(src)
    if fmt == "yolo":
        got = _read_yolo(src, box_classes)
    elif fmt == "boxes-csv":
        if box_classes:
            raise ValueError("--box-classes is only for the yolo format (other layouts name their boxes)")
        got = _read_boxes_csv(src)
    else:
        raise ValueError(f"unknown box layout {fmt!r}; allowed: {', '.join(get_args(BoxFormat))}")
    if not got.fields:
        why = Counter(w for _, w in got.missing)
        raise LayoutError(f"{src}: no image with its boxes to import"
                          + (f" ({', '.join(f'{n} {w}' for w, n in why.items())})" if why else ""))
    return got


def _plan_fields(src: Path, bank: Bank, opts: dict, kind: BoxFormat) -> _Plan:
    """Import tasks for the fields of a box layout."""
    got = read_box_fields(kind, src, opts.get("box_classes"))
    source, fields, missing = opts.get("source") or got.source, got.fields, got.missing
    hold = set(opts.get("hold_out") or ())
    units = split_units(fields, opts.get("group_by") or "image", hold, src)
    scale = _scale_for(bank, source, opts.get("rbc_diameter"),
                       lambda: box_scale(fields) or _measure_images([p for p, _, _, _ in fields]))
    info = SourceInfo(source, opts.get("licence") or LICENCES[kind], scale)
    tasks = [_skip(p, src, source, why) for p, why in missing]
    for p, _, boxes, notes in fields:
        ids = [i for i, b in enumerate(boxes) if b[4] >= 0]
        if not ids:
            skip = _skip(p, src, source, "fields without a box of a bank class")
            skip.notes = {k: v for k, v in notes.items() if k}  # what their boxes were
            tasks.append(skip)
            continue
        tasks.append(_Task("boxes", str(p), _rel(p, src), source, f"{source}:{units[p]}", scale.diameter,
                           boxes=[tuple(int(round(v)) for v in b[:4]) + (int(b[4]),) for b in boxes], ids=ids,
                           notes={k: v for k, v in notes.items() if k}, split="test" if units[p] in hold else None,
                           tight_boxes=True))
    plan = _Plan({source: info}, tasks)
    if got.bad_rows:
        plan.skipped["unparsable CSV rows"] += got.bad_rows
    return plan


def _plan_yolo(src: Path, bank: Bank, opts: dict) -> _Plan:
    return _plan_fields(src, bank, opts, "yolo")


def _plan_boxes_csv(src: Path, bank: Bank, opts: dict) -> _Plan:
    return _plan_fields(src, bank, opts, "boxes-csv")


# ----------------------------------------------------------------------------- YOLO


def _yolo_dirs(src: Path) -> list[tuple[Path, Path]]:
    """(images, labels) folder pairs: SRC itself and each split subfolder (train, valid, test …)."""
    cands = [src] + sorted(p for p in src.iterdir() if p.is_dir())
    return [(c / "images", c / "labels") for c in cands if (c / "images").is_dir() and (c / "labels").is_dir()]


def _yolo_names(src: Path, given: Sequence[str] | None) -> list[str]:
    """Class names of YOLO ids 0, 1, …: given, else data.yaml's ``names``, else classes.txt."""
    if given:
        for n in given:
            box_class(n)  # a name the user typed that is no class: say so before any work
        return list(given)
    for yml in (src / "data.yaml", src / "data.yml"):
        if yml.is_file():
            import yaml

            names = (yaml.safe_load(yml.read_text()) or {}).get("names")
            if isinstance(names, dict):
                names = [names[k] for k in sorted(names, key=int)]
            if isinstance(names, list) and names:
                return [str(n) for n in names]
    txt = src / "classes.txt"
    if txt.is_file():
        names = [ln.strip() for ln in txt.read_text().splitlines() if ln.strip()]
        if names:
            return names
    raise LayoutError(f"{src}: no class names for the YOLO ids (no data.yaml or classes.txt); "
                      "give them in order with --box-classes, e.g. --box-classes neutrophil,eosinophil,basophil")


def yolo_boxes(txt: Path, shape: tuple[int, int], classes: Sequence[int] | None, why: Sequence[str] = ()
               ) -> tuple[list[tuple[float, float, float, float, int]], Counter]:
    """The boxes of one YOLO label file in px (row0, col0, row1, col1, class of the id; ``classes``
    None: the id itself) for an image of ``shape``, and the reasons for lines that give none
    (``why[id]`` counted per box when given)."""
    h, w = shape
    boxes, notes = [], Counter()
    for line in txt.read_text(errors="replace").splitlines():
        parts = line.split()
        if not parts:
            continue
        try:
            c, nums = int(float(parts[0])), [float(v) for v in parts[1:]]
            if len(nums) > 4 and len(nums) % 2 == 0:  # a polygon (YOLO segmentation): its bounding box
                xs, ys = nums[0::2], nums[1::2]
                nums = [(min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2, max(xs) - min(xs), max(ys) - min(ys)]
            cx, cy, bw, bh = nums[:4]  # a fifth number (a confidence) is ignored; fewer than four: ValueError
        except (ValueError, TypeError):
            notes["unparsable label lines"] += 1
            continue
        if c < 0 or (classes is not None and c >= len(classes)):
            notes[f"boxes of class ids beyond the {len(classes or ())} names"] += 1
            continue
        if why:
            notes[why[c]] += 1
        boxes.append(((cy - bh / 2) * h, (cx - bw / 2) * w, (cy + bh / 2) * h, (cx + bw / 2) * w,
                      c if classes is None else classes[c]))
    return boxes, notes


def yolo_class_names(src: Path) -> list[str] | None:
    """The class names a YOLO set's folder gives (data.yaml, classes.txt), or None."""
    try:
        return _yolo_names(src, None)
    except LayoutError:
        return None


def _read_yolo(src: Path, box_classes: Sequence[str] | None) -> BoxFields:
    expected = ("YOLO layout SRC/[<split>/]images/*.jpg + labels/<stem>.txt with lines 'class cx cy w h' (0-1; "
                "polygon lines 'class x1 y1 x2 y2 ...' give their bounding box)")
    _need_dir(src, expected)
    dirs = _yolo_dirs(src)
    if not dirs:
        raise LayoutError(f"expected {expected}; no images/ and labels/ folders in {src}")
    names = _yolo_names(src, box_classes)
    classes, why = _box_name_classes(names)
    fields: list[_Field] = []
    missing: list[tuple[Path, str]] = []
    for img_dir, lab_dir in dirs:
        for img in _images(img_dir):
            txt = lab_dir / f"{img.stem}.txt"
            if not txt.is_file():
                missing.append((img, "images without a label file"))
                continue
            shape = _image_shape(img)
            if shape is None:
                missing.append((img, "unreadable images"))
                continue
            boxes, notes = yolo_boxes(txt, shape, classes, why)
            fields.append((img, shape, boxes, notes))
    return BoxFields(f"yolo:{src.resolve().name}", fields, missing)


# ----------------------------------------------------------------------------- CSV


CSV_COLUMNS = ("image", "xmin", "ymin", "xmax", "ymax", "label")


def _read_boxes_csv(src: Path) -> BoxFields:
    expected = ("CSV box layout SRC/*.csv with columns image, xmin, ymin, xmax, ymax, label (pixels, or 0-1 "
                "fractions of the image) + the images in SRC/images/ or SRC/")
    _need_dir(src, expected)
    csvs = sorted(p for p in src.iterdir() if p.suffix.lower() == ".csv")
    if len(csvs) != 1:
        raise LayoutError(f"expected {expected}; found {len(csvs)} CSV files in {src}")
    img_dir = src / "images" if (src / "images").is_dir() else src
    rows: dict[str, list[tuple[list[float], str]]] = {}
    bad = 0
    with open(csvs[0], newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        cols = {c.strip().lower(): c for c in reader.fieldnames or []}
        lacking = [c for c in CSV_COLUMNS if c not in cols]
        if lacking:
            raise LayoutError(f"{csvs[0].name}: no column {', '.join(lacking)}; expected {expected}")
        for row in reader:
            try:
                box = [float(row[cols[k]]) for k in ("ymin", "xmin", "ymax", "xmax")]
            except (TypeError, ValueError):
                bad += 1
                continue
            if not all(map(math.isfinite, box)):
                bad += 1
                continue
            rows.setdefault(row[cols["image"]].strip(), []).append((box, row[cols["label"]].strip()))
    names = sorted({lab for r in rows.values() for _, lab in r})
    classes, why = _box_name_classes(names)
    by_name = dict(zip(names, zip(classes, why)))
    fraction = all(v <= 1.0 for r in rows.values() for b, _ in r for v in b)  # all ≤ 1: fractions
    fields: list[_Field] = []
    missing: list[tuple[Path, str]] = []
    for name in sorted(rows, key=lambda s: (len(s), s)):
        img = img_dir / name
        if not img.is_file() or img.suffix.lower() not in IMAGE_EXTS:
            missing.append((img, "images named in the CSV but not found"))
            continue
        shape = _image_shape(img)
        if shape is None:
            missing.append((img, "unreadable images"))
            continue
        sy, sx = shape if fraction else (1, 1)
        notes = Counter(by_name[lab][1] for _, lab in rows[name])
        boxes = [(b[0] * sy, b[1] * sx, b[2] * sy, b[3] * sx, by_name[lab][0]) for b, lab in rows[name]]
        fields.append((img, shape, boxes, notes))
    return BoxFields(f"boxes-csv:{src.resolve().name}", fields, missing, bad)
