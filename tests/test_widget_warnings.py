import numpy as np

from napari_bloodseg.render import render_smear


def test_segment_dock_shows_a_warning_for_non_finite_pixels(make_napari_viewer, qtbot, tiny_checkpoint):
    from napari.utils.notifications import NotificationSeverity, notification_manager

    from napari_bloodseg.widgets.segment import SegmentWidget

    viewer = make_napari_viewer()
    img = render_smear((96, 96), seed=0).image.astype(np.float32) / 255
    img[:2, :5] = np.nan
    viewer.add_image(img, name="float", rgb=True)
    widget = SegmentWidget(viewer)
    widget._model.value = str(tiny_checkpoint)
    widget._auto_d.value = False
    widget._diameter.value = 36.0
    seen = []
    notification_manager.notification_ready.connect(seen.append)
    try:
        widget._run.clicked.emit()
        qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    finally:
        notification_manager.notification_ready.disconnect(seen.append)
    warned = [n for n in seen if n.severity == NotificationSeverity.WARNING and "NaN" in n.message]
    assert len(warned) == 1 and "10 of 9216 pixels" in warned[0].message
    assert any(layer.name.endswith("classes") for layer in viewer.layers)  # still segmented
