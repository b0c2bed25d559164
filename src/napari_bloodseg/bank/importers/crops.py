"""Sources of one cell per image: PBC class folders (``pbc``), malaria RBC crops (``malaria-crops``) and any class-folder layout (``folder``)."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np

from ...classes import CLASS_NAMES, BloodClass, class_id
from .. import masks as M
from ..scale import (
    ScaleError,
    ScaleEstimate,
    diameter_from_masks,
)
from ..store import Bank
from . import base as _base
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
    _read_rgb,
    _rel,
    _round_robin,
    _scale_for,
    _spread,
    _Task,
)

PBC_CLASSES: dict[str, int] = {
    "basophil": BloodClass.BASOPHIL,
    "eosinophil": BloodClass.EOSINOPHIL,
    "lymphocyte": BloodClass.LYMPHOCYTE,
    "monocyte": BloodClass.MONOCYTE,
    "neutrophil": BloodClass.NEUTROPHIL,
    "platelet": BloodClass.THROMBOCYTE,
}


def _plan_pbc(src: Path, bank: Bank, opts: dict) -> _Plan:
    expected = f"PBC layout SRC/<class>/*.jpg with class folders {', '.join(PBC_CLASSES)}"
    _need_dir(src, expected)
    per: list[list[tuple[Path, int]]] = []
    skipped = Counter()
    for d in sorted(p for p in src.iterdir() if p.is_dir()):
        cls = PBC_CLASSES.get(d.name.lower())
        files = _images(d)
        if cls is None:
            skipped[f"files in unsupported PBC folder {d.name!r}"] += len(files)
            continue
        per.append([(f, int(cls)) for f in files])
    if not any(per):
        raise LayoutError(f"expected {expected}; found none in {src}")
    items = _round_robin(per)
    source = "pbc"
    scale = _scale_for(bank, source, opts.get("rbc_diameter"), lambda: _measure_images([p for p, _ in items]))
    info = SourceInfo(source, opts.get("licence") or LICENCES["pbc"], scale)
    tasks = [
        _Task("crop", str(p), _rel(p, src), source, f"pbc:{p.stem}", scale.diameter, cls=c, ids=[0])
        for p, c in items
    ]
    return _Plan({source: info}, tasks, skipped)


def _plan_malaria(src: Path, bank: Bank, opts: dict) -> _Plan:
    expected = (
        "malaria crops SRC/{falciparum,healthy}/<slide>/<patch>/*.jpg or NIH "
        "SRC/[cell_images/]{Parasitized,Uninfected}/*.png"
    )
    _need_dir(src, expected)
    base = src
    if _find_ci(src, "cell_images") and _find_ci(_find_ci(src, "cell_images"), "Parasitized"):
        base = _find_ci(src, "cell_images")  # type: ignore[assignment]
    inf, hea = _find_ci(base, "falciparum"), _find_ci(base, "healthy")
    nih = False
    if not (inf or hea):
        inf, hea = _find_ci(base, "Parasitized"), _find_ci(base, "Uninfected")
        nih = True
    if not (inf or hea):
        raise LayoutError(f"expected {expected}; found neither in {src}")
    source = "nih-malaria" if nih else "malaria-crops"
    surround = "dark" if nih else "light"

    def files(d: Path | None) -> list[Path]:
        if d is None:
            return []
        return sorted(p for p in d.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS)

    inf_f, hea_f = files(inf), files(hea)
    if not inf_f and not hea_f:
        raise LayoutError(f"expected {expected}; no images in {src}")

    def group(p: Path) -> str:
        if nih:
            return f"{source}:" + re.sub(r"_cell_\d+$", "", p.stem)
        rel = p.parent.relative_to(base)
        return f"{source}:" + "/".join(rel.parts[1:]) if len(rel.parts) > 1 else f"{source}:{p.stem}"

    def masks_of(files: list[Path]) -> list[np.ndarray]:
        ms = []
        for p in _spread(files, 4 * _base.SCALE_SAMPLE):
            try:
                ex = M.extract_rbc(_read_rgb(str(p)), surround=surround)  # type: ignore[arg-type]
            except Exception:  # noqa: BLE001
                continue
            if ex.ok:
                ms.append(ex.mask)
        return ms

    def measure() -> ScaleEstimate:
        ms = masks_of(hea_f)
        if len(ms) >= 8:
            return diameter_from_masks(ms, method="median healthy RBC crop mask")
        return diameter_from_masks(ms + masks_of(inf_f), method="median RBC crop mask (healthy and infected)")

    scale = _scale_for(bank, source, opts.get("rbc_diameter"), measure)
    info = SourceInfo(source, opts.get("licence") or LICENCES[source], scale)
    items = _round_robin([[(p, BloodClass.INFECTED_RBC) for p in inf_f], [(p, BloodClass.HEALTHY_RBC) for p in hea_f]])
    tasks = [
        _Task("crop", str(p), _rel(p, src), source, group(p), scale.diameter, cls=int(c), surround=surround, ids=[0])
        for p, c in items
    ]
    return _Plan({source: info}, tasks)


def _folder_class(name: str) -> int | None:
    try:
        c = class_id(int(name)) if name.isdigit() else class_id(name)
    except ValueError:
        return None
    return c if c != 0 else None


def _plan_folder(src: Path, bank: Bank, opts: dict) -> _Plan:
    names = ", ".join(n.replace(" ", "_") for n in CLASS_NAMES[1:])
    expected = f"class folders SRC/<class>/*.png|jpg|tif with <class> one of {names} (masks optional: <stem>_mask.png)"
    _need_dir(src, expected)
    per, skipped = [], Counter()
    for d in sorted(p for p in src.iterdir() if p.is_dir()):
        cls = _folder_class(d.name)
        files = [f for f in _images(d) if not f.stem.endswith("_mask")]
        if cls is None:
            skipped[f"files in folder {d.name!r} (not a class name)"] += len(files)
            continue
        items = []
        for f in files:
            m = next((f.with_name(f"{f.stem}_mask{e}") for e in (".png", ".tif", ".bmp") if f.with_name(f"{f.stem}_mask{e}").is_file()), None)
            items.append((f, m, cls))
        per.append(items)
    if not any(per):
        raise LayoutError(f"expected {expected}; found none in {src}")
    items = _round_robin(per)
    source = opts.get("source") or f"folder:{src.resolve().name}"

    def measure() -> ScaleEstimate:
        healthy = [(i, m) for i, m, c in items if c == BloodClass.HEALTHY_RBC]
        if len(healthy) >= 8:
            ms = []
            for i, m in _spread(healthy, 4 * _base.SCALE_SAMPLE):
                try:
                    ex = M.check_mask(_mask_levels(str(m)), max_border=1.0) if m else M.extract_rbc(_read_rgb(str(i)))
                except Exception:  # noqa: BLE001
                    continue
                if ex.ok:
                    ms.append(ex.mask)
            try:
                return diameter_from_masks(ms, method="median healthy RBC sample")
            except ScaleError:
                pass
        return _measure_images([i for i, _, _ in items])

    scale = _scale_for(bank, source, opts.get("rbc_diameter"), measure)
    info = SourceInfo(source, opts.get("licence") or LICENCES["folder"], scale)
    tasks = []
    for i, m, c in items:
        kind = "masked" if m else "crop"
        tasks.append(_Task(kind, str(i), _rel(i, src), source, f"{source}:{_rel(i, src)}", scale.diameter,
                           cls=c, mask_path=str(m) if m else None, ids=[0]))
    return _Plan({source: info}, tasks, skipped)
