"""npe2 reader: our class masks, colour-coded maps (ours and the reference work's), sample banks,
synthesized sets, and a YOLO label file (``labels/<stem>.txt``) with its image and boxes."""

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
    if p.suffix.lower() == ".txt" and p.is_file() and _yolo_image(p) is not None:
        return lambda _p: read_yolo_field(p)
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


def _yolo_image(txt: Path) -> Path | None:
    """The image a YOLO label file ``<set>/[<split>/]labels/<stem>.txt`` belongs to, or None."""
    from .bank.importers.base import IMAGE_EXTS

    if txt.parent.name.lower() != "labels":
        return None
    images = txt.parent.parent / "images"
    for ext in IMAGE_EXTS:
        for cand in (images / f"{txt.stem}{ext}", images / f"{txt.stem}{ext.upper()}"):
            if cand.is_file():
                return cand
    return None


def read_yolo_field(txt: Path) -> list:
    """[image layer, shapes layer of its boxes]: each box in its class's colour, named; class names
    from the set's data.yaml or classes.txt (else 'class <id>'); names that are no class in grey."""
    from .bank.importers.boxes import box_class, yolo_boxes, yolo_class_names
    from .classes import CLASS_COLORS
    from .infer import prepare_image
    from .io import read_image

    img_path = _yolo_image(txt)
    rgb = prepare_image(read_image(img_path))
    names = yolo_class_names(txt.parent.parent) or yolo_class_names(txt.parent.parent.parent) or []
    boxes, _ = yolo_boxes(txt, rgb.shape[:2], None)  # class = the YOLO id
    n = max([len(names), *(b[4] + 1 for b in boxes)])
    names = list(names) + [f"class {i}" for i in range(len(names), n)]
    rects, labels, colours = [], [], []
    for r0, c0, r1, c1, k in boxes:
        rects.append(np.array([[r0, c0], [r0, c1], [r1, c1], [r1, c0]]))
        labels.append(names[k])
        try:
            cls = box_class(names[k])
        except ValueError:
            cls = None
        colour = CLASS_COLORS[cls] if cls is not None else (200, 200, 200)  # WBC without a type, unknown: grey
        colours.append(np.array([*colour, 255]) / 255)
    kw = {"name": f"{txt.stem} boxes", "shape_type": "rectangle", "edge_width": max(2.0, rgb.shape[0] / 200),
          "edge_color": np.array(colours) if colours else "white", "face_color": "transparent",
          "features": {"class": np.array(labels, dtype=object)},
          "text": {"string": "{class}", "color": "white", "size": 9, "anchor": "upper_left"},
          "metadata": {"bloodseg": {"kind": "annotation boxes", "source": str(txt)}}}
    return [(rgb, {"name": img_path.stem}, "image"), (rects, kw, "shapes")]
