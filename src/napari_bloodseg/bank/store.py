"""The sample bank on disk: one RGBA PNG per cell plus a manifest.

Layout::

    <bank>/bank.json                      {"format": "bloodseg-bank", "version": 1, "rbc_diameter_px": 36.0}
    <bank>/manifest.csv                   one row per sample (MANIFEST_COLUMNS)
    <bank>/<class_folder>/<sample_id>.png RGBA uint8, alpha 255 inside the cell, 0 outside

``sample_id`` is a short SHA-1 of source, source file and crop index, so importing the same data
twice adds nothing twice. The split is a hash of the *group* (the source image a crop comes from,
prefixed by its data set, e.g. ``bccd:BloodImage_00001``): crops of one image never land in two
splits, even when two importers read the same fields (BCCD boxes and BCCD WBC masks).
:meth:`Bank.balance_splits` then moves whole groups where a class of a source lacks a split.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import imageio.v3 as iio
import numpy as np

from ..classes import CLASS_NAMES, class_id, folder_name
from ..io import imread

BANK_FORMAT = "bloodseg-bank"
BANK_VERSION = 1
BANK_RBC_DIAMETER = 36.0
MANIFEST = "manifest.csv"
BANK_JSON = "bank.json"
MANIFEST_COLUMNS: tuple[str, ...] = (
    "sample_id",
    "class_id",
    "class_name",
    "path",
    "source",
    "source_file",
    "licence",
    "source_rbc_diameter_px",
    "scale_factor",
    "split",
    "group",
    "synthetic",
)
Split = Literal["train", "val", "test"]
SPLITS: tuple[str, ...] = ("train", "val", "test")
DEFAULT_FRACTIONS: tuple[float, float, float] = (0.8, 0.1, 0.1)


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}")
    return split


def make_sample_id(source: str, source_file: str, index: int | str) -> str:
    """Deterministic 12-hex-digit id of crop ``index`` of ``source_file`` in ``source``."""
    return hashlib.sha1(f"{source}|{source_file}|{index}".encode()).hexdigest()[:12]


def assign_split(group: str, fractions: tuple[float, float, float] = DEFAULT_FRACTIONS) -> Split:
    """Deterministic train/val/test split of a group (hash → uniform [0, 1) → fractions)."""
    if len(fractions) != 3 or min(fractions) < 0 or sum(fractions) <= 0:
        raise ValueError(f"fractions must be three non-negative numbers (train, val, test), got {fractions}")
    total = float(sum(fractions))
    u = int(hashlib.sha1(group.encode()).hexdigest()[:8], 16) / 16**8
    if u < fractions[0] / total:
        return "train"
    if u < (fractions[0] + fractions[1]) / total:
        return "val"
    return "test"


def stratified_splits(n: int, fractions: tuple[float, float, float] = DEFAULT_FRACTIONS) -> list[Split]:
    """Splits of ``n`` items of a series without source images (e.g. the rendered cells of one
    class): items 0, 1, 2 go to train, val, test, each later one to the split furthest below its
    share so far. Every prefix of three or more items has all splits; item i's split does not
    depend on ``n``, so growing the series keeps the earlier items where they were."""
    if len(fractions) != 3 or min(fractions) < 0 or sum(fractions) <= 0:
        raise ValueError(f"fractions must be three non-negative numbers (train, val, test), got {fractions}")
    total = float(sum(fractions))
    counts = [0, 0, 0]
    out: list[Split] = []
    for i in range(max(0, n)):
        k = i if i < 3 else max(range(3), key=lambda j: ((i + 1) * fractions[j] / total - counts[j], -j))
        counts[k] += 1
        out.append(SPLITS[k])  # type: ignore[arg-type]
    return out


@dataclass
class Sample:
    """One manifest row; ``load()`` reads its pixels."""

    sample_id: str
    class_id: int
    class_name: str
    path: str
    source: str
    source_file: str
    licence: str
    source_rbc_diameter_px: float
    scale_factor: float
    split: str
    group: str
    synthetic: bool
    root: Path = field(default=Path("."), repr=False, compare=False)

    @property
    def abspath(self) -> Path:
        return self.root / self.path

    def load_rgba(self) -> np.ndarray:
        """RGBA uint8 (h, w, 4)."""
        a = imread(self.abspath)
        if a.ndim != 3 or a.shape[-1] != 4:
            raise ValueError(f"{self.abspath}: expected an RGBA PNG, got shape {a.shape}")
        return a

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        """(rgb uint8 (h, w, 3), mask bool (h, w))."""
        a = self.load_rgba()
        return np.ascontiguousarray(a[..., :3]), a[..., 3] > 127

    def row(self) -> dict[str, str]:
        return {
            "sample_id": self.sample_id,
            "class_id": str(self.class_id),
            "class_name": self.class_name,
            "path": self.path,
            "source": self.source,
            "source_file": self.source_file,
            "licence": self.licence,
            "source_rbc_diameter_px": f"{self.source_rbc_diameter_px:.2f}",
            "scale_factor": f"{self.scale_factor:.4f}",
            "split": self.split,
            "group": self.group,
            "synthetic": "1" if self.synthetic else "0",
        }

    @classmethod
    def from_row(cls, row: dict[str, str], root: Path) -> Sample:
        return cls(
            sample_id=row["sample_id"],
            class_id=int(row["class_id"]),
            class_name=row["class_name"],
            path=row["path"],
            source=row["source"],
            source_file=row["source_file"],
            licence=row["licence"],
            source_rbc_diameter_px=float(row["source_rbc_diameter_px"] or "nan"),
            scale_factor=float(row["scale_factor"] or "nan"),
            split=row["split"],
            group=row["group"],
            synthetic=row["synthetic"].strip() in ("1", "true", "True"),
            root=root,
        )


def is_bank(path: str | os.PathLike) -> bool:
    """True if ``path`` is a bank folder (has a bank.json of our format)."""
    p = Path(path) / BANK_JSON
    if not p.is_file():
        return False
    try:
        return json.loads(p.read_text()).get("format") == BANK_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


class Bank:
    """A sample bank folder. ``Bank.create(dir)`` makes or opens one; ``Bank.open(dir)`` opens one.

    ``add()`` writes the PNG at once and keeps the manifest row in memory; ``save()`` (also run on
    leaving a ``with`` block) writes manifest.csv atomically.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self._samples: dict[str, Sample] = {}
        self._dirty = False
        man = self.root / MANIFEST
        if man.is_file():
            with open(man, newline="") as fh:
                reader = csv.DictReader(fh)
                missing = set(MANIFEST_COLUMNS) - set(reader.fieldnames or ())
                if missing:
                    raise ValueError(f"{man}: manifest lacks columns {', '.join(sorted(missing))}")
                for row in reader:
                    s = Sample.from_row(row, self.root)
                    self._samples[s.sample_id] = s

    # -- opening
    @classmethod
    def open(cls, root: str | os.PathLike) -> Bank:
        """Open an existing bank; ValueError if ``root`` is not one."""
        if not is_bank(root):
            raise ValueError(f"{root} is not a sample bank (expected {BANK_JSON} with format {BANK_FORMAT!r})")
        meta = json.loads((Path(root) / BANK_JSON).read_text())
        if int(meta.get("version", 0)) > BANK_VERSION:
            raise ValueError(f"{root}: bank version {meta.get('version')} is newer than this reader ({BANK_VERSION})")
        return cls(root)

    @classmethod
    def create(cls, root: str | os.PathLike) -> Bank:
        """Open the bank at ``root``, creating the folder and bank.json if needed."""
        root = Path(root)
        if root.exists() and not root.is_dir():
            raise ValueError(f"{root} exists and is not a folder")
        if root.is_dir() and not is_bank(root) and (root / BANK_JSON).exists():
            raise ValueError(f"{root}/{BANK_JSON} exists but is not a {BANK_FORMAT} file")
        root.mkdir(parents=True, exist_ok=True)
        if not is_bank(root):
            meta = {"format": BANK_FORMAT, "version": BANK_VERSION, "rbc_diameter_px": BANK_RBC_DIAMETER}
            (root / BANK_JSON).write_text(json.dumps(meta, indent=2) + "\n")
        bank = cls(root)
        if not (root / MANIFEST).exists():
            bank._dirty = True
            bank.save()
        return bank

    def __enter__(self) -> Bank:
        return self

    def __exit__(self, *exc) -> None:
        self.save()

    # -- contents
    def __len__(self) -> int:
        return len(self._samples)

    def __contains__(self, sample_id: object) -> bool:
        return sample_id in self._samples

    def get(self, sample_id: str) -> Sample:
        return self._samples[sample_id]

    def samples(self, cls: int | str | None = None, split: str | None = None, source: str | None = None) -> list[Sample]:
        """Samples, optionally of one class (id or name), split and source, in manifest order."""
        cid = None if cls is None else class_id(cls)
        if split is not None:
            check_split(split)
        return [
            s
            for s in self._samples.values()
            if (cid is None or s.class_id == cid)
            and (split is None or s.split == split)
            and (source is None or s.source == source)
        ]

    def source_diameter(self, source: str) -> float | None:
        """The RBC diameter recorded for ``source`` by an earlier import, if any."""
        for s in self._samples.values():
            if s.source == source and np.isfinite(s.source_rbc_diameter_px):
                return s.source_rbc_diameter_px
        return None

    def add(
        self,
        rgba: np.ndarray,
        cls: int | str,
        *,
        source: str,
        source_file: str,
        index: int | str,
        licence: str,
        source_rbc_diameter_px: float,
        scale_factor: float,
        group: str,
        synthetic: bool = False,
        split: str | None = None,
        fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
        sample_id: str | None = None,
    ) -> Sample | None:
        """Write one sample (already at bank scale); None if its id is already in the bank.

        ``split`` defaults to :func:`assign_split` of ``group``; ``sample_id`` to
        :func:`make_sample_id` of (source, source_file, index).
        """
        sid = sample_id or make_sample_id(source, source_file, index)
        if sid in self._samples:
            return None
        rgba = np.asarray(rgba)
        if rgba.ndim != 3 or rgba.shape[-1] != 4 or rgba.dtype != np.uint8:
            raise ValueError(f"expected RGBA uint8 (h, w, 4), got {rgba.dtype} {rgba.shape}")
        if not (rgba[..., 3] > 0).any():
            raise ValueError("sample has an empty alpha mask")
        cid = class_id(cls)
        if cid == 0:
            raise ValueError("background is not a sample class")
        split = check_split(split) if split is not None else assign_split(group, fractions)
        rel = f"{folder_name(cid)}/{sid}.png"
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        iio.imwrite(path, rgba)
        s = Sample(
            sample_id=sid,
            class_id=cid,
            class_name=CLASS_NAMES[cid],
            path=rel,
            source=source,
            source_file=source_file,
            licence=licence,
            source_rbc_diameter_px=float(source_rbc_diameter_px),
            scale_factor=float(scale_factor),
            split=split,
            group=group,
            synthetic=bool(synthetic),
            root=self.root,
        )
        self._samples[sid] = s
        self._dirty = True
        return s

    def save(self) -> None:
        """Write manifest.csv (atomically) if anything changed."""
        if not self._dirty:
            return
        tmp = self.root / (MANIFEST + ".tmp")
        with open(tmp, "w", newline="") as fh:
            wr = csv.DictWriter(fh, fieldnames=list(MANIFEST_COLUMNS))
            wr.writeheader()
            for s in self._samples.values():
                wr.writerow(s.row())
        os.replace(tmp, self.root / MANIFEST)
        self._dirty = False

    def balance_splits(self, sources: Iterable[str] | None = None, keep: Iterable[str] = ()) -> int:
        """Give every (class, source) with three or more source groups at least one group in each
        split; returns the number of samples moved.

        Hash splits of a few groups can leave a split empty. Whole groups are moved (every sample
        of the group, whatever its class or source, so crops of one source image stay in one
        split), from the split holding most of the pair's groups, in SHA-1 order of the group
        name, and never when the move would empty a split of another (class, source) with three
        or more groups. Deterministic for a given bank. ``sources``: only these (default: all);
        ``keep``: groups never moved (held out on purpose).
        """
        kept = set(keep)
        by_group: dict[str, list[Sample]] = {}
        where: dict[tuple[int, str], dict[str, set[str]]] = {}  # (class, source) → split → groups
        for s in self._samples.values():
            by_group.setdefault(s.group, []).append(s)
            where.setdefault((s.class_id, s.source), {sp: set() for sp in SPLITS})[s.split].add(s.group)
        wanted = None if sources is None else set(sources)

        def n_groups(pair: tuple[int, str]) -> int:
            return len(set().union(*where[pair].values()))

        def can_move(group: str, donor: str) -> bool:
            if group in kept:
                return False
            for pair in {(m.class_id, m.source) for m in by_group[group]}:
                if n_groups(pair) >= 3 and not where[pair][donor] - {group}:
                    return False
            return True

        moved = 0
        for pair in sorted(p for p in where if wanted is None or p[1] in wanted):
            if n_groups(pair) < 3:
                continue
            for target in SPLITS:
                have = where[pair]
                if have[target]:
                    continue
                donors = sorted((sp for sp in SPLITS if len(have[sp]) >= 2), key=lambda sp: (-len(have[sp]), SPLITS.index(sp)))
                for donor in donors:
                    cands = sorted(have[donor], key=lambda g: hashlib.sha1(g.encode()).hexdigest())
                    group = next((g for g in cands if can_move(g, donor)), None)
                    if group is None:
                        continue
                    for m in by_group[group]:
                        where[(m.class_id, m.source)][m.split].discard(group)
                        m.split = target
                        where[(m.class_id, m.source)][target].add(group)
                    moved += len(by_group[group])
                    self._dirty = True
                    break
        return moved

    # -- statistics
    def counts(self) -> Counter:
        """Counter of (class_id, source, split) → samples."""
        return Counter((s.class_id, s.source, s.split) for s in self._samples.values())

    def stats_table(self) -> str:
        """Plain-text table: one row per class × source, columns train/val/test/total, totals."""
        return format_stats(self.counts())


def format_stats(counts: Counter) -> str:
    """Render :meth:`Bank.counts` as a text table with per-class and overall totals."""
    rows: list[tuple[str, str, int, int, int, int]] = []
    keys = sorted({(c, src) for c, src, _ in counts})
    for c, src in keys:
        n = [counts.get((c, src, sp), 0) for sp in SPLITS]
        rows.append((CLASS_NAMES[c], src, *n, sum(n)))
    cls_tot: dict[str, list[int]] = {}
    for r in rows:
        t = cls_tot.setdefault(r[0], [0, 0, 0, 0])
        for i in range(4):
            t[i] += r[2 + i]
    head = ("class", "source", *SPLITS, "total")
    w0 = max([len(head[0])] + [len(r[0]) for r in rows])
    w1 = max([len(head[1]), len("(all sources)")] + [len(r[1]) for r in rows])
    fmt = f"{{:<{w0}}}  {{:<{w1}}}  {{:>7}}  {{:>7}}  {{:>7}}  {{:>7}}"
    lines = [fmt.format(*head), "-" * (w0 + w1 + 40)]
    lines += [fmt.format(*r) for r in rows]
    lines.append("-" * (w0 + w1 + 40))
    order = {n: i for i, n in enumerate(CLASS_NAMES)}
    for name in sorted(cls_tot, key=order.get):
        lines.append(fmt.format(name, "(all sources)", *cls_tot[name]))
    tot = [sum(v[i] for v in cls_tot.values()) for i in range(4)]
    lines.append(fmt.format("TOTAL", f"{len(cls_tot)} classes", *tot))
    return "\n".join(lines)


