"""Synthesizer: training sets composited from single-cell samples, the way the reference work did.

Recipe (reference work, abhanjac/blood_cell_image_segmentation):

1. Large RBC *background fields* (``field_size`` x ``field_size``, 1000 by default) are filled with
   randomly placed RBC samples; the fields of a split cycle through three kinds: infected RBCs
   only, healthy RBCs only, and a mix of both (one third each).
2. ``tile`` x ``tile`` blocks (224) are cropped from each field at random (``crops_per_field``
   crops share one field, as the reference did with its 1500 fields), and WBC, thrombocyte and
   platelet-clump samples are affixed at random positions, rotations and flips.
3. Every combination of {no WBC, one of the 5 WBC types, two different WBC types} x {no platelet,
   thrombocytes, a clump, both} x {the 3 background kinds} (16 x 4 x 3 = 192) appears: each kind's
   images cycle through a shuffled list of the 64 cell combinations, so a split of
   ``3 * crops_per_field * ceil(64 / crops_per_field)`` images (192 by default) holds all 192.

Objects drawn later win their pixels in the mask; cells cut by the tile border keep their class.
Realism knobs (on by default, all drawn from the image's own seed): per-image stain (optical
density gain per channel) and colour (white balance) jitter, an illumination gradient, Gaussian
blur, sensor noise, per-field RBC density, RBC overlap and magnification (scale) jitter, and a
small per-object colour jitter. Each field's RBC colours are also pulled towards one reference
sample's (``field_color_harmony``), so a field looks like one slide and a bank whose infected and
healthy RBCs come from different sources does not teach "this source's colour = infected".

Output layout (``<out>`` is the *set root*)::

    <out>/synth.json                 {"format": "bloodseg-synth", ...}: seed, counts, config, pool
    <out>/<split>/images/<id>.png    RGB uint8, 224 x 224
    <out>/<split>/masks/<id>.png     uint8 class ids (classes.py table)
    <out>/<split>/labels/<id>.json   {"0": {className, classIdx, posX, posY, bboxW, bboxH, tlX, tlY,
                                           samplePath, bgPath}, "1": ...}, one entry per visible object
    <out>/<split>/coco.json          COCO instances: compressed-RLE segmentation, ``file_name``
                                     relative to the split folder, categories 1..9 = the class table

``<id>`` is ``<split>_<index>`` (zero-padded). Image ``index`` of a split depends only on
(seed, split, index) — and its field on (seed, split, index // crops_per_field) — so the same seed
gives byte-identical files with any number of worker processes, and :class:`SynthDataset` item
``i`` equals the written image ``i``.

Splits are drawn only from the pool's samples of that split. The pool is a :class:`SamplePool`:
from a sample bank folder (``manifest.csv`` + RGBA PNGs) or procedural (``render.render_cell``).

No napari and no torch import at module level (``SynthDataset`` imports torch on first use).
"""

from __future__ import annotations

import csv
import json
import math
import multiprocessing as mp
import os
import shutil
import struct
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from .classes import (
    CLASS_NAMES,
    CLASSES,
    NUM_CLASSES,
    PLATELET_CLASSES,
    RBC_CLASSES,
    WBC_CLASSES,
    BloodClass,
    class_table,
    folder_name,
)
from .steps import drain

__all__ = [
    "DEFAULT_COUNTS",
    "REFERENCE_COUNTS",
    "SPLITS",
    "PoolSample",
    "SamplePool",
    "SynthConfig",
    "SynthImage",
    "SynthDataset",
    "compose_image",
    "iter_synthesize",
    "synthesize",
    "missing_classes",
    "is_synth_set",
    "read_synth_set",
    "encode_png",
    "rle_encode",
    "instance_table",
    "check_output",
    "format_missing",
    "image_id",
]

SPLITS: tuple[str, ...] = ("train", "val", "test")
REFERENCE_COUNTS: dict[str, int] = {"train": 65350, "val": 6560, "test": 6560}
DEFAULT_COUNTS: dict[str, int] = {"train": 200, "val": 40, "test": 40}
SET_FORMAT = "bloodseg-synth"
SET_VERSION = 1
SET_JSON = "synth.json"
COCO_NAME = "coco.json"
MODEL_RBC_DIAMETER = 36.0  # px: the scale every model of this project sees (DESIGN.md)
KINDS: tuple[str, ...] = ("infected", "healthy", "mixed")
_KIND_CLASSES = {
    "infected": (int(BloodClass.INFECTED_RBC),),
    "healthy": (int(BloodClass.HEALTHY_RBC),),
    "mixed": (int(BloodClass.INFECTED_RBC), int(BloodClass.HEALTHY_RBC)),
}
PLATELET_OPTIONS: tuple[str, ...] = ("none", "thrombocyte", "clump", "both")
CELL_CLASSES: tuple[int, ...] = tuple(range(1, NUM_CLASSES))
_SPLIT_CODES = {"train": 0, "val": 1, "test": 2}


def _split_code(split: str) -> int:
    return _SPLIT_CODES.get(split, zlib.crc32(split.encode()) + 3)


# ============================================================================ sample pool
@dataclass(frozen=True)
class PoolSample:
    """One single-cell sample: where it comes from and how to load it."""

    sample_id: str
    cls: int
    split: str
    path: str  # recorded as samplePath in the labels (bank-relative path, or procedural/...)
    file: str | None = None  # absolute file to read (bank samples)
    seed: tuple[int, ...] | None = None  # render_cell seed (procedural samples)


class SamplePool:
    """Class id x split → samples, loaded lazily and cached (bounded LRU) per process.

    ``load(sample)`` returns (rgb uint8 (h, w, 3), mask bool (h, w)) at the pool's scale;
    ``scale`` (= 36 / the pool's RBC diameter) is applied by the synthesizer when it warps sprites.
    """

    def __init__(
        self,
        samples: Sequence[PoolSample],
        *,
        rbc_diameter: float = MODEL_RBC_DIAMETER,
        kind: str = "custom",
        root: str | None = None,
        cache_size: int = 20000,
    ):
        self._samples: list[PoolSample] = list(samples)
        self._index: dict[tuple[int, str], list[PoolSample]] = {}
        where: dict[str, str] = {}
        for s in self._samples:
            if not 1 <= int(s.cls) < NUM_CLASSES:
                raise ValueError(f"sample {s.sample_id}: class id {s.cls} is not a cell class (1..{NUM_CLASSES - 1})")
            prev = where.setdefault(s.path, s.split)
            if prev != s.split:
                raise ValueError(f"sample {s.path} is listed in two splits ({prev} and {s.split}); a sample may be in one only")
            self._index.setdefault((int(s.cls), s.split), []).append(s)
        self.rbc_diameter = float(rbc_diameter)
        if not self.rbc_diameter > 0:
            raise ValueError(f"rbc_diameter must be > 0, got {rbc_diameter}")
        self.scale = MODEL_RBC_DIAMETER / self.rbc_diameter
        self.kind = kind
        self.root = root
        self.cache_size = int(cache_size)
        self._cache: OrderedDict[str, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()

    # -- construction
    @classmethod
    def from_bank_dir(cls, path: str | os.PathLike) -> SamplePool:
        """A sample bank folder: ``manifest.csv`` rows (class_id, path, split, ...) + RGBA PNGs."""
        root = Path(path)
        man = root / "manifest.csv"
        if not root.is_dir():
            raise ValueError(f"{root}: no such folder (expected a sample bank)")
        if not man.is_file():
            raise ValueError(f"{root}: not a sample bank (no manifest.csv)")
        diameter = MODEL_RBC_DIAMETER
        meta = root / "bank.json"
        if meta.is_file():
            try:
                info = json.loads(meta.read_text())
                diameter = float(info.get("rbc_diameter_px", MODEL_RBC_DIAMETER))
            except (ValueError, TypeError, AttributeError) as e:
                raise ValueError(f"{meta}: unreadable bank.json ({e})") from None
        samples: list[PoolSample] = []
        with open(man, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            need = {"class_id", "path", "split"}
            missing = need - set(reader.fieldnames or ())
            if missing:
                raise ValueError(f"{man}: manifest lacks columns {', '.join(sorted(missing))}")
            for lineno, row in enumerate(reader, start=2):
                try:
                    c = int(row["class_id"])
                except (TypeError, ValueError):
                    raise ValueError(f"{man}:{lineno}: class_id {row.get('class_id')!r} is not an integer") from None
                rel = (row["path"] or "").strip()
                if not rel:
                    raise ValueError(f"{man}:{lineno}: empty path")
                sid = (row.get("sample_id") or "").strip() or Path(rel).stem
                samples.append(
                    PoolSample(sample_id=sid, cls=c, split=row["split"].strip(), path=rel, file=str((root / rel).resolve()))
                )
        return cls(samples, rbc_diameter=diameter, kind="bank", root=str(root.resolve()))

    @classmethod
    def procedural(
        cls,
        per_class: int = 8,
        seed: int = 0,
        splits: Sequence[str] = SPLITS,
        rbc_diameter: float = MODEL_RBC_DIAMETER,
    ) -> SamplePool:
        """``per_class`` sprites of every cell class and split from ``render.render_cell`` (rendered
        lazily on first use); every split has its own sprites (no sample in two splits)."""
        if int(per_class) < 1:
            raise ValueError(f"per_class must be >= 1, got {per_class}")
        samples = []
        for split in splits:
            for c in CELL_CLASSES:
                for k in range(int(per_class)):
                    samples.append(
                        PoolSample(
                            sample_id=f"proc-{split}-{folder_name(c)}-{k:03d}",
                            cls=c,
                            split=split,
                            path=f"procedural/{split}/{folder_name(c)}/{k:03d}",
                            seed=(int(seed), _split_code(split), c, k),
                        )
                    )
        pool = cls(samples, rbc_diameter=rbc_diameter, kind="procedural")
        pool._proc = {"per_class": int(per_class), "seed": int(seed)}
        return pool

    # -- queries
    def samples(self, cls: int | None = None, split: str | None = None) -> list[PoolSample]:
        if cls is not None and split is not None:
            return list(self._index.get((int(cls), split), ()))
        return [s for s in self._samples if (cls is None or s.cls == int(cls)) and (split is None or s.split == split)]

    def _of(self, cls: int, split: str) -> list[PoolSample]:
        return self._index.get((int(cls), split), [])

    def splits(self) -> list[str]:
        seen = {s.split for s in self._samples}
        return [s for s in SPLITS if s in seen] + sorted(seen - set(SPLITS))

    def counts(self) -> dict[str, dict[int, int]]:
        return {sp: {c: len(self._of(c, sp)) for c in CELL_CLASSES} for sp in self.splits()}

    def missing(self, splits: Sequence[str]) -> dict[str, list[int]]:
        """{split: [cell class ids without samples]} for the given splits (only splits lacking some)."""
        out = {}
        for sp in splits:
            lack = [c for c in CELL_CLASSES if not self._of(c, sp)]
            if lack:
                out[sp] = lack
        return out

    def __len__(self) -> int:
        return len(self._samples)

    def describe(self) -> dict:
        d: dict = {"kind": self.kind, "rbc_diameter_px": self.rbc_diameter, "samples": len(self._samples)}
        if self.root is not None:
            d["root"] = self.root
        if self.kind == "procedural":
            d.update(getattr(self, "_proc", {}))
        d["counts"] = {sp: {CLASS_NAMES[c]: n for c, n in per.items()} for sp, per in self.counts().items()}
        return d

    # -- pixels
    def load(self, s: PoolSample) -> tuple[np.ndarray, np.ndarray]:
        key = s.sample_id + "\0" + s.path
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        rgb, mask = self._read(s)
        rgb.setflags(write=False)
        mask.setflags(write=False)
        with self._lock:
            self._cache[key] = (rgb, mask)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return rgb, mask

    def _read(self, s: PoolSample) -> tuple[np.ndarray, np.ndarray]:
        if s.seed is not None:
            from .render import render_cell

            a = render_cell(s.cls, MODEL_RBC_DIAMETER, np.random.default_rng(list(s.seed)))
        else:
            import imageio.v3 as iio

            f = s.file if s.file is not None else s.path
            try:
                a = np.asarray(iio.imread(f))
            except FileNotFoundError:
                raise ValueError(f"{f}: sample file missing (listed in the bank manifest)") from None
            except Exception as e:  # imageio raises many types for broken files
                raise ValueError(f"{f}: unreadable sample ({type(e).__name__}: {e})") from None
        if a.ndim != 3 or a.shape[-1] != 4 or a.dtype != np.uint8:
            raise ValueError(f"{s.path}: expected an RGBA uint8 image, got shape {a.shape} {a.dtype}")
        mask = a[..., 3] > 127
        if not mask.any():
            raise ValueError(f"{s.path}: sample has an empty alpha mask")
        return np.ascontiguousarray(a[..., :3]), mask

    def preload(self, splits: Sequence[str] | None = None) -> None:
        """Load (render) every sample of ``splits`` now, e.g. before forking worker processes."""
        for s in self._samples:
            if splits is None or s.split in splits:
                self.load(s)

    def __getstate__(self):
        st = self.__dict__.copy()
        st.pop("_lock", None)
        # procedural sprites are costly to render: ship them; bank sprites reload fast from disk
        st["_cache"] = OrderedDict(self._cache) if self.kind == "procedural" else OrderedDict()
        return st

    def __setstate__(self, st):
        self.__dict__.update(st)
        self._lock = threading.Lock()


def missing_classes(pool: SamplePool, counts: dict[str, int]) -> dict[str, list[int]]:
    """Cell classes the pool lacks in the splits that are to get images."""
    return pool.missing([sp for sp, n in counts.items() if int(n) > 0])


def format_missing(missing: dict[str, list[int]]) -> str:
    return "; ".join(f"{sp}: {', '.join(CLASS_NAMES[c] for c in cl)}" for sp, cl in missing.items())


# ============================================================================ configuration
@dataclass(frozen=True)
class SynthConfig:
    """Composition parameters. Ranges are (low, high), drawn per field or per image."""

    tile: int = 224
    field_size: int = 1000
    crops_per_field: int = 32
    rbc_variants: int = 24  # rotated/scaled RBC sprites prepared per field and class (x 8 flips/turns)
    rbc_density: tuple[float, float] = (0.35, 0.75)  # field area covered by RBCs (before overlaps)
    rbc_overlap: tuple[float, float] = (0.0, 0.2)  # allowed centre-distance shortfall, fraction of r1 + r2
    mixed_infected_fraction: tuple[float, float] = (0.15, 0.5)
    thrombocytes: tuple[int, int] = (1, 4)  # count when a combination has thrombocytes
    wbc_cut_fraction: float = 0.25  # WBCs/platelets placed anywhere (may be cut by the border)
    scale_jitter: float = 0.08  # per-field magnification factor in [1 - j, 1 + j]
    object_scale_jitter: float = 0.05  # per object, on top of the field's
    object_color_jitter: float = 0.04  # per object RGB gain in [1 - j, 1 + j]
    field_color_harmony: float = 0.7  # 0..1: pull a field's RBC colours towards one reference sample's
    stain_jitter: float = 0.12  # per image optical-density gain per channel in [1 - j, 1 + j]
    color_jitter: float = 0.05  # per image white-balance gain per channel in [1 - j, 1 + j]
    illumination: float = 0.15  # max relative brightness change across the image (linear gradient)
    blur: tuple[float, float] = (0.0, 1.0)  # Gaussian sigma (px); below 0.3 → none
    noise: tuple[float, float] = (0.0, 4.0)  # Gaussian noise std (grey levels)
    png_level: int = 1  # zlib level for the written PNGs

    def __post_init__(self):
        if self.tile < 16:
            raise ValueError(f"tile must be >= 16, got {self.tile}")
        if self.field_size < self.tile:
            raise ValueError(f"field_size ({self.field_size}) must be >= tile ({self.tile})")
        if self.crops_per_field < 1:
            raise ValueError(f"crops_per_field must be >= 1, got {self.crops_per_field}")
        if self.rbc_variants < 1:
            raise ValueError(f"rbc_variants must be >= 1, got {self.rbc_variants}")
        for name in ("rbc_density", "rbc_overlap", "mixed_infected_fraction", "blur", "noise", "thrombocytes"):
            lo, hi = getattr(self, name)
            if not (0 <= lo <= hi):
                raise ValueError(f"{name} must be a range 0 <= low <= high, got {(lo, hi)}")
        if self.rbc_density[1] > 0.95 or self.rbc_overlap[1] >= 0.9:
            raise ValueError("rbc_density high must be <= 0.95 and rbc_overlap high < 0.9")
        for name in ("scale_jitter", "object_scale_jitter", "object_color_jitter", "stain_jitter", "color_jitter", "illumination"):
            v = getattr(self, name)
            if not 0 <= v < 0.5:
                raise ValueError(f"{name} must be in [0, 0.5), got {v}")
        if not 0 <= self.field_color_harmony <= 1:
            raise ValueError(f"field_color_harmony must be in [0, 1], got {self.field_color_harmony}")
        if not 0 <= self.wbc_cut_fraction <= 1:
            raise ValueError(f"wbc_cut_fraction must be in [0, 1], got {self.wbc_cut_fraction}")
        if not 0 <= self.png_level <= 9:
            raise ValueError(f"png_level must be 0..9, got {self.png_level}")

    @classmethod
    def plain(cls, **kw) -> SynthConfig:
        """The reference recipe without the realism knobs (no jitter, gradient, blur or noise)."""
        base = dict(
            scale_jitter=0.0, object_scale_jitter=0.0, object_color_jitter=0.0, stain_jitter=0.0,
            color_jitter=0.0, illumination=0.0, blur=(0.0, 0.0), noise=(0.0, 0.0), field_color_harmony=0.0,
        )
        base.update(kw)
        return cls(**base)

    def to_dict(self) -> dict:
        d = {}
        for f in fields(self):
            v = getattr(self, f.name)
            d[f.name] = list(v) if isinstance(v, tuple) else v
        return d

    @classmethod
    def from_dict(cls, d: dict) -> SynthConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in names})


# ============================================================================ sprites
@dataclass
class _Sprite:
    rgb: np.ndarray  # (h, w, 3) float32, premultiplied by alpha
    alpha: np.ndarray  # (h, w, 1) float32 soft coverage (bilinear)
    hard: np.ndarray  # (h, w) bool: the object's mask (alpha >= 0.5)
    cls: int
    path: str
    radius: float  # equivalent radius sqrt(area / pi)
    bg: np.ndarray | None  # (3,) median colour around the cell in its source, if any
    mean: np.ndarray | None  # (3,) mean colour inside the cell (RBC field sprites only)


def _warp(rgb: np.ndarray, mask: np.ndarray, angle: float, scale: float, flip: bool) -> np.ndarray | None:
    """Rotate (degrees) / scale / flip a sample about its mask's centre, bilinear.

    Returns rgba float32 (h, w, 4) with *premultiplied* colour (rgb * alpha) and soft alpha in
    [..., 3], cropped to the warped mask (+1 px); None if nothing is left."""
    if flip:
        rgb, mask = rgb[:, ::-1], mask[:, ::-1]
    ys, xs = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
    r0, r1, c0, c1 = ys[0], ys[-1] + 1, xs[0], xs[-1] + 1
    h, w = mask.shape
    p = 2
    # premultiplied alpha: the source's own background never bleeds into the cell's rim
    src = np.zeros((h + 2 * p, w + 2 * p, 4), np.float32)
    src[p:-p, p:-p, 3] = mask
    np.multiply(rgb, src[p:-p, p:-p, 3:4], out=src[p:-p, p:-p, :3])
    r0, r1, c0, c1 = int(r0), int(r1), int(c0), int(c1)  # Python ints: keep the maths float32
    cy, cx = (r0 + r1 - 1) / 2 + p, (c0 + c1 - 1) / 2 + p
    th = math.radians(angle)
    ca, sa = math.cos(th), math.sin(th)
    hh, hw = (r1 - r0) / 2 * scale, (c1 - c0) / 2 * scale
    ey = abs(ca) * hh + abs(sa) * hw
    ex = abs(sa) * hh + abs(ca) * hw
    Ho, Wo = int(math.ceil(2 * ey)) + 3, int(math.ceil(2 * ex)) + 3
    oy = np.arange(Ho, dtype=np.float32) - (Ho - 1) / 2
    ox = np.arange(Wo, dtype=np.float32) - (Wo - 1) / 2
    inv = 1.0 / scale
    # inverse map: src = c + R(-th) * out / scale
    iy = cy + inv * (ca * oy[:, None] - sa * ox[None, :])
    ix = cx + inv * (sa * oy[:, None] + ca * ox[None, :])
    Hs, Ws = src.shape[:2]
    np.clip(iy, 0, Hs - 1.001, out=iy)
    np.clip(ix, 0, Ws - 1.001, out=ix)
    y0 = np.floor(iy)
    x0 = np.floor(ix)
    fy = (iy - y0)[..., None]  # float32 throughout (an int array here would promote to float64)
    fx = (ix - x0)[..., None]
    flat = src.reshape(-1, 4)
    i00 = y0.astype(np.intp) * Ws + x0.astype(np.intp)
    a = np.take(flat, i00, axis=0)  # np.take: much faster than fancy indexing here
    b = np.take(flat, i00 + 1, axis=0)
    top = a + (b - a) * fx
    a = np.take(flat, i00 + Ws, axis=0)
    b = np.take(flat, i00 + Ws + 1, axis=0)
    top += (a + (b - a) * fx - top) * fy
    out = top
    hard = out[..., 3] >= 0.5
    if not hard.any():
        return None
    ys, xs = np.nonzero(hard.any(1))[0], np.nonzero(hard.any(0))[0]
    return np.ascontiguousarray(out[max(ys[0] - 1, 0) : ys[-1] + 2, max(xs[0] - 1, 0) : xs[-1] + 2])


def _make_sprite(
    pool: SamplePool, s: PoolSample, rng: np.random.Generator, scale: float, color_jitter: float, stats: bool = False
) -> _Sprite | None:
    """A sample warped at a random angle and flip, ``scale`` x the pool's scale; ``stats`` also
    measures its source background and mean colour (for RBC fields)."""
    rgb, mask = pool.load(s)
    ang = float(rng.uniform(0.0, 360.0))
    flip = bool(rng.random() < 0.5)
    gain = rng.uniform(1 - color_jitter, 1 + color_jitter, 3).astype(np.float32) if color_jitter > 0 else None
    rgba = _warp(rgb, mask, ang, scale * pool.scale, flip)
    if rgba is None:
        return None
    rgb_f = rgba[..., :3]
    if gain is not None:
        rgb_f = rgb_f * gain
    alpha = rgba[..., 3:4]
    hard = alpha[..., 0] >= 0.5
    bg, mean = None, None
    if stats:
        outside = ~mask
        # the source's plain background around the cell, when the sample shows enough of it
        bg = np.median(rgb[outside], 0).astype(np.float32) if outside.sum() >= 8 else None
        mean = rgb[mask].mean(0).astype(np.float32) * (gain if gain is not None else np.float32(1.0))
    return _Sprite(
        rgb=np.ascontiguousarray(rgb_f, dtype=np.float32),
        alpha=np.ascontiguousarray(alpha),
        hard=hard,
        cls=int(s.cls),
        path=s.path,
        radius=math.sqrt(float(hard.sum()) / math.pi),
        bg=bg,
        mean=mean,
    )


def _d8(a: np.ndarray, k: int) -> np.ndarray:
    """One of the 8 rotations by 90° / flips of an image (a view)."""
    return np.rot90(a if k < 4 else a[:, ::-1], k % 4)


def _paste_hard(canvas: np.ndarray, inst: np.ndarray, rgb8: np.ndarray, hard: np.ndarray, top: int, left: int, iid: int) -> bool:
    """Copy a pre-blended uint8 sprite's masked pixels at (top, left) (RBCs into fields)."""
    H, W = inst.shape
    h, w = hard.shape
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + h, H), min(left + w, W)
    if y0 >= y1 or x0 >= x1:
        return False
    sy, sx = slice(y0 - top, y1 - top), slice(x0 - left, x1 - left)
    m = hard[sy, sx]
    np.copyto(canvas[y0:y1, x0:x1], rgb8[sy, sx], where=m[..., None])
    inst[y0:y1, x0:x1][m] = iid
    return True


def _paste(canvas: np.ndarray, inst: np.ndarray, sp: _Sprite, top: int, left: int, iid: int) -> bool:
    """Blend ``sp`` at (top, left) into the float canvas; its hard mask takes the instance map."""
    H, W = inst.shape
    h, w = sp.hard.shape
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + h, H), min(left + w, W)
    if y0 >= y1 or x0 >= x1:
        return False
    sy, sx = slice(y0 - top, y1 - top), slice(x0 - left, x1 - left)
    reg = canvas[y0:y1, x0:x1]
    reg *= 1.0 - sp.alpha[sy, sx]  # premultiplied "over"
    reg += sp.rgb[sy, sx]
    inst[y0:y1, x0:x1][sp.hard[sy, sx]] = iid
    return True


# ============================================================================ background fields
@dataclass
class _Field:
    rgb: np.ndarray  # (F, F, 3) uint8
    inst: np.ndarray  # (F, F) int32, 0 = no RBC
    classes: np.ndarray  # (n + 1,) class of each instance id (0 → 0)
    paths: list[str]  # samplePath of instance id k at index k - 1
    kind: str
    scale: float
    name: str  # bgPath
    bg: np.ndarray  # (3,) float32 plain background colour


_DEFAULT_BG = np.array([235.0, 225.0, 225.0], np.float32)


class _Plan:
    """Which background kind and cell combination each image of a split gets."""

    def __init__(self, pool: SamplePool, split: str, seed: int, cfg: SynthConfig):
        self.split, self.seed, self.cfg = split, int(seed), cfg
        self.code = _split_code(split)
        have = {c for c in CELL_CLASSES if pool._of(c, split)}
        self.kinds = [k for k in KINDS if all(c in have for c in _KIND_CLASSES[k])] or ["empty"]
        wbcs = [int(c) for c in WBC_CLASSES if int(c) in have]
        wbc_opts: list[tuple[int, ...]] = [()] + [(a,) for a in wbcs]
        wbc_opts += [(a, b) for i, a in enumerate(wbcs) for b in wbcs[i + 1 :]]
        thr, clump = int(BloodClass.THROMBOCYTE) in have, int(BloodClass.PLATELET_CLUMP) in have
        plt_opts = [p for p in PLATELET_OPTIONS if (p != "thrombocyte" or thr) and (p != "clump" or clump) and (p != "both" or (thr and clump))]
        self.combos: list[tuple[tuple[int, ...], str]] = [(w, p) for w in wbc_opts for p in plt_opts]

    def field_kind(self, f: int) -> str:
        nk = len(self.kinds)
        perm = np.random.default_rng([self.seed, self.code, 2, f // nk]).permutation(nk)
        return self.kinds[int(perm[f % nk])]

    def combo(self, index: int) -> tuple[tuple[int, ...], str]:
        cpf = self.cfg.crops_per_field
        f = index // cpf
        nk = len(self.kinds)
        k = self.kinds.index(self.field_kind(f))
        local = (f // nk) * cpf + index % cpf  # index among this kind's images
        nc = len(self.combos)
        perm = np.random.default_rng([self.seed, self.code, 3, k, local // nc]).permutation(nc)
        return self.combos[int(perm[local % nc])]


def _make_field(pool: SamplePool, plan: _Plan, f: int) -> _Field:
    cfg = plan.cfg
    rng = np.random.default_rng([plan.seed, plan.code, 0, f])
    kind = plan.field_kind(f)
    F = cfg.field_size
    scale = 1.0 + float(rng.uniform(-cfg.scale_jitter, cfg.scale_jitter))
    density = float(rng.uniform(*cfg.rbc_density))
    overlap = float(rng.uniform(*cfg.rbc_overlap))
    p_inf = float(rng.uniform(*cfg.mixed_infected_fraction))
    name = f"fields/{plan.split}/{kind}_{f:05d}"

    variants: list[_Sprite] = []
    per_class: list[int] = []
    for c in _KIND_CLASSES.get(kind, ()):
        cand = pool._of(c, plan.split)
        K = cfg.rbc_variants
        pick = rng.choice(len(cand), K, replace=False) if len(cand) > K else rng.integers(0, len(cand), K)
        n0 = len(variants)
        for j in pick.tolist():
            sp = _make_sprite(pool, cand[j], rng, scale * (1 + float(rng.normal(0, 0.03))), cfg.object_color_jitter, stats=True)
            if sp is not None:
                variants.append(sp)
        per_class.append(len(variants) - n0)

    # one slide, one stain: pull every RBC's colour towards one reference sample's (harmony h:
    # gain = (reference / own) ** h), and take that sample's background; this also keeps the model
    # from learning a source's colour as the infected/healthy cue when the two come from different sources
    bgs = [v.bg for v in variants if v.bg is not None]
    bg = np.median(np.stack(bgs), 0).astype(np.float32) if bgs else _DEFAULT_BG.copy()
    if variants and cfg.field_color_harmony > 0:
        ref = variants[int(rng.integers(len(variants)))]
        if ref.bg is not None:
            bg = ref.bg.copy()
        for v in variants:
            gain = (ref.mean / np.maximum(v.mean, 1.0)) ** cfg.field_color_harmony
            v.rgb = v.rgb * gain.astype(np.float32)
    canvas = np.empty((F, F, 3), np.uint8)
    canvas[:] = np.clip(bg + 0.5, 0, 255).astype(np.uint8)
    # RBC sprites pre-blended with the field's background at their soft rim, then pasted by mask
    flat8 = [np.clip(bg * (1.0 - v.alpha) + v.rgb + 0.5, 0, 255).astype(np.uint8) for v in variants]
    inst = np.zeros((F, F), np.int32)
    classes = [0]
    paths: list[str] = []

    if variants:
        from scipy.spatial import cKDTree

        radii = np.array([v.radius for v in variants])
        areas = np.array([float(v.hard.sum()) for v in variants])
        rmax = float(radii.max())
        target = density * F * F
        if len(per_class) == 2:
            n_inf = per_class[0]
        cen = np.zeros((0, 2))
        rad = np.zeros(0)
        chosen: list[tuple[int, int, float, float]] = []  # (variant, dihedral, cy, cx)
        area = 0.0
        for _round in range(40):
            if area >= target:
                break
            m = int(np.clip((target - area) / areas.mean() * 3 + 32, 64, 8192))
            c = rng.uniform(-rmax, F + rmax, (m, 2))
            if len(per_class) == 2:
                v = np.where(
                    rng.random(m) < p_inf,
                    rng.integers(0, max(n_inf, 1), m),
                    n_inf + rng.integers(0, max(len(variants) - n_inf, 1), m),
                )
                v = np.clip(v, 0, len(variants) - 1)
            else:
                v = rng.integers(0, len(variants), m)
            d8 = rng.integers(0, 8, m)
            r = radii[v]
            bad = np.zeros(m, bool)
            reach = 2 * rmax
            if len(cen):
                pairs = cKDTree(c).sparse_distance_matrix(cKDTree(cen), reach, output_type="ndarray")
                if len(pairs):
                    i, j, dd = pairs["i"], pairs["j"], pairs["v"]
                    bad[i[dd < (1 - overlap) * (r[i] + rad[j])]] = True
            ok = np.flatnonzero(~bad)
            if not len(ok):
                continue
            conflicts: dict[int, list[int]] = {}
            pp = cKDTree(c[ok]).query_pairs(reach, output_type="ndarray")
            if len(pp):
                a, b = ok[pp[:, 0]], ok[pp[:, 1]]
                dd = np.hypot(*(c[a] - c[b]).T)
                close = dd < (1 - overlap) * (r[a] + r[b])
                for p_, q_ in zip(a[close].tolist(), b[close].tolist()):
                    lo, hi = (p_, q_) if p_ < q_ else (q_, p_)
                    conflicts.setdefault(hi, []).append(lo)
            taken: set[int] = set()
            new = []
            cand_area = areas[v].tolist()
            for k in ok.tolist():
                if area >= target:
                    break
                if any(q in taken for q in conflicts.get(k, ())):
                    continue
                taken.add(k)
                new.append(k)
                area += cand_area[k]
            if new:
                nk = np.array(new)
                cen = np.vstack([cen, c[nk]])
                rad = np.concatenate([rad, r[nk]])
                chosen.extend((int(v[k]), int(d8[k]), float(c[k, 0]), float(c[k, 1])) for k in new)
        views: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        iid = 0
        for vi, d, cy, cx in chosen:
            view = views.get((vi, d))
            if view is None:
                view = views[(vi, d)] = (_d8(flat8[vi], d), _d8(variants[vi].hard, d))
            h, w = view[1].shape
            if _paste_hard(canvas, inst, view[0], view[1], int(round(cy - h / 2)), int(round(cx - w / 2)), iid + 1):
                iid += 1
                classes.append(variants[vi].cls)
                paths.append(variants[vi].path)
    return _Field(canvas, inst, np.array(classes, np.uint8), paths, kind, scale, name, bg)


# ============================================================================ one image
@dataclass
class SynthImage:
    """One composed tile and its ground truth."""

    id: str
    split: str
    index: int
    image: np.ndarray  # (T, T, 3) uint8
    mask: np.ndarray  # (T, T) uint8 class ids
    instances: np.ndarray  # (T, T) int32, 1..n in label order, 0 = background
    objects: list[dict]  # labels JSON entries (reference keys), object k ↔ instance k + 1
    kind: str
    combo: tuple[tuple[int, ...], str]
    rles: list[str] | None = None  # COCO compressed RLE of instance k + 1 (None if not computed)
    areas: np.ndarray | None = None  # pixels of instance k + 1

    def labels_json(self) -> dict:
        return {str(k): o for k, o in enumerate(self.objects)}

    def labels_bytes(self) -> bytes:
        """The labels JSON as written: one object per line (C encoder; indent= is 10x slower)."""
        body = ",\n".join(f' "{k}": {json.dumps(o)}' for k, o in enumerate(self.objects))
        return ("{\n" + body + "\n}\n").encode() if body else b"{}\n"


def image_id(split: str, index: int, n: int = 0) -> str:
    return f"{split}_{index:0{max(6, len(str(max(n - 1, 0))))}d}"


_NOISE: dict[int, np.ndarray] = {}


def _noise_texture(T: int) -> np.ndarray:
    """A fixed unit-variance Gaussian noise texture (3 x 2T x 2T, planar); each image takes a random
    window of it, turned/flipped (drawing fresh noise per image costs more than the rest of the finishing)."""
    tex = _NOISE.get(T)
    if tex is None:
        tex = _NOISE[T] = np.random.default_rng(20240607).standard_normal((3, 2 * T, 2 * T), dtype=np.float32)
    return tex


def _finish(img: np.ndarray, rng: np.random.Generator, cfg: SynthConfig) -> np.ndarray:
    """Per-image realism: stain/colour jitter (LUT), illumination gradient, blur, noise.
    Works on channel planes (3, T, T): several times faster than interleaved RGB here."""
    T = img.shape[0]
    g = rng.uniform(1 - cfg.stain_jitter, 1 + cfg.stain_jitter, 3) if cfg.stain_jitter > 0 else np.ones(3)
    wb = rng.uniform(1 - cfg.color_jitter, 1 + cfg.color_jitter, 3) if cfg.color_jitter > 0 else np.ones(3)
    amp = float(rng.uniform(0, cfg.illumination)) if cfg.illumination > 0 else 0.0
    theta = float(rng.uniform(0, 2 * np.pi))
    sigma = float(rng.uniform(*cfg.blur)) if cfg.blur[1] > 0 else 0.0
    noise = float(rng.uniform(*cfg.noise)) if cfg.noise[1] > 0 else 0.0
    # optical density gain per channel: I' = 255 (I / 255) ** g, then white balance
    x = np.arange(256, dtype=np.float64) / 255.0
    lut = (255.0 * np.power(np.maximum(x, 1 / 510)[None, :], g[:, None]) * wb[:, None]).astype(np.float32)
    out = np.empty((3, T, T), np.float32)
    for ch in range(3):
        np.take(lut[ch], img[..., ch], out=out[ch])
    if amp > 0:
        t = np.linspace(-0.5, 0.5, T, dtype=np.float32)
        out *= 1.0 + amp * (math.sin(theta) * t[:, None] + math.cos(theta) * t[None, :])
    if sigma >= 0.3:
        from scipy import ndimage

        ndimage.gaussian_filter(out, (0, sigma, sigma), truncate=3.0, output=out)
    if noise > 0:
        tex = _noise_texture(T)
        oy, ox = (int(v) for v in rng.integers(0, tex.shape[1] - T + 1, 2))
        k = int(rng.integers(0, 8))
        win = tex[:, oy : oy + T, ox : ox + T]
        out += np.rot90(win if k < 4 else win[..., ::-1], k % 4, axes=(1, 2)) * np.float32(noise)
    out += 0.5
    np.clip(out, 0, 255, out=out)
    return out.transpose(1, 2, 0).astype(np.uint8, order="C")


def _place(rng: np.random.Generator, T: int, h: int, w: int, cut: bool) -> tuple[float, float]:
    if cut or h >= T or w >= T:
        return float(rng.uniform(0, T)), float(rng.uniform(0, T))
    return float(rng.uniform(h / 2, T - h / 2)), float(rng.uniform(w / 2, T - w / 2))


def _compose(pool: SamplePool, plan: _Plan, index: int, fld: _Field, n: int = 0, rle: bool = True) -> SynthImage:
    cfg = plan.cfg
    T = cfg.tile
    rng = np.random.default_rng([plan.seed, plan.code, 1, index])
    F = cfg.field_size
    y, x = (int(v) for v in rng.integers(0, F - T + 1, 2))
    canvas = fld.rgb[y : y + T, x : x + T].astype(np.float32)
    inst = fld.inst[y : y + T, x : x + T].copy()
    wbcs, plt = plan.combo(index)
    todo: list[int] = []
    if plt in ("thrombocyte", "both"):
        todo += [int(BloodClass.THROMBOCYTE)] * int(rng.integers(cfg.thrombocytes[0], cfg.thrombocytes[1] + 1))
    if plt in ("clump", "both"):
        todo.append(int(BloodClass.PLATELET_CLUMP))
    todo += list(wbcs)  # WBCs last: on top
    classes = list(fld.classes.tolist())
    paths = list(fld.paths)
    placed: list[tuple[float, float, float]] = []
    for c in todo:
        cand = _samples_of(pool, c, plan.split)
        s = cand[int(rng.integers(len(cand)))]
        sc = fld.scale * (1 + float(rng.uniform(-cfg.object_scale_jitter, cfg.object_scale_jitter)))
        sp = _make_sprite(pool, s, rng, sc, cfg.object_color_jitter)
        if sp is None:
            continue
        h, w = sp.hard.shape
        cut = bool(rng.random() < cfg.wbc_cut_fraction)
        cy, cx = _place(rng, T, h, w, cut)
        for _ in range(20):  # keep affixed objects apart when there is room
            if all(math.hypot(cy - py, cx - px) >= 0.9 * (sp.radius + pr) for py, px, pr in placed):
                break
            cy, cx = _place(rng, T, h, w, cut)
        iid = len(classes)
        if _paste(canvas, inst, sp, int(round(cy - h / 2)), int(round(cx - w / 2)), iid):
            classes.append(c)
            paths.append(s.path)
            placed.append((cy, cx, sp.radius))
    img = np.clip(canvas + 0.5, 0, 255).astype(np.uint8)
    img = _finish(img, rng, cfg)

    cls_lut = np.array(classes, np.uint8)
    mask = cls_lut[inst]
    counts = np.bincount(inst.ravel(), minlength=len(classes))
    present = np.flatnonzero(counts[1:]) + 1
    relabel = np.zeros(len(classes), np.int32)
    relabel[present] = np.arange(1, len(present) + 1, dtype=np.int32)
    compact = relabel[inst]
    rles, areas, bboxes = instance_table(compact, len(present), rle=rle)

    objects = []
    for k, (tlx, tly, bw, bh) in enumerate(bboxes.tolist()):
        old = int(present[k])
        c = int(classes[old])
        objects.append(
            {
                "className": CLASS_NAMES[c],
                "classIdx": c,
                "posX": int(tlx + (bw + 1) // 2),
                "posY": int(tly + (bh + 1) // 2),
                "bboxW": int(bw),
                "bboxH": int(bh),
                "tlX": int(tlx),
                "tlY": int(tly),
                "samplePath": paths[old - 1],
                "bgPath": fld.name,
            }
        )
    return SynthImage(
        image_id(plan.split, index, n), plan.split, index, img, mask, compact, objects, fld.kind, (wbcs, plt), rles, areas
    )


def _samples_of(pool: SamplePool, cls: int, split: str) -> list[PoolSample]:
    cand = pool._of(cls, split)
    if not cand:
        raise ValueError(f"no {CLASS_NAMES[cls]} samples in split {split!r}")
    return cand


class _Composer:
    """Plans and a small field cache for one pool + seed + config (one per process)."""

    def __init__(self, pool: SamplePool, seed: int, cfg: SynthConfig, field_cache: int = 2):
        self.pool, self.seed, self.cfg = pool, int(seed), cfg
        self._plans: dict[str, _Plan] = {}
        self._fields: OrderedDict[tuple[str, int], _Field] = OrderedDict()
        self._field_cache = max(1, int(field_cache))
        self._lock = threading.Lock()

    def plan(self, split: str) -> _Plan:
        p = self._plans.get(split)
        if p is None:
            p = self._plans[split] = _Plan(self.pool, split, self.seed, self.cfg)
        return p

    def field(self, split: str, f: int) -> _Field:
        key = (split, f)
        with self._lock:
            fld = self._fields.get(key)
            if fld is not None:
                self._fields.move_to_end(key)
                return fld
        fld = _make_field(self.pool, self.plan(split), f)
        with self._lock:
            self._fields[key] = fld
            while len(self._fields) > self._field_cache:
                self._fields.popitem(last=False)
        return fld

    def image(self, split: str, index: int, n: int = 0, rle: bool = True) -> SynthImage:
        plan = self.plan(split)
        return _compose(self.pool, plan, int(index), self.field(split, int(index) // self.cfg.crops_per_field), n, rle)


def compose_image(pool: SamplePool, split: str, index: int, seed: int = 0, config: SynthConfig | None = None) -> SynthImage:
    """Image ``index`` of ``split`` exactly as :func:`synthesize` writes it (builds its field)."""
    return _Composer(pool, seed, config or SynthConfig(), field_cache=1).image(split, index)


# ============================================================================ encoders
def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def encode_png(arr: np.ndarray, level: int = 1) -> bytes:
    """Minimal fast PNG encoder for uint8 grey (H, W) / RGB / RGBA arrays.

    Colour images use the 'Up' filter and zlib's RLE strategy (noisy tiles gain nothing from
    string matching, and it is ~2x faster than Pillow's default); grey masks use plain deflate."""
    a = np.ascontiguousarray(arr)
    if a.dtype != np.uint8 or a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise ValueError(f"encode_png needs uint8 (H, W), (H, W, 3) or (H, W, 4), got {a.shape} {a.dtype}")
    h, w = a.shape[:2]
    ch = 1 if a.ndim == 2 else a.shape[2]
    rows = a.reshape(h, w * ch)
    raw = np.empty((h, w * ch + 1), np.uint8)
    if ch == 1:
        raw[:, 0] = 0
        raw[:, 1:] = rows
        comp = zlib.compressobj(level, zlib.DEFLATED, 15, 8, zlib.Z_DEFAULT_STRATEGY)
    else:
        raw[:, 0] = 2  # Up
        raw[0, 1:] = rows[0]
        np.subtract(rows[1:], rows[:-1], out=raw[1:, 1:])
        comp = zlib.compressobj(level, zlib.DEFLATED, 15, 8, zlib.Z_RLE)
    data = comp.compress(raw.tobytes()) + comp.flush()
    color_type = {1: 0, 3: 2, 4: 6}[ch]
    ihdr = struct.pack(">IIBBBBB", w, h, 8, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", data) + _png_chunk(b"IEND", b"")


def _rle_string(counts: np.ndarray, starts: np.ndarray) -> list[str]:
    """COCO compressed RLE strings (pycocotools' rleToString), vectorised over many RLEs.

    ``counts`` concatenates every RLE's counts; ``starts`` (k + 1,) are the boundaries."""
    total = len(counts)
    if total == 0:
        return [""] * (len(starts) - 1)
    lengths = np.diff(starts)
    local = np.arange(total) - np.repeat(starts[:-1], lengths)
    x = counts.astype(np.int64).copy()
    d = local > 2
    x[d] -= counts[np.flatnonzero(d) - 2]
    cs, ms = [], []
    rem = x
    for _ in range(8):  # 8 x 5 bits cover |x| < 2**39
        c = rem & 0x1F
        rem = rem >> 5
        more = np.where((c & 0x10) != 0, rem != -1, rem != 0)
        cs.append(c)
        ms.append(more)
    C = np.stack(cs, 1)
    M = np.stack(ms, 1)
    emit = np.ones_like(M)
    emit[:, 1:] = np.cumprod(M[:, :-1], axis=1).astype(bool)
    chars = ((C | (M.astype(np.int64) << 5)) + 48).astype(np.uint8)
    s = chars[emit].tobytes().decode("ascii")
    nch = emit.sum(1)
    cum = np.concatenate(([0], np.cumsum(nch)))
    b = cum[starts]
    return [s[b[i] : b[i + 1]] for i in range(len(starts) - 1)]


def rle_encode(instances: np.ndarray, n: int | None = None) -> tuple[list[str], np.ndarray]:
    """COCO compressed RLE of every instance 1..n of an instance map, plus their pixel areas.

    Equivalent to ``pycocotools.mask.encode(np.asfortranarray(instances == k))['counts']`` for
    each k, computed for all instances in one pass."""
    rles, areas, _ = instance_table(instances, n)
    return rles, areas


def instance_table(instances: np.ndarray, n: int | None = None, rle: bool = True) -> tuple[list[str] | None, np.ndarray, np.ndarray]:
    """(COCO RLE strings, areas (n,), bboxes (n, 4) as [x, y, w, h]) of instances 1..n, from one
    pass over the column-major runs of the map."""
    inst = np.asarray(instances)
    H, W = inst.shape
    n = int(inst.max()) if n is None else int(n)
    flat = inst.T.ravel()  # column-major, as COCO
    N = flat.size
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    st = np.concatenate(([0], change))
    en = np.concatenate((change, [N]))
    val = flat[st]
    fg = val > 0
    st, en, val = st[fg], en[fg], val[fg]
    order = np.argsort(val, kind="stable")
    st, en, val = st[order], en[order], val[order]
    areas = np.bincount(val, weights=en - st, minlength=n + 1)[1:].astype(np.int64)
    if n == 0:
        return ([] if rle else None), areas, np.zeros((0, 4), np.int64)
    first = np.concatenate(([True], val[1:] != val[:-1]))
    last = np.concatenate((val[1:] != val[:-1], [True]))
    if int(first.sum()) != n or val[0] != 1 or val[-1] != n:
        raise ValueError("instance ids must be 1..n, each present")
    # bounding boxes: a run may wrap from the bottom of one column to the top of the next
    gstart = np.flatnonzero(first)
    c0, c1 = st // H, (en - 1) // H
    wrap = c1 > c0
    r0 = np.where(wrap, 0, st % H)
    r1 = np.where(wrap, H - 1, (en - 1) % H)
    x0 = np.minimum.reduceat(c0, gstart)
    x1 = np.maximum.reduceat(c1, gstart)
    y0 = np.minimum.reduceat(r0, gstart)
    y1 = np.maximum.reduceat(r1, gstart)
    bboxes = np.stack([x0, y0, x1 - x0 + 1, y1 - y0 + 1], 1).astype(np.int64)
    if not rle:
        return None, areas, bboxes
    prev_end = np.concatenate(([0], en[:-1]))
    prev_end[first] = 0
    gap = st - prev_end
    ln = en - st
    nrun = len(st)
    trail = last & (en < N)  # a final background run (pycocotools writes none when it is empty)
    pos = 2 * np.arange(nrun) + np.cumsum(trail) - trail
    total = 2 * nrun + int(trail.sum())
    counts = np.empty(total, np.int64)
    counts[pos] = gap
    counts[pos + 1] = ln
    counts[pos[trail] + 2] = N - en[trail]
    starts = np.concatenate((pos[first], [total]))
    return _rle_string(counts, starts), areas, bboxes


# ============================================================================ writing a set
def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def _coco_categories() -> list[dict]:
    sup = {int(c): "WBC" for c in WBC_CLASSES} | {int(c): "platelet" for c in PLATELET_CLASSES} | {int(c): "RBC" for c in RBC_CLASSES}
    return [{"id": c.id, "name": c.name, "supercategory": sup[c.id], "color": list(c.color)} for c in CLASSES[1:]]


_W: dict = {}  # worker-process state (multiprocessing initializer)


def _init_worker(pool: SamplePool, seed: int, cfg: SynthConfig, out: str, counts: dict[str, int]) -> None:
    _W.clear()
    _W.update(_job_state(pool, seed, cfg, out, counts))


def _job_state(pool: SamplePool, seed: int, cfg: SynthConfig, out: str, counts: dict[str, int]) -> dict:
    return {"composer": _Composer(pool, seed, cfg, field_cache=1), "out": Path(out), "counts": counts}


def _run_job(job: tuple[str, int, int]) -> tuple[str, list[tuple[int, str, list[tuple]]]]:
    return _run_job_with(_W, job)


def _run_job_with(state: dict, job: tuple[str, int, int]) -> tuple[str, list[tuple[int, str, list[tuple]]]]:
    """Compose and write images [i0, i1) of a split (one field's crops); return COCO rows."""
    split, i0, i1 = job
    comp: _Composer = state["composer"]
    out: Path = state["out"] / split
    n = state["counts"][split]
    level = comp.cfg.png_level
    rows = []
    for i in range(i0, i1):
        si = comp.image(split, i, n)
        _atomic_write(out / "images" / f"{si.id}.png", encode_png(si.image, level))
        _atomic_write(out / "masks" / f"{si.id}.png", encode_png(si.mask, level))
        _atomic_write(out / "labels" / f"{si.id}.json", si.labels_bytes())
        anns = [
            (o["classIdx"], [o["tlX"], o["tlY"], o["bboxW"], o["bboxH"]], int(a), r)
            for o, r, a in zip(si.objects, si.rles, si.areas.tolist())
        ]
        rows.append((i, si.id, anns))
    return split, rows


def _jobs(counts: dict[str, int], cpf: int) -> list[tuple[str, int, int]]:
    jobs = []
    for split, n in counts.items():
        for i0 in range(0, n, cpf):
            jobs.append((split, i0, min(i0 + cpf, n)))
    return jobs


def _mp_context():
    methods = mp.get_all_start_methods()
    if "fork" in methods and threading.current_thread() is threading.main_thread():
        return mp.get_context("fork")
    return mp.get_context("spawn")  # from a GUI worker thread: never fork a threaded process


def _is_synth_root(p: Path) -> bool:
    f = p / SET_JSON
    if not f.is_file():
        return False
    try:
        return json.loads(f.read_text()).get("format") == SET_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def check_output(out: str | os.PathLike, overwrite: bool = False) -> bool:
    """Raise FileExistsError unless ``out`` may be written: new or empty, or an earlier synthesized
    set with ``overwrite``. Returns True if an earlier set would be replaced. No side effects."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} exists and is not empty; choose a new folder or pass --overwrite")
        if not _is_synth_root(out):
            raise FileExistsError(
                f"{out} is not empty and is not a synthesized set (no {SET_JSON}); refusing to clear it, choose a new folder"
            )
        return True
    return False


def prepare_output(out: str | os.PathLike, overwrite: bool = False) -> Path:
    """Check the output folder (:func:`check_output`); with ``overwrite``, remove an earlier set's
    split folders and synth.json (nothing else)."""
    out = Path(out)
    if check_output(out, overwrite):
        for sp in out.iterdir():
            if sp.is_dir() and (sp / "images").is_dir() and (sp / "masks").is_dir():
                shutil.rmtree(sp)
        (out / SET_JSON).unlink()
    out.mkdir(parents=True, exist_ok=True)
    return out


def _check_counts(counts: dict[str, int]) -> dict[str, int]:
    clean = {}
    for sp, n in counts.items():
        if isinstance(n, bool) or int(n) != n or int(n) < 0:
            raise ValueError(f"image count for {sp} must be a non-negative integer, got {n!r}")
        if "/" in sp or "\\" in sp or sp in ("", ".", ".."):
            raise ValueError(f"bad split name {sp!r}")
        if int(n) > 0:
            clean[sp] = int(n)
    if not clean:
        raise ValueError("nothing to synthesize: every split count is 0")
    return clean


def iter_synthesize(
    pool: SamplePool,
    out: str | os.PathLike,
    counts: dict[str, int] | None = None,
    *,
    seed: int = 0,
    workers: int = 1,
    config: SynthConfig | None = None,
    overwrite: bool = False,
    allow_missing: bool = False,
) -> Iterator[tuple[int, int]]:
    """Write a synthesized set; yields (images done, total) as it goes and returns a summary dict
    (``summary = yield from iter_synthesize(...)``). Closing the generator stops the workers
    (the set is then left incomplete: synth.json says ``"complete": false``)."""
    cfg = config or SynthConfig()
    counts = _check_counts(dict(DEFAULT_COUNTS if counts is None else counts))
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    workers = max(1, int(workers))
    lack = missing_classes(pool, counts)
    if lack and not allow_missing:
        raise ValueError(f"the sample pool lacks classes: {format_missing(lack)} (add samples, or allow missing classes)")
    for sp in counts:
        if not pool.samples(split=sp):
            raise ValueError(f"the sample pool has no samples at all for split {sp!r}")
    out = prepare_output(out, overwrite)
    meta = {
        "format": SET_FORMAT,
        "version": SET_VERSION,
        "complete": False,
        "seed": seed,
        "counts": counts,
        "splits": list(counts),
        "tile": cfg.tile,
        "layout": {
            "images": "<split>/images/<id>.png",
            "masks": "<split>/masks/<id>.png",
            "labels": "<split>/labels/<id>.json",
            "coco": f"<split>/{COCO_NAME}",
        },
        "config": cfg.to_dict(),
        "pool": pool.describe(),
        "missing_classes": {sp: [CLASS_NAMES[c] for c in cl] for sp, cl in lack.items()},
        "class_table": class_table(),
    }
    _atomic_write(out / SET_JSON, json.dumps(meta, indent=1).encode())
    for sp in counts:
        for sub in ("images", "masks", "labels"):
            (out / sp / sub).mkdir(parents=True, exist_ok=True)

    total = sum(counts.values())
    jobs = _jobs(counts, cfg.crops_per_field)
    t0 = time.perf_counter()
    mpool = None
    if workers > 1 and len(jobs) > 1:
        if pool.kind == "procedural":
            pool.preload(list(counts))  # render once, ship to the workers
        mpool = _mp_context().Pool(min(workers, len(jobs)), initializer=_init_worker, initargs=(pool, seed, cfg, str(out), counts))
        results = mpool.imap(_run_job, jobs, chunksize=1)
    else:
        state = _job_state(pool, seed, cfg, str(out), counts)
        results = (_run_job_with(state, j) for j in jobs)

    writers: dict[str, _CocoWriter] = {}
    done = 0
    try:
        yield (0, total)
        for split, rows in results:
            w = writers.get(split)
            if w is None:
                w = writers[split] = _CocoWriter(out / split / COCO_NAME, split, seed, cfg.tile)
            for i, iid, anns in rows:
                w.add(i, iid, anns)
            done += len(rows)
            if w.n_images == counts[split]:  # jobs come in order, split by split
                w.close()
            yield (done, total)
        if mpool is not None:
            mpool.close()
            mpool.join()
            mpool = None
    finally:
        if mpool is not None:
            mpool.terminate()
            mpool.join()
        for w in writers.values():
            w.abort()
    seconds = time.perf_counter() - t0
    meta["complete"] = True
    _atomic_write(out / SET_JSON, json.dumps(meta, indent=1).encode())
    return {"out": str(out), "counts": counts, "images": total, "seconds": seconds, "images_per_s": total / max(seconds, 1e-9)}


class _CocoWriter:
    """Streams one split's COCO instances file (annotations as they come, then the images list)."""

    def __init__(self, path: Path, split: str, seed: int, tile: int):
        self.path, self.tile = path, tile
        self.tmp = path.with_name(f".{path.name}.tmp")
        self.fh = open(self.tmp, "w", encoding="utf-8")
        info = {
            "description": f"napari-bloodseg synthetic blood smear tiles, split {split}",
            "version": str(SET_VERSION),
            "split": split,
            "seed": seed,
            "background_id": 0,
            "mask_values": "masks/<id>.png hold class ids (0 = background)",
        }
        head = json.dumps({"info": info, "licenses": [], "categories": _coco_categories(), "class_table": class_table()})
        self.fh.write(head[:-1] + ', "annotations": [')
        self.images: list[str] = []
        self.n_ann = 0
        self.n_images = 0
        self.closed = False

    def add(self, index: int, iid: str, anns: list[tuple]) -> None:
        img_id = index + 1
        self.images.append(
            json.dumps({"id": img_id, "file_name": f"images/{iid}.png", "mask_name": f"masks/{iid}.png", "width": self.tile, "height": self.tile})
        )
        self.n_images += 1
        parts = []
        for cls, bbox, area, rle in anns:
            self.n_ann += 1
            parts.append(
                '{"id": %d, "image_id": %d, "category_id": %d, "iscrowd": 0, "area": %d, "bbox": %s, '
                '"segmentation": {"size": [%d, %d], "counts": %s}}'
                % (self.n_ann, img_id, cls, area, json.dumps(bbox), self.tile, self.tile, json.dumps(rle))
            )
        if parts:
            self.fh.write(("\n" if self.n_ann == len(parts) else ",\n") + ",\n".join(parts))

    def close(self) -> None:
        if self.closed:
            return
        self.fh.write('\n], "images": [\n' + ",\n".join(self.images) + "\n]}\n")
        self.fh.close()
        os.replace(self.tmp, self.path)
        self.closed = True

    def abort(self) -> None:
        if not self.closed:
            self.fh.close()
            self.tmp.unlink(missing_ok=True)
            self.closed = True


def synthesize(
    pool: SamplePool,
    out: str | os.PathLike,
    counts: dict[str, int] | None = None,
    *,
    seed: int = 0,
    workers: int = 1,
    config: SynthConfig | None = None,
    overwrite: bool = False,
    allow_missing: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Write a synthesized set (see module docstring); returns a summary dict."""
    gen = iter_synthesize(
        pool, out, counts, seed=seed, workers=workers, config=config, overwrite=overwrite, allow_missing=allow_missing
    )
    return drain(gen, progress)


# ============================================================================ streaming dataset
class _SynthDatasetMixin:
    """Map-style dataset composing images on the fly: item i == image i of :func:`synthesize`
    (same pool, split, seed and config), whatever the DataLoader worker. Returns
    (image uint8 (T, T, 3), mask uint8 (T, T)). Items of one field share its RBC background,
    which is cached (``field_cache`` fields per process): sequential or field-grouped sampling
    is much faster than a full shuffle (or use a smaller ``field_size`` when shuffling)."""

    def __init__(self, pool: SamplePool, split: str = "train", n: int = 1000, seed: int = 0,
                 config: SynthConfig | None = None, field_cache: int = 4):
        self.pool, self.split, self.n, self.seed = pool, split, int(n), int(seed)
        self.config = config or SynthConfig()
        if self.n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        if not pool.samples(split=split):
            raise ValueError(f"the sample pool has no samples for split {split!r}")
        self._field_cache = field_cache
        self._composer: _Composer | None = None

    def __len__(self) -> int:
        return self.n

    def compose(self, i: int, rle: bool = True) -> SynthImage:
        if not -self.n <= i < self.n:
            raise IndexError(f"index {i} out of range for {self.n} images")
        i = i % self.n
        if self._composer is None:
            self._composer = _Composer(self.pool, self.seed, self.config, self._field_cache)
        return self._composer.image(self.split, i, self.n, rle)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        si = self.compose(int(i), rle=False)
        return si.image, si.mask

    def grouped_order(self, epoch: int = 0) -> list[int]:
        """A shuffled order that keeps each field's crops together (fields in random order, crops
        shuffled within a field), e.g. ``DataLoader(ds, sampler=ds.grouped_order(epoch))``: one field
        build per ``crops_per_field`` items instead of one per item under a full shuffle."""
        cpf = self.config.crops_per_field
        rng = np.random.default_rng([self.seed, 99, int(epoch)])
        order: list[int] = []
        for f in rng.permutation((self.n + cpf - 1) // cpf).tolist():
            order.extend(rng.permutation(np.arange(f * cpf, min((f + 1) * cpf, self.n))).tolist())
        return order

    def __getstate__(self):
        st = self.__dict__.copy()
        st["_composer"] = None
        return st


_SYNTH_DATASET = None


def __getattr__(name: str):
    # SynthDataset subclasses torch's Dataset; build it on first use so that importing this
    # module (the CLI, napari) does not import torch.
    global _SYNTH_DATASET
    if name == "SynthDataset":
        if _SYNTH_DATASET is None:
            from torch.utils.data import Dataset

            _SYNTH_DATASET = type("SynthDataset", (_SynthDatasetMixin, Dataset), {"__module__": __name__, "__qualname__": "SynthDataset", "__doc__": _SynthDatasetMixin.__doc__})
        return _SYNTH_DATASET
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ============================================================================ reading a set
def _split_dirs(p: Path) -> list[Path]:
    if (p / "images").is_dir() and (p / "masks").is_dir():
        return [p]
    found = [p / s for s in SPLITS if (p / s / "images").is_dir() and (p / s / "masks").is_dir()]
    others = sorted(q for q in p.iterdir() if q.is_dir() and q.name not in SPLITS and (q / "images").is_dir() and (q / "masks").is_dir()) if p.is_dir() else []
    return found + others


def is_synth_set(path: str | os.PathLike) -> bool:
    """A synthesized set root (synth.json of our format) or one of its split folders."""
    p = Path(path)
    if not p.is_dir():
        return False
    if _is_synth_root(p):
        return bool(_split_dirs(p))
    return (p / "images").is_dir() and (p / "masks").is_dir() and _is_synth_root(p.parent)


def read_synth_set(path: str | os.PathLike, max_images: int | None = None) -> list[tuple]:
    """napari LayerData for a synthesized set: per split, an RGB image stack and a labels stack in
    the class colours. Sets of more than 256 images per split are read lazily (dask)."""
    from .layers import labels_layer_kwargs

    p = Path(path)
    if not is_synth_set(p):
        raise ValueError(f"{p}: not a synthesized set (no {SET_JSON} of format {SET_FORMAT!r})")
    root = p if _is_synth_root(p) else p.parent
    setname = root.name
    layers = []
    for sd in _split_dirs(p):
        mask_dir = sd / "masks"
        ids = [q.stem for q in sorted((sd / "images").glob("*.png")) if (mask_dir / f"{q.stem}.png").is_file()]
        if max_images is not None:
            ids = ids[: int(max_images)]
        if not ids:
            continue
        imgs, masks = _stack(sd, ids)
        meta = {"bloodseg": {"kind": "synth set", "root": str(root), "split": sd.name, "ids": ids}}
        name = f"{setname} {sd.name}"
        layers.append((imgs, {"name": name, "rgb": True, "metadata": meta}, "image"))
        layers.append((masks, labels_layer_kwargs(f"{name} classes", metadata={"bloodseg": {"kind": "class map", **meta["bloodseg"]}}), "labels"))
    return layers


def _stack(sd: Path, ids: list[str]):
    import imageio.v3 as iio

    def img(i):
        return np.asarray(iio.imread(sd / "images" / f"{i}.png"))[..., :3]

    def msk(i):
        m = np.asarray(iio.imread(sd / "masks" / f"{i}.png"))
        return m[..., 0] if m.ndim == 3 else m

    if len(ids) > 256:
        try:
            import dask
            import dask.array as da

            first_i, first_m = img(ids[0]), msk(ids[0])
            ims = [da.from_delayed(dask.delayed(img)(i), first_i.shape, np.uint8) for i in ids]
            mss = [da.from_delayed(dask.delayed(msk)(i), first_m.shape, np.uint8) for i in ids]
            return da.stack(ims), da.stack(mss)
        except ImportError:
            ids = ids[:256]
    return np.stack([img(i) for i in ids]), np.stack([msk(i) for i in ids])
