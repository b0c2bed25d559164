"""Sources with expert masks: Zheng (``zheng``), BCCD WBC masks (``bccd-wbc``) and LISC (``lisc``)."""

from __future__ import annotations

import csv
import math
import re
from collections import Counter
from pathlib import Path

import numpy as np

from ...classes import BloodClass
from .. import masks as M
from ..scale import (
    ScaleError,
    ScaleEstimate,
)
from ..store import Bank
from .base import (
    IMAGE_EXTS,
    LICENCES,
    LayoutError,
    SourceInfo,
    _find_ci,
    _images,
    _mask_levels,
    _measure_images,
    _need_dir,
    _Plan,
    _rel,
    _round_robin,
    _scale_for,
    _skip,
    _Task,
)

ZHENG_CLASSES: dict[int, int] = {
    1: BloodClass.NEUTROPHIL,
    2: BloodClass.LYMPHOCYTE,
    3: BloodClass.MONOCYTE,
    4: BloodClass.EOSINOPHIL,
    5: BloodClass.BASOPHIL,
}


def _read_zheng_csv(path: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    with open(path, newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.reader(fh))
    for row in rows[1:]:
        if len(row) >= 2 and row[0].strip().isdigit() and row[1].strip().isdigit():
            out[f"{int(row[0]):03d}"] = int(row[1])
    return out


def _plan_zheng(src: Path, bank: Bank, opts: dict) -> _Plan:
    expected = (
        "Zheng layout SRC/Dataset N/NNN.bmp + NNN.png masks and SRC/Class Labels of Dataset N.csv "
        "(or SRC = one 'Dataset N' folder with the CSV beside it)"
    )
    _need_dir(src, expected)
    sets: list[tuple[int, Path, Path]] = []
    cands = [src] if re.fullmatch(r"Dataset \d+", src.name) else sorted(src.glob("Dataset *"))
    for d in cands:
        m = re.fullmatch(r"Dataset (\d+)", d.name)
        if not (m and d.is_dir()):
            continue
        csvp = d.parent / f"Class Labels of Dataset {m.group(1)}.csv"
        if not csvp.is_file():
            raise LayoutError(f"expected {expected}; missing {csvp}")
        sets.append((int(m.group(1)), d, csvp))
    if not sets:
        raise LayoutError(f"expected {expected}; no 'Dataset N' folder in {src}")
    root = src.parent if len(cands) == 1 and cands[0] == src else src
    skipped = Counter()
    per_set: dict[int, list[tuple[Path, Path, int]]] = {}
    for n, d, csvp in sets:
        labels = _read_zheng_csv(csvp)
        items = []
        for img in sorted(d.glob("*.bmp")) + sorted(d.glob("*.jpg")):
            mask = img.with_suffix(".png")
            lab = labels.get(img.stem)
            if not mask.is_file():
                items.append((img, None, "images without a mask"))
            elif lab not in ZHENG_CLASSES:
                items.append((img, None, "images without a class label"))
            else:
                items.append((img, mask, int(ZHENG_CLASSES[lab])))
        per_set[n] = items

    sources: dict[str, SourceInfo] = {}
    lic = opts.get("licence") or LICENCES["zheng"]
    scales: dict[int, ScaleEstimate] = {}
    neutro: dict[int, float] = {}

    def neutrophil_diameter(items: list[tuple[Path, Path, int]]) -> float:
        ds = []
        for img, mask, c in items:
            if mask is not None and c == BloodClass.NEUTROPHIL:
                try:
                    ds.append(2 * math.sqrt(_mask_levels(str(mask)).sum() / math.pi))
                except Exception:  # noqa: BLE001
                    pass
        if len(ds) < 5:
            raise ScaleError("too few neutrophil masks to calibrate the scale")
        return float(np.median(ds))

    # measured sets first (red cells visible), then calibrate the others by neutrophil size
    for n in sorted(per_set):
        src_name = f"zheng-ds{n}"
        try:
            scales[n] = _scale_for(
                bank, src_name, opts.get("rbc_diameter"), lambda: _measure_images([i for i, _, _ in per_set[n]])
            )
        except ScaleError:
            continue
    for n in sorted(per_set):
        if n in scales:
            continue
        src_name = f"zheng-ds{n}"
        known = bank.source_diameter(src_name)
        if known:
            scales[n] = ScaleEstimate(known, 0, "recorded in the bank by an earlier import")
            continue
        ref = next((r for r in sorted(scales) if scales[r].method.startswith("isolated")), None)
        if ref is None:
            raise ScaleError(
                f"cannot measure the red cells of Dataset {n} and no measured Zheng set to calibrate "
                "from; pass --rbc-diameter PX"
            )
        neutro.setdefault(ref, neutrophil_diameter(per_set[ref]))
        dn = neutrophil_diameter(per_set[n])
        d = dn * scales[ref].diameter / neutro[ref]
        scales[n] = ScaleEstimate(d, 0, f"neutrophil size calibrated on Dataset {ref}")
    tasks = []
    for n in sorted(per_set):
        src_name = f"zheng-ds{n}"
        sources[src_name] = SourceInfo(src_name, lic, scales[n])
    items_rr = _round_robin([[(n, *it) for it in per_set[n]] for n in sorted(per_set)])
    for n, img, mask, c in items_rr:
        src_name = f"zheng-ds{n}"
        if mask is None:
            tasks.append(_skip(img, root, src_name, c))
            continue
        tasks.append(
            _Task(
                "masked", str(img), _rel(img, root), src_name, f"{src_name}:{img.stem}",
                scales[n].diameter, cls=c, mask_path=str(mask), ids=[0],
            )
        )
    return _Plan(sources, tasks, skipped)


BCCD_TYPES: dict[str, int] = {
    "NEUTROPHIL": BloodClass.NEUTROPHIL,
    "EOSINOPHIL": BloodClass.EOSINOPHIL,
    "BASOPHIL": BloodClass.BASOPHIL,
    "LYMPHOCYTE": BloodClass.LYMPHOCYTE,
    "MONOCYTE": BloodClass.MONOCYTE,
}


def _plan_bccd_wbc(src: Path, bank: Bank, opts: dict) -> _Plan:
    expected = (
        "BCCD WBC-mask layout SRC/Input/BCCD/BloodImage_NNNNN.jpg, SRC/Input/BCCD/labels.csv and "
        "SRC/Ground Truth/BCCD/BloodImage_Mask_NNNNN.png"
    )
    _need_dir(src, expected)
    inp = src / "Input" / "BCCD"
    gt = src / "Ground Truth" / "BCCD"
    labels_csv = inp / "labels.csv"
    if not (inp.is_dir() and gt.is_dir() and labels_csv.is_file()):
        raise LayoutError(f"expected {expected}; not found under {src}")
    labels: dict[int, str] = {}
    with open(labels_csv, newline="", encoding="utf-8-sig") as fh:
        rd = csv.DictReader(fh)
        if not rd.fieldnames or "Image" not in rd.fieldnames or "Category" not in rd.fieldnames:
            raise LayoutError(f"expected {labels_csv} with columns Image and Category")
        for row in rd:
            if (row.get("Image") or "").strip().isdigit():
                labels[int(row["Image"])] = (row.get("Category") or "").strip()
    images = sorted(inp.glob("BloodImage_*.jpg"))
    if not images:
        raise LayoutError(f"expected {expected}; no BloodImage_*.jpg in {inp}")
    source = "bccd-wbc"
    scale = _scale_for(bank, source, opts.get("rbc_diameter"), lambda: _measure_images(images))
    info = SourceInfo(source, opts.get("licence") or LICENCES["bccd-wbc"], scale)
    tasks, skipped = [], Counter()
    for img in images:
        num = int(img.stem.split("_")[-1])
        mask = gt / f"BloodImage_Mask_{num:05d}.png"
        cat = labels.get(num, "")
        types = {t.strip().upper() for t in cat.split(",") if t.strip()}
        note = None
        if not mask.is_file():
            note = "images without a mask"
        elif not types:
            note = f"images with no WBC type in labels.csv ({M.RejectReason.UNLABELLED.value})"
        elif len(types) > 1:
            note = f"images listing several WBC types ({M.RejectReason.AMBIGUOUS.value})"
        elif next(iter(types)) not in BCCD_TYPES:
            note = f"images with an unknown WBC type {next(iter(types))!r}"
        if note:
            tasks.append(_skip(img, src, source, note))
            continue
        t = types.pop()
        tasks.append(
            _Task("components", str(img), _rel(img, src), source, f"bccd:{img.stem}", scale.diameter,
                  cls=int(BCCD_TYPES[t]), mask_path=str(mask))
        )
    return _Plan({source: info}, tasks, skipped)


LISC_CLASSES: dict[str, int] = {
    "baso": BloodClass.BASOPHIL,
    "eosi": BloodClass.EOSINOPHIL,
    "lymp": BloodClass.LYMPHOCYTE,
    "mono": BloodClass.MONOCYTE,
    "neut": BloodClass.NEUTROPHIL,
}


def _plan_lisc(src: Path, bank: Bank, opts: dict) -> _Plan:
    expected = (
        "LISC layout SRC/Main Dataset/<cls>/<n>.bmp + SRC/Ground Truth Segmentation/<cls>/areaforexpert1/"
        f"<n>_expert.bmp, <cls> in {', '.join(LISC_CLASSES)}"
    )
    _need_dir(src, expected)
    main, gt = _find_ci(src, "Main Dataset"), _find_ci(src, "Ground Truth Segmentation")
    if not (main and gt):
        raise LayoutError(f"expected {expected}; missing 'Main Dataset' or 'Ground Truth Segmentation' in {src}")
    per, skipped = [], Counter()
    for d in sorted(p for p in main.iterdir() if p.is_dir()):
        cls = LISC_CLASSES.get(d.name.lower())
        files = _images(d)
        if cls is None:
            skipped[f"images in LISC folder {d.name!r} (mixed or unknown cells)"] += len(files)
            continue
        gdir = _find_ci(gt, d.name)
        gdir = _find_ci(gdir, "areaforexpert1") if gdir else None
        items = []
        for f in files:
            mask = None
            if gdir:
                mask = next((m for m in gdir.glob(f"{f.stem}_expert*") if m.suffix.lower() in IMAGE_EXTS), None)
            items.append((f, mask, int(cls)))
        per.append(items)
    if not any(m for items in per for _, m, _ in items):
        raise LayoutError(f"expected {expected}; no image with a mask found in {src}")
    items = _round_robin(per)
    source = "lisc"
    scale = _scale_for(bank, source, opts.get("rbc_diameter"), lambda: _measure_images([i for i, m, _ in items if m]))
    info = SourceInfo(source, opts.get("licence") or LICENCES["lisc"], scale)
    tasks = [
        _Task("masked", str(i), _rel(i, src), source, f"lisc:{i.parent.name}/{i.stem}", scale.diameter,
              cls=c, mask_path=str(m), ids=[0])
        if m is not None
        else _skip(i, src, source, "images without an expert mask")
        for i, m, c in items
    ]
    return _Plan({source: info}, tasks, skipped)
