"""Segment widget: pick an image layer, run the U-Net in a worker thread, get a class labels layer."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, PushButton
from napari.layers import Image
from napari.qt.threading import thread_worker
from napari.utils import progress
from napari.utils.notifications import show_error, show_info, show_warning

from ..layers import labels_layer_kwargs
from .utils import (
    Collapsible,
    StatusLine,
    WorkerDock,
    chosen_path,
    compact,
    path_edit,
    show_progress,
)

if TYPE_CHECKING:
    import napari


def _full_resolution(layer: Image):
    """The layer's pixel array (its finest level when multiscale): diameters are in its pixels."""
    return layer.data[0] if layer.multiscale else layer.data


@thread_worker(ignore_errors=True)
def _segment_worker(image: np.ndarray, model_path: str | None, device: str, rbc_diameter: float | None,
                    tta: str = "none", scale_method: str = "network", backend: str = "auto",
                    tighten_wbcs: bool = True):
    from ..infer import Segmenter

    seg = Segmenter.from_file(model_path, device=device, tta=tta, scale_method=scale_method, backend=backend,
                              tighten_wbcs=tighten_wbcs)
    return (yield from seg.iter_segment(image, rbc_diameter))


@thread_worker(ignore_errors=True)
def _segment_all_worker(images: list[np.ndarray], diameters: list[float | None], model_path: str | None, device: str,
                        tta: str = "none", scale_method: str = "network", backend: str = "auto",
                        tighten_wbcs: bool = True):
    """Segments each image (any array-like) in turn with one loaded model. Yields ("tiles", i, done, total) while image
    i runs, then ("done", i, Segmentation) or ("skipped", i, reason) (one image that is no smear
    does not stop the others)."""
    from ..infer import Segmenter

    seg = Segmenter.from_file(model_path, device=device, tta=tta, scale_method=scale_method, backend=backend,
                              tighten_wbcs=tighten_wbcs)
    for i, (image, d) in enumerate(zip(images, diameters)):
        run = seg.iter_segment(image, d)
        try:
            while True:
                done, total = next(run)
                yield "tiles", i, done, total
        except StopIteration as stop:
            yield "done", i, stop.value
        except ValueError as e:  # InputError and kin: not a smear this model can read
            yield "skipped", i, str(e)


@thread_worker(ignore_errors=True)
def _shared_scale_worker(images: list[np.ndarray], model_path: str | None, device: str, scale_method: str = "network",
                         backend: str = "auto"):
    """Yields (images done, total); returns the SharedScale of the estimates (None: no image gave one)."""
    from ..autoscale import shared_scale
    from ..infer import Segmenter

    seg = Segmenter.from_file(model_path, device=device, scale_method=scale_method, backend=backend)
    estimates = []
    for i, image in enumerate(images):
        yield i, len(images)
        try:
            estimates.append(seg.estimate_rbc_diameter(image)[0])
        except ValueError:  # not an RGB smear (e.g. a single-channel layer): left out
            continue
    yield len(images), len(images)
    return shared_scale(estimates) if estimates else None


class SegmentWidget(WorkerDock, Container):
    _task = "Segmentation"

    def __init__(self, napari_viewer: "napari.viewer.Viewer"):
        super().__init__()
        self._viewer = napari_viewer
        self._image = ComboBox(label="image", choices=self._image_layers, tooltip="RGB smear image layer to segment")
        self._model = path_edit("model", "r", "Checkpoint to use; leave empty for the model shipped with napari-bloodseg",
                                filter="*.safetensors")
        self._device = ComboBox(
            label="device", choices=["auto", "cpu", "cuda", "mps"], value="auto",
            tooltip="auto: CUDA GPU if present, else Apple MPS, else CPU",
        )
        self._backend = ComboBox(
            label="backend", choices=["auto", "torch", "openvino"], value="auto",
            tooltip="What runs the model. openvino: faster on a CPU (often about twice), needs "
            "pip install 'napari-bloodseg[openvino]'; torch: PyTorch, also on GPUs; "
            "auto: openvino on the CPU when it is installed (torch on CPUs with Intel AMX, where "
            "torch is faster), otherwise torch",
        )
        self._auto_d = CheckBox(text="estimate RBC diameter", value=True,
                                tooltip="Measure the typical healthy red cell size in the image")
        self._diameter = FloatSpinBox(
            label="RBC diameter", value=36.0, min=4.0, max=1000.0, step=0.5, enabled=False,
            tooltip="Diameter of a healthy red blood cell in image pixels (about 7.5 µm). "
            "The image is rescaled so that RBCs match the model's training scale (36 px).",
        )
        self._diameter.native.setSuffix(" px")
        self._scale_method = ComboBox(
            label="estimate by", choices=["network", "classical"], value="network",
            tooltip="network: measure the red cells the model finds at a few candidate sizes (works on crowded, "
            "pale and cropped fields); classical: median size of isolated round cells found by thresholds",
        )
        self._from_line = PushButton(text="RBC diameter from a drawn line",
                                     tooltip="Draw a line across one healthy red cell in a Shapes layer "
                                     "(line tool), then click: its length becomes the RBC diameter")
        self._from_all = PushButton(
            text="RBC diameter from all open images",
            tooltip="For images from one microscope at one magnification: estimate the RBC diameter on every "
            "open image and use their median (far more reliable than one image's estimate, above all on "
            "crops centred on one white cell with few red cells around it)")
        self._tta = ComboBox(
            label="TTA", choices=["none", "flip", "d4"], value="none",
            tooltip="Test-time augmentation: average the model over mirrored (flip: 2x the time) "
            "or all 8 mirrored and rotated copies "
            "(d4: 8x the time) of each tile: slightly more accurate borders and cell types",
        )
        self._tighten = CheckBox(
            text="tidy WBC outlines and platelets", value=True,
            tooltip="The model draws white cells a little large, with thin spurs along the red cells touching "
            "them: a pixel is white cell only where the model is at least 75 % sure it is one, and spurs "
            "thinner than half an RBC diameter and a rim of 0.04 RBC diameters are trimmed (their pixels "
            "take the neighbouring class); a pixel is platelet only where the model is at least 80 % sure "
            "(faint slivers along red-cell rims go to the red cell or the glass). Untick for the model's map "
            "as drawn",
        )
        self._run = PushButton(text="Segment")
        self._run_all = PushButton(
            text="Segment all open images",
            tooltip="Every open RGB image in turn, each into its own class map, with the settings above: after "
            "'RBC diameter from all open images', all at that one diameter (the fields of one slide). "
            "Then Counts > 'Summarize all class maps' gives the slide's counts")
        self._cancel = self._stop_button = PushButton(text="Cancel", enabled=False)
        self._status = StatusLine()
        self._advanced = Collapsible(
            [self._scale_method, self._tta, self._tighten, self._device, self._backend],
            tooltip="How the RBC diameter is estimated, test-time augmentation, and the device and backend "
            "that run the model: the defaults suit most smears",
        )
        self.extend([self._image, self._model, self._auto_d, self._diameter, self._from_line, self._from_all,
                     self._advanced, self._run, self._run_all, self._cancel, self._status])
        compact(self)
        self._auto_d.changed.connect(self._auto_changed)
        self._from_line.changed.connect(self.diameter_from_line)
        self._from_all.changed.connect(self.diameter_from_all_images)
        self._diameter.changed.connect(self._diameter_edited)
        self._given_how: tuple[float, str] | None = None  # (diameter, how it was found) for the map's metadata
        self._run.changed.connect(self.run)
        self._run_all.changed.connect(self.run_all)
        self._cancel.changed.connect(self.cancel)
        self._viewer.layers.events.inserted.connect(self._image.reset_choices)
        self._viewer.layers.events.removed.connect(self._image.reset_choices)
        self._cancelling = False
        self._batch: dict | None = None  # the run of 'Segment all open images' under way
        from .session import register_segment_dock

        register_segment_dock(napari_viewer, self)

    def _launch(self, worker, *args) -> None:
        self._run_all.enabled = False  # one job at a time, whichever button started it
        worker.finished.connect(lambda: setattr(self._run_all, "enabled", True))
        super()._launch(worker, *args)

    def model_path(self) -> Path | None:
        """The checkpoint this dock segments with; None: the shipped model."""
        return chosen_path(self._model)

    def use_model(self, path: str | Path) -> None:
        """Segment with ``path`` from now on (e.g. a fine-tuned checkpoint)."""
        self._model.value = Path(path)
        self._status.value = f"model: {Path(path).name}"

    def _auto_changed(self, auto: bool) -> None:
        self._diameter.enabled = not auto
        self._scale_method.enabled = auto

    def _set_diameter(self, value: float, how: str) -> None:
        """Fill the RBC diameter box (automatic estimate off), remembering how the value was found."""
        self._auto_d.value = False
        self._diameter.value = round(value, 1)
        self._given_how = (float(self._diameter.value), how)

    def _diameter_edited(self, value: float) -> None:
        if self._given_how is not None and abs(float(value) - self._given_how[0]) > 1e-6:
            self._given_how = None  # typed over: the value is the user's own

    def diameter_from_all_images(self) -> None:
        """The median of the RBC diameters estimated on every open RGB image fills the diameter box."""
        if self.worker is not None:
            return
        images = []
        for layer in self._image_layers():
            if layer.rgb:
                images.append(np.asarray(_full_resolution(layer)))
        if not images:
            show_error("Open the RGB smear images first: the RBC diameter is estimated on each and their median used.")
            return
        chosen = chosen_path(self._model)
        if chosen is not None and not chosen.is_file():
            show_error(f"Model file not found: {chosen}")
            return
        worker = _shared_scale_worker(images, None if chosen is None else str(chosen), self._device.value,
                                      self._scale_method.value, self._backend.value)
        self._task = "RBC diameter estimate"
        self._from_all.enabled = False
        worker.finished.connect(lambda: setattr(self._from_all, "enabled", True))
        self._launch(worker, progress(total=len(images), desc="Estimating the RBC diameter"), "estimating…",
                     self._on_estimate_progress, self._on_shared_scale)

    def _on_estimate_progress(self, value: tuple[int, int]) -> None:
        done, total = value
        show_progress(self._pbar, done, total)
        self._status.value = f"RBC diameter: image {min(done + 1, total)}/{total}"

    def _on_shared_scale(self, shared) -> None:
        if shared is None:
            self._status.value = "no RBC diameter estimate"
            show_error("No open image gave an RBC diameter estimate: enter it, or measure it with a drawn line.")
            return
        from ..autoscale import SHARED_DOUBT_TEXT

        self._set_diameter(shared.diameter, shared.method_text())
        text = f"RBC diameter {shared.diameter:.1f} px: {shared.text()}"
        self._status.value = text
        if shared.doubtful:
            show_warning(f"{text}. {SHARED_DOUBT_TEXT.capitalize()}.")
        else:
            show_info(text)

    def diameter_from_line(self) -> None:
        """The length (data pixels) of the last line drawn in a Shapes layer becomes the RBC diameter."""
        from napari.layers import Shapes

        for layer in reversed(list(self._viewer.layers)):
            if not isinstance(layer, Shapes):
                continue
            lines = [np.asarray(d)[:, -2:] for d, t in zip(layer.data, layer.shape_type) if t in ("line", "path")]
            if lines:
                pts = lines[-1]
                length = float(np.hypot(*np.diff(pts, axis=0).T).sum())
                if length < 4:
                    show_error(f"The drawn line is {length:.1f} px long: draw it across a whole red cell.")
                    return
                self._set_diameter(length, "drawn line")
                self._status.value = f"RBC diameter {length:.1f} px from the line in '{layer.name}'"
                return
        show_error("No drawn line found: add a Shapes layer, draw a line across one healthy red cell, then click again.")

    def _image_layers(self, _widget=None) -> list:
        return [layer for layer in self._viewer.layers if isinstance(layer, Image)]

    def _checked_model(self) -> tuple[bool, str | None]:
        """(usable, checkpoint path or None for the shipped model); an error message where not usable."""
        chosen = chosen_path(self._model)
        if chosen is not None and not chosen.is_file():
            show_error(f"Model file not found: {chosen}")
            return False, None
        if self._backend.value == "openvino":
            from ..backend_openvino import INSTALL_HINT, available

            if not available():
                self._status.value = "error: OpenVINO is not installed"
                show_error(f"The openvino backend needs OpenVINO, which is not installed: {INSTALL_HINT}, "
                           "or choose backend 'auto' or 'torch'.")
                return False, None
        return True, None if chosen is None else str(chosen)

    def _diameter_for(self, layer: Image) -> tuple[float | None, str | None]:
        """(RBC diameter px or None to estimate it, how a given one was found) for ``layer``."""
        diameter = None if self._auto_d.value else float(self._diameter.value)
        how = self._given_how[1] if diameter is not None and self._given_how is not None else None
        if diameter is None:  # the pixel size the image file stores beats any estimate
            from ..io import RBC_MICRONS, read_pixel_size

            um = read_pixel_size(layer.source.path) if layer.source.path else None
            if um is not None:
                diameter, how = RBC_MICRONS / um, f"pixel size {um:g} µm (file)"
        return diameter, how

    def run(self) -> None:
        layer = self._image.value
        if layer is None:
            show_error("Open an RGB smear image first (or File > Open Sample > Rendered blood smear).")
            return
        ok, model = self._checked_model()
        if not ok:
            return
        diameter, how = self._diameter_for(layer)
        self._start(layer, np.asarray(_full_resolution(layer)), model, diameter, how)

    def run_all(self) -> None:
        """Segment every open RGB image in one background run, each into its own class map."""
        if self.worker is not None:
            return
        layers = [layer for layer in self._image_layers() if layer.rgb]
        if not layers:
            show_error("Open the RGB smear images first (File > Open, several files at once).")
            return
        ok, model = self._checked_model()
        if not ok:
            return
        found = [self._diameter_for(layer) for layer in layers]
        # the layers' own arrays: a lazily loaded (dask) image is read in the worker, one at a time
        worker = _segment_all_worker([_full_resolution(layer) for layer in layers],
                                     [d for d, _ in found], model,
                                     self._device.value, self._tta.value, self._scale_method.value,
                                     self._backend.value, self._tighten.value)
        self._task = "Segmentation"
        self._batch = {"layers": layers, "how": [h for _, h in found], "done": [], "skipped": [], "uncertain": []}
        self._cancelling = False
        worker.aborted.connect(self._on_batch_aborted)
        self._launch(worker, progress(total=len(layers), desc=f"Segmenting {len(layers)} images"), "segmenting…",
                     self._on_batch_event, lambda _none: self._batch_report())

    def _on_batch_event(self, event: tuple) -> None:
        b, (kind, i) = self._batch, event[:2]
        layer, total = b["layers"][i], len(b["layers"])
        if kind == "tiles":
            if not self._cancelling:
                self._status.value = f"image {i + 1}/{total} ({layer.name}): tile {event[2]}/{event[3]}"
            return
        if kind == "done":
            self._on_result(layer, event[2], b["how"][i], notify=False)
            b["done"].append(layer.name)
            if event[2].rbc_diameter_uncertain:
                b["uncertain"].append(layer.name)
        else:
            b["skipped"].append(f"{layer.name} ({event[2]})")
        show_progress(self._pbar, len(b["done"]) + len(b["skipped"]), total)

    def _batch_report(self, cancelled: bool = False) -> None:
        b = self._batch
        text = f"segmented {len(b['done'])} of {len(b['layers'])} images" + (" (cancelled)" if cancelled else "")
        if b["skipped"]:
            text += "; skipped: " + "; ".join(b["skipped"])
        self._status.value = text
        if b["uncertain"]:
            show_warning(f"{text.capitalize()}. Too few red cells for a sure RBC diameter in "
                         f"{', '.join(b['uncertain'])}: click 'RBC diameter from all open images' (or enter it) "
                         "and segment again.")
        elif b["skipped"]:
            show_warning(text.capitalize())
        else:
            show_info(text.capitalize())

    def _on_batch_aborted(self) -> None:
        self._batch_report(cancelled=True)

    def _start(self, layer: Image, image: np.ndarray, model: str | None, diameter: float | None,
               scale_method: str | None = None) -> None:
        self._task = "Segmentation"
        worker = _segment_worker(image, model, self._device.value, diameter, self._tta.value, self._scale_method.value,
                                 self._backend.value, self._tighten.value)
        worker.aborted.connect(self._on_aborted)
        self._cancelling = False
        self._launch(worker, progress(total=0, desc=f"Segmenting {layer.name}"), "segmenting…",
                     self._on_progress, lambda result: self._on_result(layer, result, scale_method))

    def cancel(self) -> None:
        if self.worker is not None:
            self._cancelling = True
            self.worker.quit()
            self._status.value = "cancelling…"

    def _on_aborted(self) -> None:
        self._status.value = "cancelled"

    def _on_progress(self, value: tuple[int, int]) -> None:
        if self._cancelling:
            return
        done, total = value
        show_progress(self._pbar, done, total)
        self._status.value = f"tile {done}/{total}"

    def _on_result(self, layer: Image, result, scale_method: str | None = None, notify: bool = True) -> None:
        if scale_method:  # how a given diameter was found (e.g. the file's pixel size)
            result.rbc_scale_method = scale_method
        name = f"{layer.name} classes"
        self._viewer.add_labels(
            result.labels,
            **labels_layer_kwargs(
                name,
                scale=layer.scale[-2:],
                translate=layer.translate[-2:],
                metadata={"bloodseg": {"kind": "class map", "source": layer.name,
                                       "rbc_diameter": result.rbc_diameter,
                                       "rbc_diameter_estimated": result.rbc_diameter_estimated,
                                       "rbc_cells_measured": result.rbc_cells_measured,
                                       "rbc_diameter_method": result.rbc_scale_method,
                                       "backend": result.backend},
                          "confidence": result.confidence},
            ),
        )
        if not notify:  # one of a batch: the batch reports once
            return
        text = result.rbc_diameter_text()
        self._status.value = f"done: RBC diameter {text}"
        if result.rbc_diameter_uncertain:
            show_warning(f"Segmented {layer.name}, but the RBC diameter is {text}: untick 'estimate RBC diameter', "
                         "enter it (pixels across a healthy red cell) and segment again.")
        else:
            show_info(f"Segmented {layer.name}: RBC diameter {text}")

