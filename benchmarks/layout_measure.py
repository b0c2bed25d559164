"""Measure how much of a 1500x950 napari window the canvas keeps with the Segment, Synthesize and
Train docks open (issue 15, item 6). Run:

    xvfb-run -a python benchmarks/layout_measure.py [out.png] [--realistic] [--sample] [--unfold]

Before the docks were slimmed: canvas 827 px of 1500 (55 %), and 159 px (11 %) with --realistic;
after: 941 px (63 %), and 892 px (59 %) with --realistic or --sample (napari's own layer controls
widen the left dock once an image is open). docs/layout.png is ``--sample --unfold``."""

from __future__ import annotations

import sys

import napari
from qtpy.QtWidgets import QApplication

DOCKS = ("Segment", "Synthesize", "Train")


LONG_NAME = "2024-03-14_patient-0042_thin-smear_field-017_x100-oil.tif"
LONG_PATH = "/home/lab/projects/malaria-smears/runs/2024-03-14_fine-tune-on-corrected-fields/best.safetensors"


def measure(out_png: str | None = None, realistic: bool = False, sample: bool = False, unfold: bool = False) -> dict:
    """``realistic``: an image layer with a long file name and the status lines a finished run leaves;
    ``sample``: the rendered sample smear on the canvas (for a screenshot); ``unfold``: the Segment
    dock's Advanced section open."""
    import numpy as np

    viewer = napari.Viewer(show=True)
    if sample:
        viewer.open_sample("napari-bloodseg", "smear")
    if realistic:
        viewer.add_image(np.zeros((64, 64, 3), np.uint8), rgb=True, name=LONG_NAME)
    win = viewer.window._qt_window
    win.resize(1500, 950)
    docks = {}
    for name in DOCKS:
        dw, widget = viewer.window.add_plugin_dock_widget("napari-bloodseg", name)
        docks[name] = (dw, widget)
    if unfold:
        docks["Segment"][1]._advanced.expanded = True
    if realistic:
        seg, syn, tr = (docks[n][1] for n in DOCKS)
        seg._status.value = "done: RBC diameter 41.3 px (estimated from 512 cells, network)"
        syn._status.value = f"done: 280 images in 61.2 s → {LONG_PATH}"
        tr._status.value = f"done: 5 epochs, best mIoU 0.812 → {LONG_PATH}"
    for _ in range(5):
        QApplication.processEvents()
    win.resize(1500, 950)
    for _ in range(5):
        QApplication.processEvents()
    canvas = viewer.window._qt_viewer.canvas.native.width()
    report = {"window": (win.width(), win.height()), "canvas": canvas, "canvas_frac": canvas / win.width()}
    for name, (dw, widget) in docks.items():
        hint = widget.native.minimumSizeHint()
        report[name] = {"dock_width": dw.width(), "visible": dw.isVisible(),
                        "min_hint": (hint.width(), hint.height()), "hint": widget.native.sizeHint().width()}
    if out_png:
        viewer.screenshot(out_png, canvas_only=False)
    viewer.close()
    return report


if __name__ == "__main__":
    realistic = "--realistic" in sys.argv
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    r = measure(args[0] if args else None, realistic=realistic, sample="--sample" in sys.argv,
                unfold="--unfold" in sys.argv)
    for k, v in r.items():
        print(k, v)
