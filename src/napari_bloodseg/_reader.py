"""npe2 reader: our class masks, colour-coded maps (ours and the reference work's), sample banks."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .classes import CLASS_COLORS, IGNORE_INDEX, NUM_CLASSES, REFERENCE_COLORS, decode_color_map
from .layers import labels_layer_kwargs


def _is_class_mask(arr: np.ndarray) -> bool:
    if arr.ndim != 2 or arr.dtype != np.uint8:
        return False
    vals = np.unique(arr)
    return bool(np.all((vals < NUM_CLASSES) | (vals == IGNORE_INDEX)))


def _is_color_map(arr: np.ndarray) -> bool:
    """Mostly palette colours (colour-coded segmentation, possibly JPEG-compressed)."""
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4) or arr.dtype != np.uint8:
        return False
    flat = arr[..., :3].reshape(-1, 3)
    sample = flat[:: max(1, len(flat) // 20000)].astype(np.int32)
    cols = np.array(list(REFERENCE_COLORS.keys()) + [tuple(c) for c in CLASS_COLORS], dtype=np.int32)
    d = ((sample[:, None, :] - cols[None]) ** 2).sum(-1).min(1)
    return bool((d <= 20**2).mean() >= 0.95)


def napari_get_reader(path):
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    p = Path(path)
    if p.is_dir():
        from .bank.gallery import is_bank, read_bank_gallery
        from .synth import is_synth_set, read_synth_set

        if is_synth_set(p):
            return lambda _p: read_synth_set(str(p))
        return (lambda _p: read_bank_gallery(str(p))) if is_bank(p) else None
    if p.suffix.lower() != ".png" or not p.is_file():
        return None
    try:
        from .io import read_image

        arr = read_image(p)
    except ValueError:
        return None
    if _is_class_mask(arr):
        return lambda _p: [(arr, labels_layer_kwargs(p.stem), "labels")]
    if _is_color_map(arr):
        return lambda _p: [(decode_color_map(arr), labels_layer_kwargs(p.stem), "labels")]
    return None
