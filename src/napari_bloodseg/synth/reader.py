"""Reading a synthesized set: is it one (synth.json), and its splits as napari LayerData."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .config import SET_FORMAT, SET_JSON, SPLITS


def _is_synth_root(p: Path) -> bool:
    f = p / SET_JSON
    if not f.is_file():
        return False
    try:
        return json.loads(f.read_text()).get("format") == SET_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


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
    from ..layers import labels_layer_kwargs

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
    from ..io import imread

    def img(i):
        return imread(sd / "images" / f"{i}.png")[..., :3]

    def msk(i):
        m = imread(sd / "masks" / f"{i}.png")
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
