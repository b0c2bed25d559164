"""Shared pieces of the importers: formats, licences, the import report, import tasks and their results, and the helpers every planner uses (listing, spreading, scale measurement)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import numpy as np

from ...classes import CLASS_NAMES
from ...io import imread
from .. import masks as M
from ..scale import (
    TARGET_RBC_DIAMETER,
    ScaleEstimate,
    measure_rbc_diameter,
    rescale_rgba,
)
from ..store import Bank


class ImportFormat(str, Enum):
    """Source formats of ``bloodseg bank import FORMAT``."""

    PBC = "pbc"
    ZHENG = "zheng"
    BCCD_WBC = "bccd-wbc"
    MALARIA_CROPS = "malaria-crops"
    RBC_POINTS = "rbc-points"
    VOC = "voc"
    LISC = "lisc"
    YOLO = "yolo"
    BOXES_CSV = "boxes-csv"
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
    "yolo": "unknown",
    "boxes-csv": "unknown",
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

    kind: str  # crop | masked | components | points | boxes
    path: str
    rel: str  # source_file as recorded (relative to SRC, posix)
    source: str
    group: str
    diameter: float  # source RBC diameter (px)
    cls: int | None = None
    mask_path: str | None = None
    surround: str = "light"
    points: list[tuple[float, float, int]] | None = None  # (row, col, class or -1) for points
    boxes: list[tuple[int, int, int, int, int]] | None = None  # (ymin, xmin, ymax, xmax, class or -1: a neighbour)
    ids: list[int] | None = None  # crop indices known in advance (for dedupe before running)
    note: str | None = None  # kind 'skip': why this file gives nothing
    notes: dict[str, int] | None = None  # annotations of this file not used, by reason
    split: str | None = None  # None: the hash of the group; 'test' for a group held out
    tight_boxes: bool = False  # boxes drawn tight round each cell: an RBC among touching ones is its box's disc


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
    return M.as_rgb(imread(path))


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
    m = imread(path)
    if m.ndim == 3:
        m = m[..., :3].max(-1) if m.shape[-1] in (3, 4) else m[..., 0]
    m = m.astype(np.float64)
    top = m.max(initial=0)
    return m > max(top * 0.25, 0.5) if top > 0 else np.zeros(m.shape, bool)


def _skip(path: Path, root: Path, source: str, note: str) -> _Task:
    return _Task("skip", str(path), _rel(path, root), source, "", 0.0, note=note)


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
