"""A lab's own box-annotated fields (YOLO or CSV boxes) as real fields, for two things:

- **Scores** (``bloodseg evaluate --boxes``): the real-field benchmark's metrics on the lab's fields
  (:func:`evaluate_box_set`): WBCs found, false WBCs per field, WBC type balanced accuracy against
  the box types, RBC count error where every RBC is boxed, platelets found, scale; at automatic,
  given (from the RBC boxes) and shared scale. How well does the model do on *my* slides?
- **Training pairs** (``bloodseg pairs``, :func:`write_box_pairs`): every field becomes (image,
  partial class map) at the training scale, made the way the benchmark's training pairs are
  (:mod:`fieldlabels`): glass, RBC bodies and the WBC in each WBC box (its type, or 'some WBC' for
  a box without one) labelled, pixels nobody can label from boxes ignored. ``bloodseg train --data
  OUT --minutes M`` then fine-tunes on them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .bank.importers.base import _measure_images
from .bank.importers.boxes import UNTYPED_WBC, BoxFields, BoxFormat, box_scale, read_box_fields, split_units
from .bank.masks import kind_of
from .bank.scale import ScaleEstimate
from .classes import IGNORE_INDEX
from .io import write_png
from .realfields import RealField

if TYPE_CHECKING:
    from .infer import Segmenter

#: A field whose labelled pixels are fewer than this share gives no pair (nothing to learn from).
MIN_LABELLED = 0.05


@dataclass
class PairsReport:
    out: str
    scale: ScaleEstimate
    written: list[str] = field(default_factory=list)
    held_out: list[str] = field(default_factory=list)  # of written, those in val/
    skipped: Counter = field(default_factory=Counter)  # reason → fields
    split: bool = False  # written to train/ and val/ (a hold-out was asked for)

    def summary(self) -> str:
        where = (f"train/ {len(self.written) - len(self.held_out)}, val/ {len(self.held_out)} (held out)"
                 if self.split else "images/ + masks/")
        lines = [f"wrote {len(self.written)} training pairs to {self.out} ({where}), "
                 f"RBC diameter {self.scale.diameter:.1f} px ({self.scale.method})"]
        lines += [f"  skipped {n}: {why}" for why, n in self.skipped.most_common()]
        return "\n".join(lines)


def _source_scale(fields, rbc_diameter: float | None) -> ScaleEstimate:
    """Given, else from the RBC boxes, else measured from the images (as the bank import does)."""
    if rbc_diameter:
        return ScaleEstimate(float(rbc_diameter), 0, "given")
    return box_scale(fields) or _measure_images([p for p, _, _, _ in fields])


def box_set_fields(fmt: BoxFormat, src: str | Path, box_classes: Sequence[str] | None = None,
                   rbc_diameter: float | None = None, rbcs_complete: bool = False
                   ) -> tuple[list[RealField], ScaleEstimate, BoxFields]:
    """The set's fields as :class:`RealField` s of source :data:`~napari_bloodseg.realmetrics.LAB`, with
    the set's RBC diameter (given, else from its RBC boxes, else measured; a field with three or
    more roundish RBC boxes of its own takes their median). ``rbcs_complete``: every RBC of every
    field is boxed, so the RBC boxes are a count."""
    from .realfields import _median_box_diameter
    from .realmetrics import LAB

    got = read_box_fields(fmt, src, box_classes)
    scale = _source_scale(got.fields, rbc_diameter)
    with_platelets = any(b[4] >= 0 and kind_of(b[4]) == "platelet" for _, _, boxes, _ in got.fields for b in boxes)
    out = []
    for path, shape, boxes, _ in got.fields:
        wbc = [(b[:4], None if b[4] == UNTYPED_WBC else int(b[4])) for b in boxes
               if b[4] == UNTYPED_WBC or (b[4] >= 0 and kind_of(b[4]) == "wbc")]
        rbc = [b[:4] for b in boxes if b[4] >= 0 and kind_of(b[4]) == "rbc"]
        d = scale.diameter if rbc_diameter else (_median_box_diameter(rbc, shape) or scale.diameter)
        out.append(RealField(LAB, path.stem, path, path.stem, "test", wbc_boxes=[b for b, _ in wbc],
                             wbc_types=[t for _, t in wbc], rbc_boxes=rbc if rbcs_complete else None,
                             platelet_boxes=[b[:4] for b in boxes if b[4] >= 0 and kind_of(b[4]) == "platelet"]
                             if with_platelets else None, rbc_complete=rbcs_complete, rbc_diameter=d))
    return out, scale, got


def evaluate_box_set(segmenter: Segmenter, fmt: BoxFormat, src: str | Path, *, box_classes: Sequence[str] | None = None,
                     rbc_diameter: float | None = None, rbcs_complete: bool = False, limit: int | None = None,
                     sheet: str | Path | None = None, log: Callable[[str], None] | None = None) -> dict:
    """The real-field benchmark's metrics on the set (``limit``: at most that many fields, evenly
    spread), keys as in ``bench_real.py``'s per-source results plus ``rbc_diameter`` (the set's)
    and ``rbc_diameter_from``; ``sheet``: a PNG of a few fields (image | map at each scale)."""
    from .realmetrics import LAB, _round, _spread, evaluate_fields

    fields, scale, _ = box_set_fields(fmt, src, box_classes, rbc_diameter, rbcs_complete)
    chosen = _spread(fields, limit) if limit else fields
    out = evaluate_fields(segmenter, chosen, LAB, sheet, log)
    out.pop("wbc_boxes_added_on_review", None)  # the benchmark's own review of its sources' boxes
    out["rbc_diameter"], out["rbc_diameter_from"] = round(scale.diameter, 2), scale.method
    return {k: _round(v) for k, v in out.items()}


def _one_pair(job: tuple[RealField, Path, Path, bool]) -> tuple[str, str | None]:
    """Write one field's pair; (stem, None) or (stem, why it gives none). Runs in a worker."""
    from .fieldlabels import field_pair

    f, img_out, mask_out, _ = job
    try:
        rgb, mask = field_pair(f)
    except Exception as e:  # noqa: BLE001 - one unreadable field must not stop the others
        return f.name, f"unreadable fields ({type(e).__name__})"
    if (mask != IGNORE_INDEX).mean() < MIN_LABELLED:
        return f.name, "fields with too little that boxes can label"
    write_png(img_out, rgb, overwrite=True)
    write_png(mask_out, mask.astype(np.uint8), overwrite=True)
    return f.name, None


def write_box_pairs(fmt: BoxFormat, src: str | Path, out: str | Path, *, box_classes: Sequence[str] | None = None,
                    rbc_diameter: float | None = None, overwrite: bool = False, jobs: int = 1,
                    hold_out: Sequence[str] = (), group_by: str = "image",
                    on_field: Callable[[int, int], None] | None = None) -> PairsReport:
    """Write ``out/images/<stem>.png`` and ``out/masks/<stem>.png`` for each field of ``src``; with
    ``hold_out`` (images, or slides with ``group_by='slide'``, as the bank import counts them) those
    fields go to ``out/val/`` and the others to ``out/train/``, so a fine-tune scores itself on
    slides it never learned (:func:`napari_bloodseg.finetune.find_pairs`).

    The RBC diameter: ``rbc_diameter`` if given, else the median of the RBC boxes (20 or more), else
    measured from the images (ScaleError when it cannot be). Existing pairs are kept (and counted as
    skipped) unless ``overwrite``. ``jobs``: worker processes. ``on_field(done, total)`` reports
    progress.
    """
    fields, scale, got = box_set_fields(fmt, src, box_classes, rbc_diameter)
    hold = set(hold_out)
    units = split_units(got.fields, group_by, hold, Path(src))
    out = Path(out)
    report = PairsReport(str(out), scale, split=bool(hold))
    report.skipped.update(why for _, why in got.missing)
    todo = []
    for f, (path, _, _, _) in zip(fields, got.fields):
        where = out if not hold else out / ("val" if units[path] in hold else "train")
        img_out, mask_out = where / "images" / f"{path.stem}.png", where / "masks" / f"{path.stem}.png"
        if not overwrite and (img_out.exists() or mask_out.exists()):
            report.skipped["fields whose pair is already there (--overwrite replaces it)"] += 1
            continue
        todo.append((f, img_out, mask_out, units[path] in hold))
    if jobs > 1 and len(todo) > 1:
        pool = ProcessPoolExecutor(max_workers=jobs)
        results = pool.map(_one_pair, todo, chunksize=max(1, min(8, len(todo) // (4 * jobs))))
    else:
        pool, results = None, map(_one_pair, todo)
    try:
        for i, ((stem, why), job) in enumerate(zip(results, todo)):
            if why is None:
                report.written.append(stem)
                if job[3]:
                    report.held_out.append(stem)
            else:
                report.skipped[why] += 1
            if on_field is not None:
                on_field(i + 1, len(todo))
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return report
