"""The sample pool: single-cell samples (RGBA crops) from a sample bank folder or rendered procedurally."""

from __future__ import annotations

import csv
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..classes import (
    CLASS_NAMES,
    NUM_CLASSES,
    folder_name,
)
from .config import CELL_CLASSES, MODEL_RBC_DIAMETER, SPLITS, _split_code


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
            from ..render import render_cell

            a = render_cell(s.cls, MODEL_RBC_DIAMETER, np.random.default_rng(list(s.seed)))
        else:
            from ..io import imread

            f = s.file if s.file is not None else s.path
            try:
                a = imread(f)
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
