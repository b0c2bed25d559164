"""Screenshot of the correction → fine-tune loop in napari, before and after (run under Xvfb):

    xvfb-run -a .venv/bin/python scripts/screenshot_finetune.py docs/finetune.png [--minutes 2]

A rendered smear (napari_bloodseg.render) recoloured and blurred as another lab's stain and camera
stands in for a user's slide, so no downloaded data is needed. The script does what a user does:
segment fields with the shipped model (Segment dock), correct the class maps (here: the rendered
truth stands in for the user's brush work), *Add to training set* into a temporary training folder,
*Fine-tune on my corrections* for ``--minutes``, and segment the held-out field again with the new
model. The picture shows the Classes dock with the held-out score before → after, and the field's
class map before (left) and after (right).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

N_FIELDS = 6  # corrected fields; the last one (by name) is held out and shown
SHAPE = (330, 440)
COUNTS = {"neutrophil": 1, "lymphocyte": 1, "monocyte": 1, "thrombocyte": 2}  # per field
MAX_KB = 400


def other_lab(rgb: np.ndarray, seed: int) -> np.ndarray:
    """The field as another lab's slide might look: a bluer, stronger stain (optical density
    reweighted per channel), a warm lamp, a softer lens, a noisier camera."""
    rng = np.random.default_rng(seed)
    od = -np.log((rgb.astype(np.float32) + 1.0) / 256.0)
    od = od * np.array([1.45, 1.05, 0.65], np.float32)  # red absorbed more, blue less: a purple-blue cast
    out = 256.0 * np.exp(-od) * np.array([1.0, 0.93, 0.80], np.float32) - 1.0
    out = ndi.gaussian_filter(out, (1.3, 1.3, 0)) + rng.normal(0, 4.0, out.shape)
    return np.clip(out, 0, 255).astype(np.uint8)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", nargs="?", default="docs/finetune.png")
    ap.add_argument("--minutes", type=float, default=2.0, help="fine-tuning budget (default: %(default)s)")
    ap.add_argument("--size", type=int, nargs=2, default=(1700, 1000), metavar=("W", "H"),
                    help="window size (default: %(default)s)")
    args = ap.parse_args(argv)

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_bloodseg.layers import labels_layer_kwargs
    from napari_bloodseg.render import render_smear
    from napari_bloodseg.widgets.correct import CorrectWidget
    from napari_bloodseg.widgets.segment import SegmentWidget

    app = QApplication.instance() or QApplication([])

    def wait(until) -> None:
        while not until():
            app.processEvents()

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(*args.size)
    viewer.window._qt_viewer.dockLayerControls.setVisible(False)  # room for the Classes dock
    seg = SegmentWidget(viewer)  # model left empty: the shipped model
    viewer.window.add_dock_widget(seg, name="Segment", area="right")
    cor = CorrectWidget(viewer)
    viewer.window.add_dock_widget(cor, name="Classes and corrections", area="left")
    tmp = tempfile.TemporaryDirectory()
    folder = Path(tmp.name) / "my corrections"
    cor._dataset.value = folder

    def segment(layer) -> object:
        seg._image.value = layer
        n = len(viewer.layers)
        seg._run.clicked.emit()
        wait(lambda: seg.worker is None and len(viewer.layers) > n)
        return viewer.layers[-1]

    # 1-2. segment, correct and add fields; the last is held out for the before/after score
    shown = before = None
    for i in range(1, N_FIELDS + 1):
        s = render_smear(SHAPE, seed=200 + i, rbc_diameter=36.0, counts=COUNTS)
        image = viewer.add_image(other_lab(s.image, i), name=f"field {i}", rgb=True)
        if i == N_FIELDS:
            before = segment(image)
            before.name = "before: shipped model"
            d = before.metadata["bloodseg"]["rbc_diameter"]
        else:
            d = 36.0
        corrected = viewer.add_labels(s.mask, **labels_layer_kwargs(f"field {i} corrected",
                                                                    metadata={"bloodseg": {"rbc_diameter": d}}))
        cor._image.value, cor._labels.value = image, corrected
        cor._add.clicked.emit()
        viewer.layers.remove(corrected)
        if i == N_FIELDS:
            shown = image
        else:
            viewer.layers.remove(image)
    print(cor._status.value, flush=True)

    # 3. fine-tune on the corrections (the Segment dock's model, i.e. the shipped one, to start)
    panel = cor.fine_tune
    panel._minutes.value = args.minutes
    panel._run.clicked.emit()
    wait(lambda: panel.worker is None)
    if panel.report is None:
        raise SystemExit(f"fine-tuning failed: {panel._status.value}")
    print(panel._status.value, flush=True)

    # 4. segment the held-out field again with the new model (now the Segment dock's model)
    gap = 40  # the after copy below the before one, a caption above each
    below = viewer.add_image(shown.data, name=f"{shown.name} (again)", rgb=True, translate=(SHAPE[0] + gap, 0))
    after = segment(below)
    after.name = "after: fine-tuned model"
    for layer in (before, after):
        layer.opacity = 0.7
    viewer.add_points(np.array([[-16.0, SHAPE[1] / 2], [SHAPE[0] + gap - 16.0, SHAPE[1] / 2]]), size=0,
                      name="captions", text={"string": ["before: shipped model",
                                                        f"after: {args.minutes:g}-minute fine-tune on {N_FIELDS - 1} corrected fields"],
                                             "size": 15, "color": "white", "anchor": "center"})
    cor._image.value, cor._labels.value = below, after
    viewer.layers.selection.active = after
    viewer.reset_view()
    from napari._qt.dialogs.qt_notification import NapariQtNotification

    for _ in range(30):
        for note in viewer.window._qt_window.findChildren(NapariQtNotification):
            note.close()
        app.processEvents()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    shot = viewer.screenshot(canvas_only=False, flash=False)
    from PIL import Image

    img = Image.fromarray(np.asarray(shot)[..., :3])
    img.save(out, optimize=True)
    if out.stat().st_size > MAX_KB * 1024:  # a palette keeps the text sharp and the file small
        img.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(out, optimize=True)
    while out.stat().st_size > MAX_KB * 1024:
        img = img.resize((round(img.width * 0.9), round(img.height * 0.9)), Image.Resampling.LANCZOS)
        img.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(out, optimize=True)
    print(f"wrote {out} ({out.stat().st_size // 1024} KB); {panel._status.value}")
    viewer.close()
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
