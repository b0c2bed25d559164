"""Correction dock: the class legend as a paint-label picker (click or keys 0–9), "WBC types from
boxes" (a lab's annotation boxes correct the map's WBC types), "Add to training set" for an image +
corrected labels pair, and "Fine-tune on my corrections" (see widgets.finetune)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from magicgui.widgets import ComboBox, Container, PushButton
from napari.layers import Image, Labels, Shapes
from napari.utils.notifications import show_error, show_info

from ..classes import CLASSES, NUM_CLASSES
from ..layers import labels_layer_kwargs
from .utils import StatusLine, chosen_path, compact, path_edit

if TYPE_CHECKING:
    import napari


def _swatch(rgb: tuple[int, int, int]) -> str:
    fg = "black" if sum(rgb) > 380 else "white"
    return f"background-color: rgb{tuple(rgb)}; color: {fg}; text-align: left; padding: 2px 6px;"


class CorrectWidget(Container):
    def __init__(self, napari_viewer: "napari.viewer.Viewer"):
        super().__init__()
        self._viewer = napari_viewer
        self._labels = ComboBox(label="class map", choices=self._label_layers,
                                tooltip="Labels layer to correct (a Segment result or an opened mask)")
        self.append(self._labels)
        self._buttons: list[PushButton] = []
        for c in CLASSES:
            b = PushButton(text=f"{c.id}  {c.name}", tooltip=f"Paint '{c.name}' (key {c.id})")
            b.native.setStyleSheet(_swatch(c.color) if c.id else "text-align: left; padding: 2px 6px;")
            b.changed.connect(lambda _=None, cid=c.id: self.select_class(cid))
            self._buttons.append(b)
        self.extend(self._buttons)
        self._boxes = ComboBox(label="boxes", choices=self._box_layers,
                               tooltip="A shapes layer of annotation boxes with a 'class' per box (e.g. a YOLO label "
                               "file opened in napari)")
        self._from_boxes = PushButton(text="WBC types from boxes",
                                      tooltip="Inside each box whose class is a WBC type, every WBC pixel of the class "
                                      "map takes that type (Ctrl+Z undoes it); other boxes are left alone")
        self._from_boxes.changed.connect(self.wbc_types_from_boxes)
        self.extend([self._boxes, self._from_boxes])
        self._image = ComboBox(label="image", choices=self._image_layers, tooltip="The smear image the labels belong to")
        self._dataset = path_edit("training folder", "d",
                                  "Folder that `bloodseg train --data` reads; pairs go to <folder>/<split>/images|masks")
        self._split = ComboBox(label="split", choices=["train", "val", "test"], value="train")
        self._add = PushButton(text="Add to training set")
        self._status = StatusLine()
        self.extend([self._image, self._dataset, self._split, self._add, self._status])
        compact(self)
        self._add.changed.connect(self.add_to_training_set)
        from .finetune import FineTunePanel

        self.fine_tune = FineTunePanel(napari_viewer, lambda: chosen_path(self._dataset))
        self.append(self.fine_tune)
        for ev in (self._viewer.layers.events.inserted, self._viewer.layers.events.removed):
            ev.connect(self._labels.reset_choices)
            ev.connect(self._image.reset_choices)
            ev.connect(self._boxes.reset_choices)
        self._labels.changed.connect(self._bind_keys)
        self._bind_keys(self._labels.value)

    def _label_layers(self, _w=None) -> list:
        return [layer for layer in self._viewer.layers if isinstance(layer, Labels)]

    def _image_layers(self, _w=None) -> list:
        return [layer for layer in self._viewer.layers if isinstance(layer, Image)]

    def _box_layers(self, _w=None) -> list:
        return [layer for layer in self._viewer.layers if isinstance(layer, Shapes) and "class" in layer.features]

    def _bind_keys(self, layer: Labels | None) -> None:
        if layer is None:
            return
        if "class" not in layer.features.columns:  # so the status bar names the class under the cursor
            layer.features = labels_layer_kwargs(layer.name)["features"]
        for cid in range(NUM_CLASSES):
            layer.bind_key(str(cid), lambda _layer, cid=cid: self.select_class(cid), overwrite=True)

    def select_class(self, class_id: int) -> None:
        layer = self._labels.value
        if layer is None:
            show_error("Open or segment an image first: there is no labels layer to paint on.")
            return
        layer.selected_label = class_id
        if layer.mode not in ("paint", "fill"):
            layer.mode = "paint"
        self._viewer.layers.selection.active = layer
        self._status.value = f"painting: {CLASSES[class_id].name}"

    def wbc_types_from_boxes(self) -> None:
        from ..bank.importers.boxes import box_class
        from ..fieldlabels import wbc_types_from_boxes

        labels, shapes = self._labels.value, self._boxes.value
        if labels is None or shapes is None:
            show_error("Choose the class map and a boxes layer (a shapes layer with a 'class' per box).")
            return
        if labels.data.ndim != 2:
            show_error(f"The class map {labels.name!r} is not a single 2-D map.")
            return
        boxes = []
        for verts, name in zip(shapes.data, shapes.features["class"]):
            try:
                cls = box_class(str(name))
            except ValueError:
                continue
            if cls is not None:
                lo, hi = np.asarray(verts)[:, -2:].min(0), np.asarray(verts)[:, -2:].max(0)
                boxes.append((*lo, *hi, cls))
        current = np.asarray(labels.data)
        new, applied, empty = wbc_types_from_boxes(current, boxes)
        changed = np.nonzero(new != current)
        if changed[0].size:
            labels.data_setitem(changed, new[changed])  # one step Ctrl+Z undoes
        msg = f"{applied} WBC(s) given their box's type ({changed[0].size} px changed)"
        if empty:
            msg += f"; {empty} WBC box(es) with no WBC in the map: paint it first"
        self._status.value = msg
        show_info(msg)

    def add_to_training_set(self) -> None:
        from ..export import add_training_pair

        labels, image = self._labels.value, self._image.value
        folder = chosen_path(self._dataset)
        if labels is None or image is None:
            show_error("Choose both the image and its class map.")
            return
        if folder is None:
            show_error("Choose a training folder first.")
            return
        try:
            meta = labels.metadata.get("bloodseg", {}) if isinstance(labels.metadata, dict) else {}
            d = meta.get("rbc_diameter")  # what Segment used: the pair is stored at the training scale
            path = add_training_pair(folder, image.data, labels.data, image.name, self._split.value,
                                     rbc_diameter=float(d) if d else None)
        except (ValueError, OSError) as e:
            show_error(f"Not added: {e}")
            self._status.value = f"not added: {e}"
            return
        n = len(list((folder / self._split.value / "masks").glob("*.png")))
        self._status.value = f"added {path.stem} to {self._split.value} ({n} there)"
        show_info(f"Added training pair {path.stem} ({self._split.value}) in {folder}")
