"""Reading images and writing PNGs safely (never half-written, never overwritten unasked)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as an array; raises ValueError with a one-line reason."""
    import imageio.v3 as iio

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    try:
        arr = iio.imread(path)
    except Exception as e:  # imageio raises many types for unreadable files
        raise ValueError(f"{path}: not a readable image ({type(e).__name__})") from None
    return np.asarray(arr)


def write_png(path: str | os.PathLike, array: np.ndarray, overwrite: bool = False) -> Path:
    """Write a PNG via a temporary file and rename; refuse to replace an existing file unless asked."""
    import imageio.v3 as iio

    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists (not overwritten)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        iio.imwrite(tmp, np.ascontiguousarray(array), extension=".png")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def expand_inputs(paths: list[str | os.PathLike]) -> list[Path]:
    """Files as given; folders → their image files (sorted, not recursive)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES))
        else:
            out.append(p)
    return out
