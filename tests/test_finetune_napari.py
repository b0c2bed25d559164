"""The correction → fine-tune loop as one path in napari, on a tiny model."""

from __future__ import annotations

from pathlib import Path

from napari_bloodseg.layers import labels_layer_kwargs
from napari_bloodseg.io import write_png
from napari_bloodseg.render import render_smear


def test_fine_tune_on_corrections_becomes_the_segment_model(make_napari_viewer, qtbot, tmp_path, tiny_checkpoint):
    import torch

    from napari_bloodseg.checkpoint import load_checkpoint
    from napari_bloodseg.widgets.correct import CorrectWidget
    from napari_bloodseg.widgets.segment import SegmentWidget

    viewer = make_napari_viewer()
    seg = SegmentWidget(viewer)
    viewer.window.add_dock_widget(seg)
    seg._model.value = str(tiny_checkpoint)
    cor = CorrectWidget(viewer)
    viewer.window.add_dock_widget(cor)
    folder = tmp_path / "my corrections"
    cor._dataset.value = folder
    # two corrected fields, the second at twice the scale (Segment measured RBCs of 72 px)
    for i, (shape, d) in enumerate((((100, 120), 36.0), ((200, 240), 72.0))):
        s = render_smear(shape, counts={3: 1}, seed=i, rbc_diameter=d)
        image = viewer.add_image(s.image, name=f"field{i}", rgb=True)
        labels = viewer.add_labels(s.mask, **labels_layer_kwargs(f"field{i} classes",
                                                                 metadata={"bloodseg": {"rbc_diameter": d}}))
        cor._image.value, cor._labels.value = image, labels
        cor._add.clicked.emit()
    masks = sorted((folder / "train" / "masks").glob("*.png"))
    assert [p.stem for p in masks] == ["field0", "field1"]
    import imageio.v3 as iio

    assert iio.imread(masks[1]).shape == (100, 120)  # stored at the training scale

    panel = cor.fine_tune
    panel._minutes.value = 0.05
    panel._run.clicked.emit()
    assert panel.worker is not None and panel._stop_button.enabled
    qtbot.waitUntil(lambda: panel.worker is None, timeout=180_000)
    report = panel.report
    assert report is not None, panel._status.value
    ckpt = Path(report["checkpoint"])
    assert ckpt.is_file() and ckpt.parent.parent == folder / "fine_tuned"
    assert report["init"] == str(tiny_checkpoint) and report["held_out"] == ["field1"]
    # the Segment dock now uses the new checkpoint
    assert seg.model_path() == ckpt
    # the before/after line is shown
    assert "held-out field field1" in panel._status.value and "→" in panel._status.value
    assert f"{100 * report['after']['pixel_accuracy']:.1f} %" in panel._status.value
    w0, _ = load_checkpoint(tiny_checkpoint)
    w1, _ = load_checkpoint(ckpt)
    assert any(not torch.equal(a, b) for a, b in zip(w0.parameters(), w1.parameters()))
    assert panel._run.enabled and not panel._stop_button.enabled
    assert report["synth"] == "procedural"  # nothing chosen to mix in: cells drawn by the plugin

    # a second run starts from the fine-tuned model, mixes in the synthesized set chosen, and never
    # replaces the first
    synth = tmp_path / "synth set"
    for i in range(2):
        s = render_smear((224, 224), counts={4: 1}, seed=50 + i)
        write_png(synth / "train" / "images" / f"{i}.png", s.image)
        write_png(synth / "train" / "masks" / f"{i}.png", s.mask)
    panel._synth.value = synth
    panel._run.clicked.emit()
    qtbot.waitUntil(lambda: panel.worker is None, timeout=180_000)
    assert panel.report["init"] == str(ckpt) and Path(panel.report["checkpoint"]) != ckpt and ckpt.is_file()
    assert seg.model_path() == Path(panel.report["checkpoint"])
    assert panel.report["synth"] == str(synth)


def test_fine_tune_without_enough_corrections_is_one_message(make_napari_viewer, tmp_path, monkeypatch):
    from napari_bloodseg.widgets import finetune as _widget_finetune
    from napari_bloodseg.widgets.correct import CorrectWidget

    errors: list[str] = []
    monkeypatch.setattr(_widget_finetune, "show_error", errors.append)
    viewer = make_napari_viewer()
    cor = CorrectWidget(viewer)
    cor.fine_tune._run.clicked.emit()  # no folder chosen
    cor._dataset.value = tmp_path
    s = render_smear((80, 80), seed=0)
    cor._image.value = viewer.add_image(s.image, name="only", rgb=True)
    cor._labels.value = viewer.add_labels(s.mask, name="only classes")
    cor._add.clicked.emit()
    cor.fine_tune._run.clicked.emit()  # one pair: nothing to hold out
    assert len(errors) == 2 and "training folder" in errors[0] and "need more than 1" in errors[1]
    assert cor.fine_tune.worker is None and cor.fine_tune._run.enabled
    s = render_smear((80, 80), seed=1)
    cor._image.value = viewer.add_image(s.image, name="second", rgb=True)
    cor._labels.value = viewer.add_labels(s.mask, name="second classes")
    cor._add.clicked.emit()
    (tmp_path / "not a set").mkdir()
    cor.fine_tune._synth.value = tmp_path / "not a set"
    cor.fine_tune._run.clicked.emit()  # the set to mix in holds no tiles
    assert len(errors) == 3 and "holds no synthesized tiles" in errors[2]
    assert cor.fine_tune.worker is None and cor.fine_tune._run.enabled
