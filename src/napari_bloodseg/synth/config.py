"""Set-level constants (splits, counts, the synth.json format) and :class:`SynthConfig`, the composition and realism knobs."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, fields

from ..classes import (
    NUM_CLASSES,
    BloodClass,
)

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
    # thrombocyte diameter range, in RBC diameters: a larger sample (PBC centres its platelet images
    # on large platelets, ~0.7 RBC) is shrunk to a random size in it; None: every sample at its own size
    thrombocyte_size: tuple[float, float] | None = (0.2, 0.5)
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
        if self.thrombocyte_size is not None and not 0 < self.thrombocyte_size[0] <= self.thrombocyte_size[1]:
            raise ValueError(f"thrombocyte_size must be None or a range 0 < low <= high (RBC diameters), got {self.thrombocyte_size}")
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
        kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in names}
        kw.setdefault("thrombocyte_size", None)  # a set written before the range existed: samples at their own size
        return cls(**kw)
