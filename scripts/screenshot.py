"""Screenshot of napari with the sample smear segmented by the Segment widget (run under Xvfb):

    xvfb-run -a .venv/bin/python scripts/screenshot.py docs/segment.png
"""

from __future__ import annotations

import sys
from pathlib import Path

import napari
from qtpy.QtWidgets import QApplication

from napari_bloodseg.widgets.correct import CorrectWidget
from napari_bloodseg.widgets.counts import CountsWidget
from napari_bloodseg.widgets.segment import SegmentWidget


def main(out: str) -> None:
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1500, 950)
    viewer.open_sample("napari-bloodseg", "smear")
    seg = SegmentWidget(viewer)
    viewer.window.add_dock_widget(seg, name="Segment", area="right")
    seg._run.clicked.emit()
    app = QApplication.instance()
    while seg.worker is not None or len(viewer.layers) < 2:
        app.processEvents()
    counts = CountsWidget(viewer)
    viewer.window.add_dock_widget(counts, name="Counts", area="right")
    counts._run.clicked.emit()
    while counts.summary is None:
        app.processEvents()
    viewer.window.add_dock_widget(CorrectWidget(viewer), name="Classes", area="left")
    labels = viewer.layers["rendered smear classes"]
    viewer.layers.selection.active = labels
    viewer.layers["rendered smear classes cells"].visible = "--points" in sys.argv
    viewer.reset_view()
    viewer.cursor.position = (260, 300)
    for _ in range(20):
        app.processEvents()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(out, canvas_only=False)
    print(f"wrote {out}")
    viewer.close()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/segment.png")
