"""npe2 writer: a labels layer → uint8 class-id PNG, a colour PNG and a classes JSON beside it."""

from __future__ import annotations

import json
from pathlib import Path

from .classes import IGNORE_INDEX, class_mask, class_table, color_palette
from .io import write_png


def write_labels(path: str, data, meta: dict) -> list[str]:
    path = Path(path)
    if path.suffix.lower() != ".png":
        path = path.with_suffix(".png")
    mask = class_mask(data)
    color = path.with_name(f"{path.stem}_color.png")
    table = path.with_name(f"{path.stem}_classes.json")
    # The main file's overwrite was confirmed by the save dialog; companions of another file are not ours to replace.
    if not path.exists():
        for side in (color, table):
            if side.exists():
                raise FileExistsError(f"{side} already exists (not overwritten)")
    write_png(path, mask, overwrite=True)
    write_png(color, mask, overwrite=True, palette=color_palette())
    table.write_text(json.dumps({"classes": class_table(), "ignore": IGNORE_INDEX, "mask": path.name}, indent=1))
    return [str(path), str(color), str(table)]


def write_training_pair(path: str, layer_data: list[tuple]) -> list[str]:
    """An image layer + a labels layer → a training pair in the dataset folder ``path``
    (``<path>/train/images|masks/<image name>.png``; an existing pair is never replaced)."""
    from .export import add_training_pair

    images = [(d, m) for d, m, kind in layer_data if kind == "image"]
    labels = [(d, m) for d, m, kind in layer_data if kind == "labels"]
    if len(images) != 1 or len(labels) != 1:
        raise ValueError("select exactly one image layer and one labels layer to save a training pair")
    (img, img_meta), (lab, _) = images[0], labels[0]
    mask_path = add_training_pair(path, img, lab, img_meta.get("name", "pair"), "train")
    return [str(mask_path.parent.parent / "images" / mask_path.name), str(mask_path)]
