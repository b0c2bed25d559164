"""The docks leave the canvas the larger part of the window (issue 15, item 6)."""

import numpy as np

DOCKS = ("Segment", "Synthesize", "Train")
LONG_NAME = "2024-03-14_patient-0042_thin-smear_field-017_x100-oil.tif"
LONG_PATH = "/home/lab/projects/malaria-smears/runs/2024-03-14_fine-tune-on-corrected-fields/best.safetensors"


def _open_docks(viewer, qtbot):
    win = viewer.window._qt_window
    win.resize(1500, 950)
    docks = {name: viewer.window.add_plugin_dock_widget("napari-bloodseg", name)[1] for name in DOCKS}
    qtbot.wait(50)
    return win, docks


def _canvas_share(viewer, win, qtbot) -> float:
    win.resize(1500, 950)
    qtbot.wait(50)
    return viewer.window._qt_viewer.canvas.native.width() / win.width()


def test_canvas_keeps_most_of_the_window_with_three_docks(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    win, docks = _open_docks(viewer, qtbot)
    assert win.width() == 1500
    assert _canvas_share(viewer, win, qtbot) >= 0.6  # 0.55 before the docks were slimmed

    # a layer named after a long file and the long status lines a finished run leave: 0.11 before
    viewer.add_image(np.zeros((64, 64, 3), np.uint8), rgb=True, name=LONG_NAME)
    docks["Segment"]._status.value = "done: RBC diameter 41.3 px (estimated from 512 cells, network)"
    docks["Synthesize"]._status.value = f"done: 280 images in 61.2 s → {LONG_PATH}"
    docks["Train"]._status.value = f"done: 5 epochs, best mIoU 0.812 → {LONG_PATH}"
    assert docks["Segment"]._image.value.name == LONG_NAME
    share = _canvas_share(viewer, win, qtbot)
    assert share >= 0.55
    canvas = viewer.window._qt_viewer.canvas.native.width()
    for dock in docks.values():
        assert dock.native.width() < canvas / 2
    # the status line wraps instead of widening the dock, and reads back what was set
    assert docks["Train"]._status.value == f"done: 5 epochs, best mIoU 0.812 → {LONG_PATH}"
    status = docks["Train"]._status.native
    assert status.height() > 2 * status.fontMetrics().height()  # wrapped onto several lines, all shown
    assert status.width() <= docks["Train"].native.width()


def test_advanced_sections_start_folded_and_unfold(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    _, docks = _open_docks(viewer, qtbot)
    rarely_used = {"Segment": ["_tta", "_device", "_backend", "_scale_method"],
                   "Synthesize": ["_seed", "_workers", "_allow_missing", "_preview"],
                   "Train": ["_batch", "_device"]}
    for name, attrs in rarely_used.items():
        dock = docks[name]
        assert dock._run.native.isVisible()
        assert not dock._advanced.expanded
        assert not any(getattr(dock, a).native.isVisible() for a in attrs)
        dock._advanced.toggle.click()
        assert dock._advanced.expanded
        assert all(getattr(dock, a).native.isVisible() for a in attrs)
        dock._advanced.toggle.click()
        assert not any(getattr(dock, a).native.isVisible() for a in attrs)
    # the folded options still drive the job
    docks["Segment"]._advanced.expanded = True
    docks["Segment"]._tta.value = "flip"
    assert docks["Segment"]._tta.value == "flip"
