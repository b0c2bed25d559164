"""A slide is many fields: one run-level summary over the per-image summaries of
:func:`napari_bloodseg.cells.summarize` — counts, the WBC differential with the number of WBCs it
rests on, parasitemia with its 95 % Wilson interval, and a flag where too few cells were counted.

Written as ``summary.json`` (per image and total) and ``summary.csv`` (one row per image, then a
total row). No timestamps: the same images give byte-identical files. Qt-free.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from .classes import CLASS_NAMES, NUM_CLASSES, WBC_CLASSES, BloodClass

MIN_WBC = 100  # a differential resting on fewer WBCs is imprecise (the usual manual count is 100)
MIN_RBC = 1000  # a parasitemia resting on fewer RBCs is imprecise (thin-film counts: >= 1,000 RBCs)
Z95 = 1.959964
SUMMARY_JSON = "summary.json"
SUMMARY_CSV = "summary.csv"
_WBC_NAMES = [CLASS_NAMES[c] for c in WBC_CLASSES]


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """Wilson score interval (fractions in [0, 1]) of ``k`` successes in ``n`` trials; None if n = 0."""
    if n <= 0:
        return None
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def flags(rbc: int, wbc: int) -> list[str]:
    """Why the counts of one image or the run are too few to trust."""
    out = []
    if wbc < MIN_WBC:
        out.append(f"fewer than {MIN_WBC} WBCs ({wbc}): the differential is imprecise")
    if rbc < MIN_RBC:
        out.append(f"fewer than {MIN_RBC:,} RBCs ({rbc}): the parasitemia is imprecise")
    return out


def _entry(name: str, counts: dict[str, int], rbc_diameter: float | None = None, rbc_whole: int | None = None) -> dict:
    """One row of the run summary from per-class cell counts (``rbc_whole``: RBCs not cut by the
    image edge, None when not known)."""
    counts = {n: int(counts.get(n, 0)) for n in CLASS_NAMES[1:]}
    infected = counts[CLASS_NAMES[BloodClass.INFECTED_RBC]]
    rbc = infected + counts[CLASS_NAMES[BloodClass.HEALTHY_RBC]]
    wbc = sum(counts[n] for n in _WBC_NAMES)
    ci = wilson_interval(infected, rbc)
    return {
        "image": name,
        "counts": counts,
        "counts_total": sum(counts.values()),
        "rbc_total": rbc,
        "rbc_whole": rbc_whole,
        "infected_rbc": infected,
        "parasitemia_percent": round(100 * infected / rbc, 3) if rbc else None,
        "parasitemia_ci95_percent": [round(100 * ci[0], 3), round(100 * ci[1], 3)] if ci else None,
        "wbc_total": wbc,
        "wbc_differential_percent": {n: (round(100 * counts[n] / wbc, 2) if wbc else None) for n in _WBC_NAMES},
        "platelets": counts[CLASS_NAMES[BloodClass.THROMBOCYTE]],
        "platelet_clumps": counts[CLASS_NAMES[BloodClass.PLATELET_CLUMP]],
        "rbc_diameter_px": None if rbc_diameter is None else round(float(rbc_diameter), 2),
        "flags": flags(rbc, wbc),
    }


def run_summary(images: Sequence[tuple[str, dict]], failed: Iterable[str] = (), shared_scale: dict | None = None) -> dict:
    """Run-level summary of ``(image name, per-image summary)`` pairs (summaries as from
    :func:`napari_bloodseg.cells.summarize`, which hold ``counts`` and ``rbc_diameter_px``).
    ``shared_scale``: the run's one RBC diameter (``SharedScale.as_dict``), recorded when given."""
    rows = [_entry(name, s["counts"], s.get("rbc_diameter_px"), s.get("rbc_whole")) for name, s in images]
    total_counts = {n: sum(r["counts"][n] for r in rows) for n in CLASS_NAMES[1:]}
    wholes = [r["rbc_whole"] for r in rows]
    total = _entry("TOTAL", total_counts, rbc_whole=sum(wholes) if wholes and None not in wholes else None)
    total.pop("rbc_diameter_px")
    total["images"] = len(rows)
    out = {
        "format": "bloodseg-run-summary",
        "version": 1,
        "min_wbc": MIN_WBC,
        "min_rbc": MIN_RBC,
        "images": rows,
        "total": total,
        "failed": sorted(str(f) for f in failed),
    }
    if shared_scale is not None:
        out["shared_scale"] = shared_scale
    return out


def summarize_class_maps(maps: Sequence[tuple[str, np.ndarray, float, np.ndarray | None]]) -> dict:
    """Run summary over class maps ``(name, labels, rbc_diameter px, confidence or None)``, each
    counted with :func:`napari_bloodseg.cells.find_cells`."""
    from .cells import find_cells, summarize

    items = []
    for name, labels, diameter, confidence in maps:
        _, records = find_cells(labels, diameter, confidence)
        items.append((name, summarize(records, diameter)))
    return run_summary(items)


def is_class_map(data: np.ndarray) -> bool:
    """A 2-D integer map holding only class ids (0-9)."""
    a = np.asarray(data)
    return a.ndim == 2 and a.dtype.kind in "iu" and a.size > 0 and int(a.min()) >= 0 and int(a.max()) < NUM_CLASSES


CSV_COLUMNS: tuple[str, ...] = (
    "image", "counts_total", *CLASS_NAMES[1:], "rbc_total", "rbc_whole", "infected_rbc", "parasitemia_percent",
    "parasitemia_ci95_low", "parasitemia_ci95_high", "wbc_total",
    *(f"{n} %" for n in _WBC_NAMES), "platelets", "platelet_clumps", "rbc_diameter_px", "flags",
)


def _csv_row(r: dict) -> dict:
    ci = r["parasitemia_ci95_percent"] or (None, None)
    row = {"image": r["image"], "counts_total": r["counts_total"], **r["counts"], "rbc_total": r["rbc_total"],
           "rbc_whole": r.get("rbc_whole"), "infected_rbc": r["infected_rbc"], "parasitemia_percent": r["parasitemia_percent"],
           "parasitemia_ci95_low": ci[0], "parasitemia_ci95_high": ci[1], "wbc_total": r["wbc_total"],
           **{f"{n} %": v for n, v in r["wbc_differential_percent"].items()},
           "platelets": r["platelets"], "platelet_clumps": r["platelet_clumps"],
           "rbc_diameter_px": r.get("rbc_diameter_px"), "flags": "; ".join(r["flags"])}
    return {k: ("" if v is None else v) for k, v in row.items()}


def _write_csv(summary: dict, path: str | os.PathLike) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(CSV_COLUMNS))
        w.writeheader()
        for r in [*summary["images"], summary["total"]]:
            w.writerow(_csv_row(r))


def _write_json(summary: dict, path: str | os.PathLike) -> None:
    Path(path).write_text(json.dumps(summary, indent=1) + "\n")


def _create_new(path: Path, write) -> None:
    """Write through a temporary file, then link it to ``path``: complete or absent, and never
    replacing a file (FileExistsError)."""
    import tempfile

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.link(tmp, path)
    finally:
        os.unlink(tmp)


def write_run_summary(summary: dict, json_path: str | os.PathLike, csv_path: str | os.PathLike,
                      overwrite: bool = False) -> None:
    """``summary.json`` and ``summary.csv``, each written whole or not at all. Without
    ``overwrite`` an existing file is never replaced (FileExistsError, nothing written)."""
    from .checkpoint import atomic_write

    json_path, csv_path = Path(json_path), Path(csv_path)
    if overwrite:
        atomic_write(json_path, lambda tmp: _write_json(summary, tmp))
        atomic_write(csv_path, lambda tmp: _write_csv(summary, tmp))
        return
    taken = [p for p in (json_path, csv_path) if p.exists()]
    if taken:
        raise FileExistsError(f"{taken[0]} already exists")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    _create_new(json_path, lambda tmp: _write_json(summary, tmp))
    try:
        _create_new(csv_path, lambda tmp: _write_csv(summary, tmp))
    except BaseException:
        json_path.unlink()
        raise


def free_summary_paths(folder: str | os.PathLike) -> tuple[Path, Path]:
    """``summary.json``/``summary.csv`` in ``folder``, or ``summary_2``, ``summary_3``… where taken."""
    folder = Path(folder)
    k = 1
    while True:
        stem = "summary" if k == 1 else f"summary_{k}"
        paths = folder / f"{stem}.json", folder / f"{stem}.csv"
        if not any(p.exists() for p in paths):
            return paths
        k += 1


def format_run_summary(summary: dict) -> str:
    """A few lines for a person: the total and its flags."""
    t = summary["total"]
    lines = [f"{t['images']} images, {t['counts_total']} cells"]
    para = "–" if t["parasitemia_percent"] is None else (
        f"{t['parasitemia_percent']:.2f} % (95 % CI {t['parasitemia_ci95_percent'][0]:.2f}–"
        f"{t['parasitemia_ci95_percent'][1]:.2f} %)")
    lines.append(f"RBC: {t['rbc_total']}  infected: {t['infected_rbc']}  parasitemia: {para}")
    diff = ", ".join(f"{k} {v:.0f} %" for k, v in t["wbc_differential_percent"].items() if v)
    lines.append(f"WBC: {t['wbc_total']}" + (f"  ({diff})" if diff else ""))
    lines.append(f"platelets: {t['platelets']}  clumps: {t['platelet_clumps']}")
    lines += [f"flag: {f}" for f in t["flags"]]
    return "\n".join(lines)


def run_line(summary: dict) -> str:
    """The total in one line, e.g. '3 images, 1520 RBCs, parasitemia 1.32 % (95 % CI 0.85–2.04 %),
    112 WBCs'; with '; too few: …' where a flag is raised."""
    t = summary["total"]
    ci = t["parasitemia_ci95_percent"]
    para = "" if ci is None else f", parasitemia {t['parasitemia_percent']:.2f} % (95 % CI {ci[0]:.2f}–{ci[1]:.2f} %)"
    low = [w for w, n, m in (("WBCs", t["wbc_total"], MIN_WBC), ("RBCs", t["rbc_total"], MIN_RBC)) if n < m]
    return (f"{t['images']} image{'s' if t['images'] != 1 else ''}, {t['rbc_total']} RBCs{para}, {t['wbc_total']} WBCs"
            + (f"; too few {' and '.join(low)} for a reliable count" if low else ""))
