"""Reading images and writing PNGs safely (never half-written, never overwritten unasked)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def imread(path: str | os.PathLike) -> np.ndarray:
    """``imageio.v3.imread`` through our own file handle, closed on every path (imageio leaves its
    own open when a plugin fails on a damaged file). Raises what the decoder raises, for callers
    that report the detail (the bank's import report); :func:`read_image` words it for users."""
    import imageio.v3 as iio

    path = Path(path)
    with open(path, "rb") as fh:
        try:
            arr = np.asarray(iio.imread(fh, extension=path.suffix.lower() or None))
        except OSError as e:
            if "could not find a backend" in str(e).lower():  # imageio's words for "no format knows these bytes"
                raise ValueError("no image format recognised in the file's bytes") from None
            raise
    if arr.size == 0:  # e.g. a TIFF header with no readable page
        raise ValueError("the file holds no pixels")
    return arr


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as an array; raises ValueError with a one-line reason."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    try:
        return imread(path)
    except Exception:  # imageio and its plugins raise many types for unreadable files
        raise ValueError(f"{path}: not a readable image (an image format not supported, or a damaged file)") from None


RBC_MICRONS = 7.5  # a healthy RBC's diameter (µm): pixel size → RBC diameter in pixels
PLAUSIBLE_PIXEL_UM = (0.01, 5.0)  # µm per pixel of a smear image; 72/96-dpi defaults fall far outside
_UNIT_UM = {"m": 1e6, "cm": 1e4, "mm": 1e3, "µm": 1.0, "μm": 1.0, "um": 1.0, "micron": 1.0, "microns": 1.0,
            "nm": 1e-3, r"\u00b5m": 1.0}  # the last: ImageJ's escaped µ


def read_pixel_size(path: str | os.PathLike) -> float | None:
    """The pixel size (µm per pixel) stored in a TIFF file: OME-XML ``PhysicalSizeX``, ImageJ's
    unit with the resolution tag, or the TIFF resolution in cm/inch; None when absent, not a TIFF,
    or implausible for a microscope image (e.g. a scanner's 72 dpi)."""
    path = Path(path)
    if path.suffix.lower() not in (".tif", ".tiff") or not path.is_file():
        return None
    try:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            um = _ome_pixel_size(tif.ome_metadata) if tif.is_ome else None
            if um is None:
                um = _tag_pixel_size(tif.pages[0], tif.imagej_metadata or {})
    except Exception:  # noqa: BLE001 - unreadable metadata means no pixel size, not a failed image
        return None
    lo, hi = PLAUSIBLE_PIXEL_UM
    return um if um is not None and lo <= um <= hi else None


def _ome_pixel_size(xml: str | None) -> float | None:
    import re

    m = re.search(r"<Pixels\b[^>]*>", xml or "")
    if not m:
        return None
    size = re.search(r'PhysicalSizeX="([^"]+)"', m.group(0))
    unit = re.search(r'PhysicalSizeXUnit="([^"]+)"', m.group(0))
    if not size:
        return None
    factor = _UNIT_UM.get(unit.group(1) if unit else "µm")
    return float(size.group(1)) * factor if factor else None


def _tag_pixel_size(page, imagej: dict) -> float | None:
    tag = page.tags.get("XResolution")
    if tag is None:
        return None
    num, den = tag.value
    if not num or not den:
        return None
    per_unit = num / den  # pixels per unit
    unit = str(imagej.get("unit", "")).strip().lower()
    if unit in _UNIT_UM:
        return _UNIT_UM[unit] / per_unit
    res_unit = page.tags.get("ResolutionUnit")
    code = int(getattr(res_unit.value, "value", res_unit.value)) if res_unit is not None else 2
    return {2: 25400.0, 3: 10000.0}.get(code, 0.0) / per_unit or None


PNG_LEVEL = 3  # zlib level: a third of the default's (6) time for 2016² class maps, files ~25 % larger


def write_png(path: str | os.PathLike, array: np.ndarray, overwrite: bool = False,
              palette: np.ndarray | None = None) -> Path:
    """Write a PNG via a temporary file and rename; refuse to replace an existing file unless asked.
    ``palette`` (256, 3) uint8: ``array`` (uint8 indices) is written as an indexed-colour PNG, which
    every reader shows (and imageio/scikit-image read) as RGB: 8x faster to write than the RGB image."""
    import imageio.v3 as iio
    from PIL import Image

    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists (not overwritten)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        if palette is not None:
            arr = np.ascontiguousarray(array, dtype=np.uint8)
            img = Image.frombytes("P", arr.shape[::-1], arr.tobytes())
            img.putpalette(np.asarray(palette, np.uint8).ravel().tolist())
            img.save(tmp, format="PNG", compress_level=PNG_LEVEL)
        else:
            iio.imwrite(tmp, np.ascontiguousarray(array), extension=".png", compress_level=PNG_LEVEL)
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
