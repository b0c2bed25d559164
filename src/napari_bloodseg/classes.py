"""The class table: ids, names and colours shared by every file, layer, mask and checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np


class BloodClass(IntEnum):
    BACKGROUND = 0
    EOSINOPHIL = 1
    BASOPHIL = 2
    NEUTROPHIL = 3
    LYMPHOCYTE = 4
    MONOCYTE = 5
    THROMBOCYTE = 6
    PLATELET_CLUMP = 7
    INFECTED_RBC = 8
    HEALTHY_RBC = 9

    @property
    def label(self) -> str:
        """Human name, e.g. 'platelet clump'."""
        return CLASS_NAMES[int(self)]


@dataclass(frozen=True)
class ClassInfo:
    id: int
    name: str
    color: tuple[int, int, int]


CLASSES: tuple[ClassInfo, ...] = (
    ClassInfo(0, "background", (0, 0, 0)),
    ClassInfo(1, "eosinophil", (0, 255, 255)),
    ClassInfo(2, "basophil", (0, 128, 128)),
    ClassInfo(3, "neutrophil", (251, 190, 190)),
    ClassInfo(4, "lymphocyte", (128, 128, 0)),
    ClassInfo(5, "monocyte", (0, 0, 128)),
    ClassInfo(6, "thrombocyte", (255, 255, 0)),
    ClassInfo(7, "platelet clump", (255, 0, 255)),
    ClassInfo(8, "infected RBC", (255, 0, 0)),
    ClassInfo(9, "healthy RBC", (0, 255, 0)),
)

NUM_CLASSES = len(CLASSES)
IGNORE_INDEX = 255
# Partial labels for training on real fields annotated with boxes only (never in user masks):
SOME_WBC = 250  # a white cell whose type the source does not give
NOT_WBC = 251  # anything but a white cell (glass, RBC, platelet, debris)
CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in CLASSES)
CLASS_COLORS = np.array([c.color for c in CLASSES], dtype=np.uint8)  # (10, 3)

WBC_CLASSES = (
    BloodClass.EOSINOPHIL,
    BloodClass.BASOPHIL,
    BloodClass.NEUTROPHIL,
    BloodClass.LYMPHOCYTE,
    BloodClass.MONOCYTE,
)
RBC_CLASSES = (BloodClass.INFECTED_RBC, BloodClass.HEALTHY_RBC)
PLATELET_CLASSES = (BloodClass.THROMBOCYTE, BloodClass.PLATELET_CLUMP)
PARTIAL_LABELS: dict[int, tuple[int, ...]] = {
    SOME_WBC: tuple(int(c) for c in WBC_CLASSES),
    NOT_WBC: tuple(int(c) for c in BloodClass if c not in WBC_CLASSES),
}

# The reference work's colour-coded maps use slightly different colours, plus blue for 'partial WBC'.
REFERENCE_COLORS: dict[tuple[int, int, int], int] = {
    **{c.color: c.id for c in CLASSES},
    (250, 190, 190): int(BloodClass.NEUTROPHIL),
    (255, 225, 0): int(BloodClass.THROMBOCYTE),
    (0, 0, 255): IGNORE_INDEX,
}


def class_table() -> list[dict]:
    """The table as plain JSON-able rows (stored in checkpoints and exports)."""
    return [{"id": c.id, "name": c.name, "color": list(c.color)} for c in CLASSES]


def check_class_table(table: list[dict]) -> None:
    """Raise ValueError if ``table`` (e.g. from a checkpoint) differs from ours."""
    theirs = [(int(r["id"]), str(r["name"])) for r in table]
    ours = [(c.id, c.name) for c in CLASSES]
    if theirs != ours:
        raise ValueError(
            "class table mismatch: expected "
            + ", ".join(f"{i}={n}" for i, n in ours)
            + "; got "
            + ", ".join(f"{i}={n}" for i, n in theirs)
        )


def class_id(name: str | int) -> int:
    """Class id from a name ('healthy RBC', 'healthy_rbc', 'Healthy-RBC') or id."""
    if isinstance(name, (int, np.integer)):
        if 0 <= int(name) < NUM_CLASSES:
            return int(name)
        raise ValueError(f"class id {name} out of range 0..{NUM_CLASSES - 1}")
    key = str(name).strip().lower().replace("_", " ").replace("-", " ")
    for c in CLASSES:
        if c.name.lower() == key:
            return c.id
    raise ValueError(f"unknown class {name!r}; allowed: {', '.join(CLASS_NAMES)}")


def folder_name(cls: int) -> str:
    """Folder-safe class name: 'platelet_clump', 'infected_rbc'."""
    return CLASS_NAMES[cls].lower().replace(" ", "_")


def color_palette() -> np.ndarray:
    """(256, 3) uint8: each class id's colour; background black, ignore (255) white."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[:NUM_CLASSES] = CLASS_COLORS
    lut[IGNORE_INDEX] = 255
    return lut


def colorize(labels: np.ndarray) -> np.ndarray:
    """Class-id map (H, W) → RGB uint8 (H, W, 3); background black, ignore (255) white."""
    return color_palette()[np.asarray(labels, dtype=np.uint8)]


def class_mask(data) -> np.ndarray:
    """Labels data → uint8 class ids; ValueError if it holds values outside the class table."""
    arr = np.asarray(data)
    if arr.ndim != 2:
        raise ValueError(f"a class mask must be 2-D, got shape {arr.shape}")
    vals = np.unique(arr)
    bad = vals[(vals < 0) | ((vals >= NUM_CLASSES) & (vals != IGNORE_INDEX))]
    if bad.size:
        raise ValueError(
            f"labels hold values {bad[:5].tolist()} outside the class ids 0..{NUM_CLASSES - 1} (and {IGNORE_INDEX} = ignore)"
        )
    return arr.astype(np.uint8)


def decode_color_map(rgb: np.ndarray, palette: dict[tuple[int, int, int], int] | None = None) -> np.ndarray:
    """Colour-coded map (H, W, 3) → class ids by nearest palette colour (JPEG-safe)."""
    palette = REFERENCE_COLORS if palette is None else palette
    cols = np.array(list(palette.keys()), dtype=np.int32)
    ids = np.array(list(palette.values()), dtype=np.uint8)
    flat = np.asarray(rgb)[..., :3].reshape(-1, 3).astype(np.int32)
    out = np.empty(len(flat), dtype=np.uint8)
    step = 1 << 18
    for s in range(0, len(flat), step):
        d = ((flat[s : s + step, None, :] - cols[None]) ** 2).sum(-1)
        out[s : s + step] = ids[d.argmin(1)]
    return out.reshape(np.asarray(rgb).shape[:2])


def napari_colormap_dict() -> dict:
    """{id: RGBA float} for napari's DirectLabelColormap; background transparent."""
    colors: dict = {None: (0.0, 0.0, 0.0, 0.0), 0: (0.0, 0.0, 0.0, 0.0)}
    for c in CLASSES[1:]:
        colors[c.id] = tuple(v / 255 for v in c.color) + (1.0,)
    colors[IGNORE_INDEX] = (1.0, 1.0, 1.0, 0.6)
    return colors


def overlay(rgb: np.ndarray, labels: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Class colours blended over the image (background left as is) → RGB uint8."""
    rgb = np.asarray(rgb)[..., :3].astype(np.float32)
    col = colorize(labels).astype(np.float32)
    fg = (np.asarray(labels) != 0)[..., None]
    return np.where(fg, (1 - alpha) * rgb + alpha * col, rgb).round().astype(np.uint8)
