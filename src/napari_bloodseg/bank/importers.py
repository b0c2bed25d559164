"""Importers: one per source format, each turning a folder of cells into bank samples.

Every importer plans *tasks* (one per source image) in the main process, runs them (optionally in
worker processes: read, extract or check the mask, crop, rescale to the bank scale) and adds the
results to the bank. :func:`run_import` is the single entry point; it returns an
:class:`ImportReport` (added per class, already present, rejected per reason, unreadable files,
the measured RBC diameter of each source, time).

Formats (:class:`ImportFormat`) and the layouts they expect:

``pbc``
    ``SRC/<class>/*.jpg`` (PBC, Acevedo et al. 2020): basophil, eosinophil, lymphocyte, monocyte,
    neutrophil, platelet (→ thrombocyte); other PBC folders (ig, erythroblast) are skipped.
    No masks: the centred cell is extracted.
``zheng``
    ``SRC/Dataset N/NNN.bmp`` + ``NNN.png`` masks (0 / 128 cytoplasm / 255 nucleus) and
    ``SRC/Class Labels of Dataset N.csv`` (1 neutrophil, 2 lymphocyte, 3 monocyte, 4 eosinophil,
    5 basophil); SRC may also be one ``Dataset N`` folder (CSV in its parent). Sources
    ``zheng-ds1`` / ``zheng-ds2``. Dataset 1's faint red cells cannot be measured, so its RBC
    diameter is calibrated from the neutrophil size: DS1 neutrophil diameter × (DS2 RBC diameter /
    DS2 neutrophil diameter), all from expert masks and measured DS2 red cells.
``bccd-wbc``
    ``SRC/Input/BCCD/BloodImage_NNNNN.jpg``, ``SRC/Input/BCCD/labels.csv`` (``,Image,Category``)
    and ``SRC/Ground Truth/BCCD/BloodImage_Mask_NNNNN.png`` (RGB, ~0 / 160 / 255). Every connected
    WBC of the mask is a sample of the listed type; several different types listed → ambiguous,
    skipped; no type listed → skipped.
``malaria-crops``
    ``SRC/{falciparum,healthy}/<slide>/<patch>/*.jpg`` (near-white surround) or the NIH layout
    ``SRC/[cell_images/]{Parasitized,Uninfected}/*.png`` (black surround) → infected / healthy RBC.
    The cell is thresholded from its surround; the scale comes from the healthy cells themselves.
``rbc-points``
    ``SRC/Dataset/*.jpg`` + ``SRC/Label/<stem>.txt`` lines ``x y type`` (Chula RBC-12): type 0
    (normal) → healthy RBC; other types are not used. The field is segmented once; each point
    takes the cell containing it, rejected when it touches the frame, holds another point or is
    not convex (overlaps).
``voc``
    ``SRC/JPEGImages/*.jpg`` + ``SRC/Annotations/*.xml`` Pascal VOC boxes (BCCD): ``RBC`` →
    healthy RBC (the segmented cell at the box centre, rejected unless its box matches the
    annotated one, IoU ≥ 0.5), ``Platelets`` → thrombocyte (purple object in the box). ``WBC``
    boxes are not used: BCCD WBCs are better taken from ``bccd-wbc``, whose masks are expert drawn.
``lisc``
    The LISC distribution (Rezatofighi & Soltanian-Zadeh 2011): ``SRC/Main Dataset/<cls>/<n>.bmp``
    and ``SRC/Ground Truth Segmentation/<cls>/areaforexpert1/<n>_expert.bmp`` (grey masks: 0
    background, brighter levels cytoplasm and nucleus), ``<cls>`` in Baso, eosi, lymp, mono, neut
    (case-insensitive; ``mixt`` holds mixed cells and is skipped). The centred component is taken.
``folder``
    ``SRC/<class name>/*.{png,jpg,jpeg,tif,tiff,bmp}`` (class names as in the class table, e.g.
    ``healthy_rbc``, ``platelet clump``). A mask may sit beside an image as ``<stem>_mask.png``
    (non-zero = cell), or the image may carry an alpha channel; otherwise the centred cell is
    extracted. Scale from ``--rbc-diameter`` or measured (healthy RBC folder, else backgrounds).
``procedural``
    The project's renderer (:func:`napari_bloodseg.render.render_cell`) as a source; see
    :func:`import_procedural` (all nine classes, its own clumps included; SRC is ignored).

Platelet clumps of real data: no labelled source exists, :func:`synthesize_clumps` builds them
from single thrombocytes already in the bank (``bloodseg bank clumps``).

Licences: pbc CC BY 4.0, zheng GPL-3.0, bccd-wbc / malaria-crops / rbc-points (Chula) / voc
(BCCD) MIT, procedural BSD-3-Clause (the project's own), folder as given (default 'unknown').
"""

from __future__ import annotations

import csv
import math
import os
import re
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import imageio.v3 as iio
import numpy as np
from scipy import ndimage as ndi
from skimage import measure
from tqdm import tqdm

from ..classes import CLASS_NAMES, BloodClass, class_id
from . import masks as M
from .scale import (
    TARGET_RBC_DIAMETER,
    ScaleError,
    ScaleEstimate,
    diameter_from_masks,
    measure_rbc_diameter,
    rescale_rgba,
)
from .store import Bank, Sample, make_sample_id, stratified_splits


class ImportFormat(str, Enum):
    """Source formats of ``bloodseg bank import FORMAT``."""

    PBC = "pbc"
    ZHENG = "zheng"
    BCCD_WBC = "bccd-wbc"
    MALARIA_CROPS = "malaria-crops"
    RBC_POINTS = "rbc-points"
    VOC = "voc"
    LISC = "lisc"
    FOLDER = "folder"
    PROCEDURAL = "procedural"


FORMAT_NAMES: tuple[str, ...] = tuple(f.value for f in ImportFormat)


def parse_format(name: str | ImportFormat) -> ImportFormat:
    """The format called ``name``; ValueError listing the allowed names otherwise."""
    try:
        return ImportFormat(name)
    except ValueError:
        raise ValueError(f"unknown import format {name!r}; allowed: {', '.join(FORMAT_NAMES)}") from None


class LayoutError(ValueError):
    """SRC does not have the layout a format expects."""


LICENCES: dict[str, str] = {
    "pbc": "CC BY 4.0",
    "zheng": "GPL-3.0",
    "bccd-wbc": "MIT",
    "malaria-crops": "MIT",
    "nih-malaria": "public domain (U.S. NLM)",
    "rbc-points": "MIT",
    "voc": "MIT",
    "lisc": "LISC terms (research use, cite Rezatofighi & Soltanian-Zadeh 2011)",
    "procedural": "BSD-3-Clause",
    "folder": "unknown",
}

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
#: Images read to measure a source's RBC diameter.
SCALE_SAMPLE = 40


# ----------------------------------------------------------------------------- report


@dataclass
class SourceInfo:
    """A source as recorded in the manifest: name, licence and measured scale."""

    name: str
    licence: str
    scale: ScaleEstimate


@dataclass
class ImportReport:
    """What an import did."""

    format: str
    src: str
    sources: dict[str, SourceInfo] = field(default_factory=dict)
    files: int = 0
    added: Counter = field(default_factory=Counter)  # class id → samples
    already: int = 0
    rejected: Counter = field(default_factory=Counter)  # reason text → crops
    skipped: Counter = field(default_factory=Counter)  # note → count (not rejections)
    unreadable: list[str] = field(default_factory=list)
    seconds: float = 0.0
    moved: int = 0  # samples moved to another split so every split has every class (Bank.balance_splits)

    @property
    def n_added(self) -> int:
        return sum(self.added.values())

    def summary(self) -> str:
        lines = [f"bank import {self.format} {self.src}: {self.files} files in {self.seconds:.1f} s"]
        for s in self.sources.values():
            how = s.scale.method + (f", {s.scale.n_objects} cells" if s.scale.n_objects else "")
            lines.append(
                f"  source {s.name}: RBC diameter {s.scale.diameter:.1f} px ({how}), "
                f"rescale x{s.scale.factor:.3f}, licence {s.licence}"
            )
        per = ", ".join(f"{CLASS_NAMES[c]} {n}" for c, n in sorted(self.added.items()))
        lines.append(f"  added {self.n_added}" + (f" ({per})" if per else "") + f"; already in bank {self.already}")
        if self.moved:
            lines.append(f"  moved {self.moved} samples (whole source images) to fill empty val/test/train splits")
        if self.rejected:
            rej = ", ".join(f"{r}: {n}" for r, n in self.rejected.most_common())
            lines.append(f"  rejected {sum(self.rejected.values())} ({rej})")
        for note, n in self.skipped.most_common():
            lines.append(f"  skipped {n}: {note}")
        if self.unreadable:
            lines.append(f"  unreadable {len(self.unreadable)} (skipped):")
            lines += [f"    {u}" for u in self.unreadable]
        return "\n".join(lines)


# ----------------------------------------------------------------------------- tasks


@dataclass
class _Task:
    """One source image and what to take from it (picklable, runs in a worker)."""

    kind: str  # crop | masked | components | points | voc
    path: str
    rel: str  # source_file as recorded (relative to SRC, posix)
    source: str
    group: str
    diameter: float  # source RBC diameter (px)
    cls: int | None = None
    mask_path: str | None = None
    surround: str = "light"
    points: list[tuple[float, float, int]] | None = None  # (row, col, class or -1) for points/voc
    boxes: list[tuple[int, int, int, int, str]] | None = None  # (ymin, xmin, ymax, xmax, name)
    ids: list[int] | None = None  # crop indices known in advance (for dedupe before running)
    note: str | None = None  # kind 'skip': why this file gives nothing
    notes: dict[str, int] | None = None  # annotations of this file not used, by reason


@dataclass
class _Crop:
    index: int
    cls: int
    rgba: np.ndarray | None
    reason: str | None = None


@dataclass
class _Result:
    task: _Task
    crops: list[_Crop] = field(default_factory=list)
    error: str | None = None
    skipped: Counter = field(default_factory=Counter)


def _read_rgb(path: str) -> np.ndarray:
    return M.as_rgb(iio.imread(path))


def _finish(rgb: np.ndarray, mask: np.ndarray, diameter: float) -> np.ndarray | None:
    """Crop to the mask (+ margin) and rescale to the bank scale; None if nothing is left."""
    factor = TARGET_RBC_DIAMETER / diameter
    margin = max(2, math.ceil(3 / factor))
    out = rescale_rgba(M.crop_rgba(rgb, mask, margin=margin), factor)
    return out if (out[..., 3] > 0).sum() >= 4 else None


def _crop_from(idx: int, cls: int, rgb: np.ndarray, ex: M.Extraction, diameter: float) -> _Crop:
    if not ex.ok:
        return _Crop(idx, cls, None, ex.reason.value if ex.reason else M.RejectReason.EMPTY.value)
    if ex.window is not None:
        # the margin may reach beyond the window: pad the mask back into a slightly larger view
        m = max(2, math.ceil(3 * diameter / TARGET_RBC_DIAMETER))
        h, w = rgb.shape[:2]
        ys, xs = ex.window
        y0, y1, x0, x1 = max(0, ys.start - m), min(h, ys.stop + m), max(0, xs.start - m), min(w, xs.stop + m)
        big = np.zeros((y1 - y0, x1 - x0), bool)
        big[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0] = ex.mask
        rgb, ex = rgb[y0:y1, x0:x1], M.Extraction(big)
    rgba = _finish(rgb, ex.mask, diameter)
    if rgba is None:
        return _Crop(idx, cls, None, M.RejectReason.SIZE.value)
    return _Crop(idx, cls, rgba)


def _mask_levels(path: str) -> np.ndarray:
    """A mask file → bool (non-zero after a threshold at a quarter of its range; RGB by max)."""
    m = np.asarray(iio.imread(path))
    if m.ndim == 3:
        m = m[..., :3].max(-1) if m.shape[-1] in (3, 4) else m[..., 0]
    m = m.astype(np.float64)
    top = m.max(initial=0)
    return m > max(top * 0.25, 0.5) if top > 0 else np.zeros(m.shape, bool)


def _skip(path: Path, root: Path, source: str, note: str) -> _Task:
    return _Task("skip", str(path), _rel(path, root), source, "", 0.0, note=note)


def _run_task(t: _Task) -> _Result:
    res = _Result(t)
    if t.notes:
        res.skipped.update(t.notes)
    if t.kind == "skip":
        res.skipped[t.note or "skipped"] += 1
        return res
    try:
        img = iio.imread(t.path)
        rgb = M.as_rgb(img)
    except Exception as e:  # noqa: BLE001 - any decoder failure means unreadable
        res.error = f"{t.rel}: {type(e).__name__}: {e}"
        return res
    try:
        if t.kind == "crop":
            assert t.cls is not None
            alpha = np.asarray(img)[..., 3] if np.asarray(img).ndim == 3 and np.asarray(img).shape[-1] == 4 else None
            if alpha is not None and (alpha < 128).any() and (alpha >= 128).any():
                ex = M.check_mask(alpha >= 128, max_border=1.0)
            elif t.cls == BloodClass.PLATELET_CLUMP:
                ex = _extract_clump(rgb, t.diameter)
            else:
                ex = M.extract_cell(rgb, t.cls, t.diameter, surround=t.surround)  # type: ignore[arg-type]
            res.crops.append(_crop_from(0, t.cls, rgb, ex, t.diameter))
        elif t.kind == "masked":
            assert t.cls is not None and t.mask_path is not None
            try:
                m = _mask_levels(t.mask_path)
            except Exception as e:  # noqa: BLE001
                res.error = f"{t.mask_path}: {type(e).__name__}: {e}"
                return res
            if m.shape != rgb.shape[:2]:
                res.error = f"{t.rel}: mask shape {m.shape} differs from image {rgb.shape[:2]}"
                return res
            h, w = m.shape
            ex = M.check_mask(m, point=(h / 2, w / 2))
            res.crops.append(_crop_from(0, t.cls, rgb, ex, t.diameter))
        elif t.kind == "components":
            assert t.cls is not None and t.mask_path is not None
            m = _mask_levels(t.mask_path)
            if m.shape != rgb.shape[:2]:
                res.error = f"{t.rel}: mask shape {m.shape} differs from image {rgb.shape[:2]}"
                return res
            lb = measure.label(m)
            min_area = math.pi / 4 * (0.6 * t.diameter) ** 2
            k = 0
            for p in measure.regionprops(lb):
                if p.area < 0.15 * min_area:  # mask noise
                    continue
                ex = M.check_mask(lb == p.label, max_border=0.0)
                if ex.ok and p.area < min_area:
                    ex = M.reject(M.RejectReason.SIZE)
                res.crops.append(_crop_from(k, t.cls, rgb, ex, t.diameter))
                k += 1
            if k == 0:
                res.crops.append(_Crop(0, t.cls, None, M.RejectReason.EMPTY.value))
        elif t.kind == "points":
            assert t.points is not None
            labels = M.label_field(rgb, t.diameter)
            slices = ndi.find_objects(labels)
            allp = np.array([(r, c) for r, c, _ in t.points], float).reshape(-1, 2)
            for i, (r, c, cls) in enumerate(t.points):
                if cls < 0:
                    continue
                others = np.delete(allp, i, axis=0)
                ex = M.pick_cell(labels, (r, c), t.diameter, other_points=others, slices=slices)
                res.crops.append(_crop_from(i, cls, rgb, ex, t.diameter))
        elif t.kind == "voc":
            assert t.boxes is not None
            _run_voc(t, rgb, res)
        else:
            raise ValueError(f"unknown task kind {t.kind!r}")
    except Exception as e:  # noqa: BLE001 - report, never abort the whole import
        res.error = f"{t.rel}: failed: {type(e).__name__}: {e}"
    return res


def _run_voc(t: _Task, rgb: np.ndarray, res: _Result) -> None:
    assert t.boxes is not None
    h, w = rgb.shape[:2]
    labels: np.ndarray | None = None
    slices: list | None = None
    centres = np.array([((b[0] + b[2]) / 2, (b[1] + b[3]) / 2) for b in t.boxes], float).reshape(-1, 2)
    for i, (y0, x0, y1, x1, name) in enumerate(t.boxes):
        if name == "RBC":
            if labels is None:
                labels = M.label_field(rgb, t.diameter)
                slices = ndi.find_objects(labels)
            others = np.delete(centres, i, axis=0)
            ex = M.pick_cell(labels, tuple(centres[i]), t.diameter, other_points=others, slices=slices)
            if ex.ok and ex.window is not None:
                ys, xs = np.nonzero(ex.mask)
                oy, ox = ex.window[0].start, ex.window[1].start
                if _iou((oy + ys.min(), ox + xs.min(), oy + ys.max() + 1, ox + xs.max() + 1), (y0, x0, y1, x1)) < 0.5:
                    ex = M.reject(M.RejectReason.BOX)
            res.crops.append(_crop_from(i, int(BloodClass.HEALTHY_RBC), rgb, ex, t.diameter))
        elif name == "Platelets":
            bh, bw = y1 - y0, x1 - x0
            pad = int(max(bh, bw) * 0.5) + 2
            cy0, cy1, cx0, cx1 = max(0, y0 - pad), min(h, y1 + pad), max(0, x0 - pad), min(w, x1 + pad)
            crop = rgb[cy0:cy1, cx0:cx1]
            pt = ((y0 + y1) / 2 - cy0, (x0 + x1) / 2 - cx0)
            ex = M.extract_platelet(crop, t.diameter, point=pt)
            res.crops.append(_crop_from(i, int(BloodClass.THROMBOCYTE), crop, ex, t.diameter))


def _iou(a: tuple, b: tuple) -> float:
    y0, x0 = max(a[0], b[0]), max(a[1], b[1])
    y1, x1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0, y1 - y0) * max(0, x1 - x0)
    ua = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / ua if ua > 0 else 0.0


def _extract_clump(rgb: np.ndarray, diameter: float) -> M.Extraction:
    """A platelet clump without a mask: purple objects near the centre merged and closed."""
    from skimage import filters, morphology

    f = filters.gaussian(rgb.astype(float) / 255, sigma=1, channel_axis=-1)
    purple = M.nuclear_mask(f, min_size=3, floor=0.06)
    if not purple.any():
        return M.reject(M.RejectReason.EMPTY)
    r = max(2, int(0.15 * diameter))
    merged = morphology.closing(ndi.binary_dilation(purple, iterations=r), morphology.disk(r))
    merged = ndi.binary_erosion(merged, iterations=max(1, r - 1))
    h, w = purple.shape
    return M.check_mask(merged, point=(h / 2, w / 2), max_border=0.0)


# ----------------------------------------------------------------------------- helpers


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)


def _rel(p: Path, root: Path) -> str:
    return p.relative_to(root).as_posix()


def _round_robin(groups: Sequence[Sequence]) -> list:
    """Interleave lists so that a --limit takes evenly from each."""
    out: list = []
    for i in range(max((len(g) for g in groups), default=0)):
        out += [g[i] for g in groups if i < len(g)]
    return out


def _spread(items: Sequence, n: int) -> list:
    """n items evenly spread over a sequence (deterministic sample)."""
    if len(items) <= n:
        return list(items)
    step = len(items) / n
    return [items[int(i * step)] for i in range(n)]


def _scale_for(
    bank: Bank,
    source: str,
    rbc_diameter: float | None,
    measure: Callable[[], ScaleEstimate],
) -> ScaleEstimate:
    """Given diameter, else one recorded for this source in the bank, else measured."""
    if rbc_diameter:
        if not (2.0 <= rbc_diameter <= 1000.0):
            raise ValueError(f"--rbc-diameter {rbc_diameter} px is out of range (2-1000)")
        return ScaleEstimate(float(rbc_diameter), 0, "given")
    known = bank.source_diameter(source)
    if known:
        return ScaleEstimate(known, 0, "recorded in the bank by an earlier import")
    return measure()


def _measure_images(paths: Sequence[Path]) -> ScaleEstimate:
    def imgs() -> Iterator[np.ndarray]:
        for p in _spread(paths, SCALE_SAMPLE):
            try:
                yield _read_rgb(str(p))
            except Exception:  # noqa: BLE001 - unreadable files are reported by the tasks
                continue

    return measure_rbc_diameter(imgs())


def _need_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise LayoutError(f"expected {what}: {path} is not a folder")
    return path


def _find_ci(parent: Path, name: str) -> Path | None:
    """Child of ``parent`` named ``name``, case-insensitively."""
    if not parent.is_dir():
        return None
    for c in parent.iterdir():
        if c.name.lower() == name.lower():
            return c
    return None


# ----------------------------------------------------------------------------- planners


@dataclass
class _Plan:
    sources: dict[str, SourceInfo]
    tasks: list[_Task]
    skipped: Counter = field(default_factory=Counter)


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
        for p in _spread(files, 4 * SCALE_SAMPLE):
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


def _plan_voc(src: Path, bank: Bank, opts: dict) -> _Plan:
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
            if any(_iou((y0, x0, y1, x1), b[:4]) > 0.8 and b[4] == name for b in boxes):
                notes["duplicate boxes"] += 1
                continue
            if name in ("RBC", "Platelets"):
                ids.append(len(boxes))
            elif name == "WBC":
                notes["WBC boxes (not used: take BCCD WBCs from bccd-wbc)"] += 1
            else:
                notes[f"boxes of unknown class {name!r}"] += 1
            boxes.append((y0, x0, y1, x1, name))
        if ids:
            tasks.append(_Task("voc", str(img), _rel(img, src), source, f"bccd:{img.stem}", scale.diameter,
                               boxes=boxes, ids=ids, notes=dict(notes)))
        else:
            tasks.append(_skip(img, src, source, "images without RBC or platelet boxes"))
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
            for i, m in _spread(healthy, 4 * SCALE_SAMPLE):
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


_PLANNERS = {
    ImportFormat.PBC: _plan_pbc,
    ImportFormat.ZHENG: _plan_zheng,
    ImportFormat.BCCD_WBC: _plan_bccd_wbc,
    ImportFormat.MALARIA_CROPS: _plan_malaria,
    ImportFormat.RBC_POINTS: _plan_rbc_points,
    ImportFormat.VOC: _plan_voc,
    ImportFormat.LISC: _plan_lisc,
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
) -> ImportReport:
    """Import ``src`` in format ``fmt`` into ``bank`` (a Bank or a folder, created if needed).

    limit: read at most this many source images (taken round-robin over classes/sets).
    rbc_diameter: the source's healthy-RBC diameter in px (skips measuring).
    licence / source: override the licence text / source name recorded (``folder``: both useful).
    jobs: worker processes. per_class / seed: for ``procedural`` only.
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
    opts = {"rbc_diameter": rbc_diameter, "licence": licence, "source": source}
    plan = _PLANNERS[f](srcp, b, opts)
    if source and f != ImportFormat.FOLDER:
        raise ValueError("--source is only for the folder format")
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
        report.moved = b.balance_splits(plan.sources)
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
            source_rbc_diameter_px=info.scale.diameter, scale_factor=info.scale.factor, group=t.group,
        )
        if s is None:
            report.already += 1
        else:
            report.added[c.cls] += 1


# ----------------------------------------------------------------------------- procedural & clumps

#: Classes the renderer supplies (all nine cell classes; its clumps are aggregates it draws itself).
PROCEDURAL_CLASSES: tuple[int, ...] = tuple(int(c) for c in BloodClass if c != BloodClass.BACKGROUND)


def import_procedural(bank: Bank, per_class: int = 20, seed: int = 0) -> ImportReport:
    """Add ``per_class`` rendered cells of every cell class (source 'procedural', synthetic=1,
    licence BSD-3-Clause), deterministic in ``seed``. Each sample is its own split group; the
    cells of each class are split by :func:`stratified_splits` (80/10/10, and every split has every
    class from three per class on)."""
    from ..render import render_cell  # the project's renderer

    if per_class < 1:
        raise ValueError(f"--per-class must be positive, got {per_class}")
    t0 = time.perf_counter()
    source = "procedural"
    scale = ScaleEstimate(TARGET_RBC_DIAMETER, 0, "rendered at the bank scale")
    info = SourceInfo(source, LICENCES["procedural"], scale)
    report = ImportReport("procedural", "napari_bloodseg.render", {source: info})
    splits = stratified_splits(per_class)
    for cls in PROCEDURAL_CLASSES:
        for i in range(per_class):
            key = f"seed={seed}/{CLASS_NAMES[cls]}"
            if make_sample_id(source, key, i) in bank:
                report.already += 1
                continue
            rng = np.random.default_rng([seed, cls, i])
            rgba = np.asarray(render_cell(cls, TARGET_RBC_DIAMETER, rng))
            rgba = np.dstack([rgba[..., :3], np.where(rgba[..., 3] >= 128, 255, 0)]).astype(np.uint8)
            s = bank.add(
                rgba, cls, source=source, source_file=key, index=i, licence=info.licence,
                source_rbc_diameter_px=TARGET_RBC_DIAMETER, scale_factor=1.0,
                group=f"{source}:{seed}:{cls}:{i}", synthetic=True, split=splits[i],
            )
            report.files += 1
            if s is not None:
                report.added[cls] += 1
    report.moved = bank.balance_splits([source])  # banks made before splits were stratified
    bank.save()
    report.seconds = time.perf_counter() - t0
    return report


def _compose_clump(members: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Touching/overlapping aggregate of RGBA platelet sprites (later ones on top, alpha = union)."""
    sprites = []
    for m in members:
        k = int(rng.integers(4))
        s = np.rot90(m, k)
        if rng.random() < 0.5:
            s = s[:, ::-1]
        sprites.append(np.ascontiguousarray(s))
    radii = [0.5 * math.sqrt(max(1, (s[..., 3] > 0).sum()) / math.pi) * 2 for s in sprites]
    size = int(sum(max(s.shape[:2]) for s in sprites) * 2 + 8)
    canvas = np.zeros((size, size, 4), np.uint8)
    centres: list[tuple[float, float]] = []
    for j, s in enumerate(sprites):
        if not centres:
            cy, cx = size / 2, size / 2
        else:
            for _ in range(20):  # touching or overlapping a random earlier member
                a = int(rng.integers(len(centres)))
                ang = rng.uniform(0, 2 * math.pi)
                dist = (radii[a] + radii[j]) * rng.uniform(0.55, 0.95)
                cy, cx = centres[a][0] + dist * math.sin(ang), centres[a][1] + dist * math.cos(ang)
                # prefer spots that do not bury an earlier member completely
                if all(math.hypot(cy - y, cx - x) > 0.5 * (radii[j] + radii[k]) for k, (y, x) in enumerate(centres)):
                    break
        h, w = s.shape[:2]
        y0, x0 = int(round(cy - h / 2)), int(round(cx - w / 2))
        y0, x0 = min(max(0, y0), size - h), min(max(0, x0), size - w)
        win = canvas[y0 : y0 + h, x0 : x0 + w]
        inside = s[..., 3] > 0
        win[inside, :3] = s[inside, :3]
        win[inside, 3] = 255
        centres.append((y0 + h / 2, x0 + w / 2))
    mask = canvas[..., 3] > 0
    return M.crop_rgba(canvas[..., :3], mask, margin=3)


def synthesize_clumps(
    bank: Bank,
    n: int,
    seed: int = 0,
    sources: Iterable[str] | None = None,
    min_size: int = 3,
    max_size: int = 15,
) -> tuple[int, int]:
    """Build ``n`` platelet clumps of ``min_size``–``max_size`` thrombocyte samples of the bank.

    Each clump takes its platelets from one (source, split) pool, so its split is inherited and
    nothing leaks between splits; it is recorded as source ``<source>-clumps``, synthetic=1, with
    the members' licence and the first member's group. Deterministic in ``seed``: rerunning adds
    nothing twice. Returns (added, already present).
    """
    if n < 0:
        raise ValueError(f"number of clumps must be >= 0, got {n}")
    if not (2 <= min_size <= max_size):
        raise ValueError(f"need 2 <= min_size <= max_size, got {min_size}, {max_size}")
    wanted = None if sources is None else set(sources)
    pools: dict[tuple[str, str], list[Sample]] = {}
    for s in bank.samples(BloodClass.THROMBOCYTE):
        if s.synthetic and s.source != "procedural":
            continue
        if wanted is not None and s.source not in wanted:
            continue
        pools.setdefault((s.source, s.split), []).append(s)
    pools = {k: sorted(v, key=lambda s: s.sample_id) for k, v in pools.items() if len(v) >= min_size}
    if n and not pools:
        raise ValueError(f"no source has {min_size}+ single thrombocytes in one split to build clumps from")
    keys = sorted(pools)
    weights = np.array([len(pools[k]) for k in keys], float)
    weights /= weights.sum() if len(weights) else 1
    tag = "all" if wanted is None else ",".join(sorted(wanted))
    added = already = 0
    for i in range(n):
        sid = make_sample_id("platelet-clumps", f"seed={seed};sources={tag}", i)
        if sid in bank:
            already += 1
            continue
        rng = np.random.default_rng([seed, i])
        key = keys[int(rng.choice(len(keys), p=weights))]
        pool = pools[key]
        k = int(rng.integers(min_size, min(max_size, len(pool)) + 1))
        members = [pool[j] for j in rng.choice(len(pool), size=k, replace=False)]
        rgba = _compose_clump([m.load_rgba() for m in members], rng)
        s = bank.add(
            rgba, BloodClass.PLATELET_CLUMP, source=f"{key[0]}-clumps", source_file="+".join(m.sample_id for m in members),
            index=i, licence=members[0].licence, source_rbc_diameter_px=TARGET_RBC_DIAMETER, scale_factor=1.0,
            group=members[0].group, synthetic=True, split=key[1], sample_id=sid,
        )
        added += s is not None
    bank.save()
    return added, already
