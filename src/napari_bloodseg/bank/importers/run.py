"""The import driver: the planner of each format, running the tasks (optionally in worker processes) and adding the results to the bank (:func:`run_import`)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Literal, get_args

from tqdm import tqdm

from ..store import Bank, make_sample_id
from .annotated import _plan_rbc_points, _plan_voc
from .base import (
    ImportFormat,
    ImportReport,
    LayoutError,
    SourceInfo,
    _Result,
    _Task,
    parse_format,
)
from .boxes import _plan_boxes_csv, _plan_yolo
from .crops import _plan_folder, _plan_malaria, _plan_pbc
from .masked import _plan_bccd_wbc, _plan_lisc, _plan_zheng
from .procedural import import_procedural
from .tasks import _run_task

GroupBy = Literal["image", "slide"]

_PLANNERS = {
    ImportFormat.PBC: _plan_pbc,
    ImportFormat.ZHENG: _plan_zheng,
    ImportFormat.BCCD_WBC: _plan_bccd_wbc,
    ImportFormat.MALARIA_CROPS: _plan_malaria,
    ImportFormat.RBC_POINTS: _plan_rbc_points,
    ImportFormat.VOC: _plan_voc,
    ImportFormat.LISC: _plan_lisc,
    ImportFormat.YOLO: _plan_yolo,
    ImportFormat.BOXES_CSV: _plan_boxes_csv,
    ImportFormat.FOLDER: _plan_folder,
}


# ----------------------------------------------------------------------------- driver


def _execute(tasks: list[_Task], jobs: int, progress: bool, desc: str) -> Iterator[_Result]:
    bar = tqdm(total=len(tasks), desc=desc, unit="img", disable=not progress, leave=False)
    try:
        if jobs <= 1 or len(tasks) < 8:
            for t in tasks:
                yield _run_task(t)
                bar.update()
        else:
            with ProcessPoolExecutor(max_workers=jobs) as ex:
                for r in ex.map(_run_task, tasks, chunksize=max(1, min(16, len(tasks) // (4 * jobs)))):
                    yield r
                    bar.update()
    finally:
        bar.close()


def run_import(
    fmt: str | ImportFormat,
    src: str | os.PathLike,
    bank: Bank | str | os.PathLike,
    *,
    limit: int | None = None,
    rbc_diameter: float | None = None,
    licence: str | None = None,
    source: str | None = None,
    jobs: int = 1,
    progress: bool = False,
    per_class: int | None = None,
    seed: int = 0,
    box_classes: Sequence[str] | None = None,
    hold_out: Sequence[str] | None = None,
    group_by: GroupBy = "image",
) -> ImportReport:
    """Import ``src`` in format ``fmt`` into ``bank`` (a Bank or a folder, created if needed).

    limit: read at most this many source images (taken round-robin over classes/sets).
    rbc_diameter: the source's healthy-RBC diameter in px (skips measuring).
    licence / source: override the licence text / source name recorded (``folder``, ``yolo``,
    ``boxes-csv``: both useful).
    jobs: worker processes. per_class / seed: for ``procedural`` only.
    box_classes (``yolo``): the class names of YOLO ids 0, 1, … (default: data.yaml or classes.txt).
    group_by (``yolo``, ``boxes-csv``): the unit of the train/val/test split, ``image`` or ``slide``
    (the file name up to a trailing ``_<number>``). hold_out: those images or slides go to the test
    split and stay there (e.g. a benchmark's held-out slides).
    """
    f = parse_format(fmt)
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be a positive number of images, got {limit}")
    b = bank if isinstance(bank, Bank) else Bank.create(bank)
    if f == ImportFormat.PROCEDURAL:
        return import_procedural(b, per_class=per_class or 20, seed=seed)
    t0 = time.perf_counter()
    srcp = Path(src)
    if not srcp.exists():
        raise LayoutError(f"{src} does not exist")
    if group_by not in get_args(GroupBy):
        raise ValueError(f"unknown grouping {group_by!r}; allowed: {', '.join(get_args(GroupBy))}")
    box_formats = (ImportFormat.YOLO, ImportFormat.BOXES_CSV)
    if source and f not in (ImportFormat.FOLDER, *box_formats):
        raise ValueError("--source is only for the folder, yolo and boxes-csv formats")
    if (hold_out or group_by != "image") and f not in box_formats:
        raise ValueError("--hold-out and --group-by are only for the yolo and boxes-csv formats")
    if box_classes and f != ImportFormat.YOLO:
        raise ValueError("--box-classes is only for the yolo format (other layouts name their boxes)")
    opts = {"rbc_diameter": rbc_diameter, "licence": licence, "source": source, "box_classes": box_classes,
            "hold_out": hold_out, "group_by": group_by}
    plan = _PLANNERS[f](srcp, b, opts)
    tasks = plan.tasks[:limit] if limit else plan.tasks
    report = ImportReport(f.value, str(src), plan.sources, files=len(tasks), skipped=plan.skipped)
    todo = []
    for t in tasks:
        if t.ids is not None and all(make_sample_id(t.source, t.rel, i) in b for i in t.ids):
            report.already += len(t.ids)
        else:
            todo.append(t)
    try:
        for res in _execute(todo, jobs, progress, f"import {f.value}"):
            _add_result(b, res, plan.sources, report)
        report.moved = b.balance_splits(plan.sources, keep={t.group for t in plan.tasks if t.split})
    finally:
        b.save()
    report.seconds = time.perf_counter() - t0
    return report


def _add_result(b: Bank, res: _Result, sources: dict[str, SourceInfo], report: ImportReport) -> None:
    if res.error:
        report.unreadable.append(res.error)
        return
    report.skipped.update(res.skipped)
    t = res.task
    info = sources[t.source]
    for c in res.crops:
        if c.rgba is None:
            report.rejected[c.reason or "rejected"] += 1
            continue
        s = b.add(
            c.rgba, c.cls, source=t.source, source_file=t.rel, index=c.index, licence=info.licence,
            source_rbc_diameter_px=info.scale.diameter, scale_factor=info.scale.factor, group=t.group, split=t.split,
        )
        if s is None:
            report.already += 1
        else:
            report.added[c.cls] += 1


# ----------------------------------------------------------------------------- procedural & clumps

#: Classes the renderer supplies (all nine cell classes; its clumps are aggregates it draws itself).
