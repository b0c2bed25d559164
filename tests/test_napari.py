import numpy as np
import pytest

from napari_bloodseg.classes import CLASS_NAMES, NUM_CLASSES


def test_manifest_is_valid_by_npe2():
    from npe2 import PluginManifest

    pm = PluginManifest.from_distribution("napari-bloodseg")
    pm.validate_imports()
    assert {c.id for c in pm.contributions.commands} >= {"napari-bloodseg.segment_widget", "napari-bloodseg.get_reader"}


def _labels_layers(viewer):
    from napari.layers import Labels

    return [l for l in viewer.layers if isinstance(l, Labels)]


def test_sample_data_opens(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-bloodseg", "smear_truth")
    image, truth = viewer.layers
    assert image.rgb and image.data.shape[-1] == 3
    assert truth.data.dtype == np.uint8
    assert set(np.unique(truth.data)) == set(range(NUM_CLASSES))


def test_segment_widget_gives_class_labels_layer(make_napari_viewer, qtbot):
    from napari.utils.colormaps import DirectLabelColormap

    from napari_bloodseg.widgets.segment import SegmentWidget

    viewer = make_napari_viewer()
    viewer.open_sample("napari-bloodseg", "smear")
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert widget._image.value is viewer.layers["rendered smear"]
    widget._run.clicked.emit()
    qtbot.waitUntil(lambda: widget.worker is None and len(_labels_layers(viewer)) == 1, timeout=120_000)
    (labels,) = _labels_layers(viewer)
    assert labels.name == "rendered smear classes"
    assert isinstance(labels.colormap, DirectLabelColormap)
    assert np.allclose(labels.colormap.map(9)[:3], (0, 1, 0))
    assert list(labels.features["class"][:NUM_CLASSES]) == list(CLASS_NAMES)
    assert labels.data.shape == viewer.layers["rendered smear"].data.shape[:2]
    # the status bar names the class under the cursor
    rr, cc = np.argwhere(labels.data == 9)[0]
    status = labels.get_status((rr, cc), world=True)
    assert "healthy RBC" in str(status)
    assert "done" in widget._status.value and "estimated from" in widget._status.value
    assert "uncertain" not in widget._status.value

    # re-running never replaces the (possibly edited) first result
    labels.data[:5, :5] = 7
    widget._run.clicked.emit()
    qtbot.waitUntil(lambda: widget.worker is None and len(_labels_layers(viewer)) == 2, timeout=120_000)
    assert (viewer.layers["rendered smear classes"].data[:5, :5] == 7).all()


def test_segment_all_open_images(make_napari_viewer, qtbot):
    """One click segments every open RGB image into its own class map; an image that is no smear is
    reported and does not stop the others; a single-channel layer is not an RGB image and is left out."""
    import dask.array as da

    from napari_bloodseg.render import render_smear
    from napari_bloodseg.widgets.segment import SegmentWidget

    viewer = make_napari_viewer()
    smears = {f"field {k}": render_smear((320, 320), seed=10 + k) for k in range(2)}
    viewer.add_image(smears["field 0"].image, name="field 0", rgb=True)
    # a lazily loaded image (dask, as napari's readers give for large files) is read in the worker
    viewer.add_image(da.from_array(smears["field 1"].image, chunks=(160, 160, 3)), name="field 1", rgb=True)
    viewer.add_image(np.zeros((6, 6, 3), np.uint8), name="thumbnail", rgb=True)
    viewer.add_image(np.zeros((64, 64), np.uint8), name="gray")
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget._auto_d.value = False
    widget._diameter.value = 36.0  # as after 'RBC diameter from all open images'
    widget._run_all.clicked.emit()
    assert not widget._run.enabled and not widget._run_all.enabled  # one job at a time
    qtbot.waitUntil(lambda: widget.worker is None, timeout=120_000)
    assert widget._run.enabled and widget._run_all.enabled
    assert sorted(l.name for l in _labels_layers(viewer)) == ["field 0 classes", "field 1 classes"]
    for name, s in smears.items():
        labels = viewer.layers[f"{name} classes"]
        assert labels.metadata["bloodseg"]["rbc_diameter"] == 36.0
        assert (labels.data == s.mask).mean() > 0.85  # the shipped model on a drawn smear
    assert widget._status.value.startswith("segmented 2 of 3 images; skipped: thumbnail (")
    assert "too small" in widget._status.value

    # nothing open to segment: one message, nothing starts
    for name in [l.name for l in viewer.layers]:
        viewer.layers.remove(name)
    widget._run_all.clicked.emit()
    assert widget.worker is None and not _labels_layers(viewer)


def test_segment_widget_cancel(make_napari_viewer, qtbot, tiny_checkpoint):
    from napari_bloodseg.widgets.segment import SegmentWidget

    viewer = make_napari_viewer()
    viewer.add_image(np.full((3000, 3000, 3), 200, np.uint8), name="big", rgb=True)
    widget = SegmentWidget(viewer)
    widget._model.value = str(tiny_checkpoint)
    widget._auto_d.value = False
    widget._diameter.value = 36.0
    widget._run.clicked.emit()
    qtbot.waitUntil(lambda: widget._status.value.startswith("tile"), timeout=60_000)
    widget._cancel.clicked.emit()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    assert widget._status.value == "cancelled"
    assert not _labels_layers(viewer)
    assert widget._run.enabled

    # 'Segment all open images' cancelled during the second image keeps the first one's map
    viewer.add_image(np.full((300, 300, 3), 200, np.uint8), name="small", rgb=True)
    viewer.layers.move(len(viewer.layers) - 1, 0)  # segmented first
    widget._run_all.clicked.emit()
    qtbot.waitUntil(lambda: widget._status.value.startswith("image 2/2"), timeout=60_000)
    widget._cancel.clicked.emit()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    assert widget._status.value == "segmented 1 of 2 images (cancelled)"
    assert [l.name for l in _labels_layers(viewer)] == ["small classes"]
    assert widget._run.enabled and widget._run_all.enabled


def test_segment_widget_bad_input_is_a_message(make_napari_viewer, qtbot, tiny_checkpoint):
    from napari_bloodseg.widgets.segment import SegmentWidget

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((64, 64), np.uint8), name="gray")
    widget = SegmentWidget(viewer)
    widget._model.value = str(tiny_checkpoint)
    widget._run.clicked.emit()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    assert "grayscale" in widget._status.value
    assert not _labels_layers(viewer)


def test_writer_reader_round_trip(make_napari_viewer, tmp_path):
    import imageio.v3 as iio

    from napari_bloodseg._reader import napari_get_reader
    from napari_bloodseg.render import sample_smear

    viewer = make_napari_viewer()
    mask = sample_smear().mask
    viewer.add_labels(mask.astype(np.int32), name="truth")
    out = tmp_path / "truth.png"
    written = viewer.layers["truth"].save(str(out), plugin="napari-bloodseg")
    assert sorted(written) == sorted(str(tmp_path / n) for n in ("truth.png", "truth_color.png", "truth_classes.json"))
    on_disk = iio.imread(out)
    assert on_disk.dtype == np.uint8 and np.array_equal(on_disk, mask)
    for name in ("truth.png", "truth_color.png"):
        data, kwargs, kind = napari_get_reader(str(tmp_path / name))(str(tmp_path / name))[0]
        assert kind == "labels" and data.dtype == np.uint8
        assert np.array_equal(data, mask)
        assert list(kwargs["features"]["class"][:NUM_CLASSES]) == list(CLASS_NAMES)


def test_writer_refuses_foreign_values(make_napari_viewer, tmp_path):
    from napari_bloodseg._writer import write_labels

    with pytest.raises(ValueError, match="outside the class ids"):
        write_labels(str(tmp_path / "x.png"), np.full((8, 8), 42), {})
    assert not any(tmp_path.iterdir())


def test_reader_decodes_reference_colour_maps(tmp_path):
    import imageio.v3 as iio

    from napari_bloodseg._reader import napari_get_reader

    ref = np.zeros((40, 40, 3), np.uint8)
    ref[:10] = (250, 190, 190)  # reference neutrophil
    ref[10:20] = (255, 225, 0)  # reference thrombocyte
    ref[20:30] = (0, 0, 255)  # partial WBC → ignore
    ref[30:] = (0, 255, 0)
    iio.imwrite(tmp_path / "ref.jpg", ref, quality=90)
    iio.imwrite(tmp_path / "ref.png", ref)
    data = napari_get_reader(str(tmp_path / "ref.png"))(str(tmp_path / "ref.png"))[0][0]
    assert (data[:10] == 3).all() and (data[10:20] == 6).all() and (data[20:30] == 255).all() and (data[30:] == 9).all()
    # a photo is not claimed
    photo = np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)
    iio.imwrite(tmp_path / "photo.png", photo)
    assert napari_get_reader(str(tmp_path / "photo.png")) is None


def test_reader_opens_a_synthesized_set(tmp_path):
    from napari_bloodseg._reader import napari_get_reader
    from napari_bloodseg.synth import SamplePool, synthesize

    synthesize(SamplePool.procedural(4, seed=0), tmp_path / "set", {"train": 3, "val": 0, "test": 0}, seed=1)
    layers = napari_get_reader(str(tmp_path / "set"))(str(tmp_path / "set"))
    kinds = [k for _, _, k in layers]
    assert "image" in kinds and "labels" in kinds
    labels = next(d for d, _, k in layers if k == "labels")
    assert np.asarray(labels).shape[0] == 3 and np.asarray(labels).max() <= 9


def test_a_yolo_label_file_opens_with_its_image_and_boxes_in_class_colours(make_napari_viewer, tmp_path):
    import imageio.v3 as iio

    from napari_bloodseg.classes import CLASS_COLORS, BloodClass
    from napari_bloodseg.render import render_smear

    s = render_smear((120, 160), seed=2)
    (tmp_path / "set" / "train" / "images").mkdir(parents=True)
    (tmp_path / "set" / "train" / "labels").mkdir()
    iio.imwrite(tmp_path / "set" / "train" / "images" / "f_001.jpg", s.image, quality=95)
    (tmp_path / "set" / "data.yaml").write_text("names: {0: Lymphocyte, 1: RBC, 2: WBC}\n")
    # a lymphocyte box (x 40-80, y 30-90 of 160x120), an RBC polygon, a WBC without type, an id beyond the names
    (tmp_path / "set" / "train" / "labels" / "f_001.txt").write_text(
        "0 0.375 0.5 0.25 0.5\n1 0.1 0.1 0.2 0.1 0.2 0.2 0.1 0.2\n2 0.8 0.8 0.1 0.1\n5 0.5 0.5 0.1 0.1\nbad line\n")
    viewer = make_napari_viewer()
    layers = viewer.open(str(tmp_path / "set" / "train" / "labels" / "f_001.txt"), plugin="napari-bloodseg")
    image, boxes = layers
    assert image.rgb and image.data.shape == (120, 160, 3) and image.name == "f_001"
    assert list(boxes.features["class"]) == ["Lymphocyte", "RBC", "WBC", "class 5"]
    assert np.allclose(boxes.data[0].min(0), (30, 40)) and np.allclose(boxes.data[0].max(0), (90, 80))
    assert np.allclose(boxes.data[1].min(0), (12, 16)) and np.allclose(boxes.data[1].max(0), (24, 32))
    assert np.allclose(boxes.edge_color[0][:3], CLASS_COLORS[BloodClass.LYMPHOCYTE] / 255)
    assert np.allclose(boxes.edge_color[1][:3], CLASS_COLORS[BloodClass.HEALTHY_RBC] / 255)
    assert np.allclose(boxes.edge_color[2][:3], 200 / 255)  # a WBC without a type: grey
    # a text file elsewhere is not claimed
    from napari_bloodseg._reader import napari_get_reader

    (tmp_path / "notes.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    assert napari_get_reader(str(tmp_path / "notes.txt")) is None


def test_wbc_types_from_annotation_boxes_correct_the_map_and_undo(make_napari_viewer, qtbot):
    from napari_bloodseg.classes import BloodClass
    from napari_bloodseg.widgets.correct import CorrectWidget

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((100, 100, 3), np.uint8), name="field", rgb=True)
    m = np.full((100, 100), int(BloodClass.HEALTHY_RBC), np.uint8)
    m[20:40, 20:40] = BloodClass.NEUTROPHIL  # called neutrophil, boxed as a lymphocyte
    m[25:30, 25:30] = BloodClass.MONOCYTE
    m[70:90, 70:90] = BloodClass.NEUTROPHIL  # boxed as a neutrophil: nothing to change
    m[5:10, 80:90] = BloodClass.NEUTROPHIL  # no box: left alone
    labels = viewer.add_labels(m.copy(), name="field classes")
    rect = lambda r0, c0, r1, c1: np.array([[r0, c0], [r0, c1], [r1, c1], [r1, c0]], float)  # noqa: E731
    viewer.add_shapes([rect(15, 15, 45, 45), rect(65, 65, 95, 95), rect(50, 0, 60, 10), rect(0, 50, 20, 70)],
                      shape_type="rectangle", name="boxes",
                      features={"class": ["Lymphocyte", "neutrophil", "RBC", "monocyte"]})
    w = CorrectWidget(viewer)
    w._labels.value, w._boxes.value = labels, viewer.layers["boxes"]
    w._from_boxes.clicked.emit()
    out = np.asarray(labels.data)
    assert (out[20:40, 20:40] == BloodClass.LYMPHOCYTE).all()
    assert (out[70:90, 70:90] == BloodClass.NEUTROPHIL).all() and (out[5:10, 80:90] == BloodClass.NEUTROPHIL).all()
    assert ((out != m) == ((m != out) & (np.arange(100)[:, None] < 45))).all()
    assert (out == BloodClass.HEALTHY_RBC).sum() == (m == BloodClass.HEALTHY_RBC).sum()
    assert "2 WBC(s) given their box's type (400 px changed); 1 WBC box(es) with no WBC" in w._status.value
    labels.undo()
    assert np.array_equal(np.asarray(labels.data), m)


def test_training_pair_writer_via_napari(make_napari_viewer, tmp_path):
    import imageio.v3 as iio

    from napari_bloodseg.render import render_smear

    viewer = make_napari_viewer()
    s = render_smear((128, 128), seed=3)
    viewer.add_image(s.image, name="slide 7", rgb=True)
    viewer.add_labels(s.mask, name="slide 7 classes")
    out = tmp_path / "pairs"
    written = viewer.layers.save(str(out), plugin="napari-bloodseg")
    again = viewer.layers.save(str(out), plugin="napari-bloodseg")
    assert sorted(p.split("/")[-1] for p in written + again) == ["slide_7.png", "slide_7.png", "slide_7_2.png", "slide_7_2.png"]
    assert np.array_equal(iio.imread(out / "train" / "masks" / "slide_7.png"), s.mask)
    assert np.array_equal(iio.imread(out / "train" / "images" / "slide_7.png"), s.image)


def test_reader_opens_a_bank_as_gallery(tmp_path):
    from napari_bloodseg._reader import napari_get_reader
    from napari_bloodseg.cli import main

    assert main(["bank", "procedural", "--bank", str(tmp_path / "bank"), "--per-class", "2"]) == 0
    layers = napari_get_reader(str(tmp_path / "bank"))(str(tmp_path / "bank"))
    kinds = [k for _, _, k in layers]
    assert kinds.count("image") == 1 and kinds.count("labels") == 1
    labels = next(d for d, _, k in layers if k == "labels")
    assert set(np.unique(labels)) - {0} == set(range(1, NUM_CLASSES))


def test_segment_widget_flags_an_uncertain_rbc_estimate(make_napari_viewer, qtbot, tiny_checkpoint):
    from napari_bloodseg.render import render_smear
    from napari_bloodseg.widgets.segment import SegmentWidget

    viewer = make_napari_viewer()
    viewer.add_image(render_smear((90, 90), seed=1).image, name="crop", rgb=True)
    widget = SegmentWidget(viewer)
    widget._model.value = tiny_checkpoint
    widget._scale_method.value = "classical"
    widget._run.clicked.emit()
    qtbot.waitUntil(lambda: widget.worker is None and len(_labels_layers(viewer)) == 1, timeout=60_000)
    assert "uncertain" in widget._status.value
    meta = _labels_layers(viewer)[0].metadata["bloodseg"]
    assert meta["rbc_diameter_estimated"] and meta["rbc_cells_measured"] < 10


def test_segment_widget_takes_the_rbc_diameter_from_a_drawn_line(make_napari_viewer):
    from napari_bloodseg.widgets.segment import SegmentWidget

    viewer = make_napari_viewer()
    widget = SegmentWidget(viewer)
    widget.diameter_from_line()  # no line yet: a message, nothing changed
    assert widget._auto_d.value
    viewer.add_shapes([np.array([[10.0, 10.0], [10.0, 50.0]])], shape_type="line", name="ruler")
    widget.diameter_from_line()
    assert not widget._auto_d.value and widget._diameter.value == pytest.approx(40.0)
    assert not widget._scale_method.enabled and widget._diameter.enabled


def test_segment_widget_takes_the_pixel_size_stored_in_the_opened_tiff(make_napari_viewer, qtbot, tiny_checkpoint, tmp_path):
    import tifffile

    from napari_bloodseg.render import render_smear
    from napari_bloodseg.widgets.segment import SegmentWidget

    path = tmp_path / "field.tif"
    tifffile.imwrite(path, render_smear((96, 96), seed=3).image, resolution=(1e4 / 0.25, 1e4 / 0.25),
                     resolutionunit="CENTIMETER")
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(path))
    widget = SegmentWidget(viewer)
    widget._model.value = tiny_checkpoint
    widget._image.value = layer
    widget._run.clicked.emit()
    qtbot.waitUntil(lambda: widget.worker is None and len(_labels_layers(viewer)) == 1, timeout=60_000)
    meta = _labels_layers(viewer)[0].metadata["bloodseg"]
    assert meta["rbc_diameter"] == pytest.approx(30.0) and meta["rbc_diameter_method"] == "pixel size 0.25 µm (file)"
    assert not meta["rbc_diameter_estimated"] and "pixel size 0.25" in widget._status.value


def test_segment_widget_tightens_wbc_outlines_unless_unticked(make_napari_viewer, qtbot):
    from napari_bloodseg.classes import WBC_CLASSES
    from napari_bloodseg.infer import PLATELET_MIN_PROB, WBC_MIN_PROB, Segmenter
    from napari_bloodseg.postprocess import tighten_wbcs
    from napari_bloodseg.widgets.segment import SegmentWidget

    viewer = make_napari_viewer()
    viewer.open_sample("napari-bloodseg", "smear")  # rendered with RBCs of 36 px, the model's own scale
    widget = SegmentWidget(viewer)
    widget._auto_d.value = False
    widget._diameter.value = 36.0
    assert widget._tighten.value  # on by default
    maps = []
    for tighten in (True, False):
        widget._tighten.value = tighten
        widget._run.clicked.emit()
        qtbot.waitUntil(lambda: widget.worker is None and len(_labels_layers(viewer)) == len(maps) + 1, timeout=120_000)
        maps.append(np.asarray(_labels_layers(viewer)[-1].data).copy())
    tight, raw = maps
    assert np.isin(raw, [int(c) for c in WBC_CLASSES]).any() and not np.array_equal(tight, raw)
    # unticked: the network's arg-max; ticked: the WBC- and platelet-probability thresholds, then the
    # opening and rim
    image = np.asarray(viewer.layers[0].data)
    assert np.array_equal(raw, Segmenter.from_file(None, device="cpu", tighten_wbcs=False).segment(image, 36.0).labels)
    sure = Segmenter.from_file(None, device="cpu", tighten_wbcs=False, wbc_min_prob=WBC_MIN_PROB,
                               platelet_min_prob=PLATELET_MIN_PROB)
    assert np.array_equal(tight, tighten_wbcs(sure.segment(image, 36.0).labels, 36.0))


def test_segment_widget_takes_one_rbc_diameter_from_all_open_images(make_napari_viewer, qtbot):
    from napari_bloodseg.autoscale import shared_scale
    from napari_bloodseg.infer import Segmenter
    from napari_bloodseg.render import render_smear
    from napari_bloodseg.widgets.segment import SegmentWidget

    viewer = make_napari_viewer()
    widget = SegmentWidget(viewer)
    widget.diameter_from_all_images()  # nothing open: a message, nothing changed
    assert widget._auto_d.value and widget.worker is None
    images = [render_smear((320, 320), rbc_diameter=30.0, seed=s).image for s in range(3)]
    for i, img in enumerate(images):
        viewer.add_image(img, name=f"field {i}", rgb=True)
    viewer.add_image(np.zeros((50, 50), np.float32), name="mask")  # not RGB: left out
    seg = Segmenter.from_file(None, device="cpu")
    expected = shared_scale([seg.estimate_rbc_diameter(img)[0] for img in images]).diameter
    widget._from_all.clicked.emit()
    qtbot.waitUntil(lambda: widget.worker is None and not widget._auto_d.value, timeout=120_000)
    assert widget._diameter.value == pytest.approx(expected, abs=0.05)
    assert widget._diameter.value == pytest.approx(30.0, rel=0.15)
    assert "median of 3 images' estimates" in widget._status.value
    # the map records where its diameter came from
    widget._image.value = viewer.layers["field 0"]
    widget._run.clicked.emit()
    qtbot.waitUntil(lambda: widget.worker is None and len(_labels_layers(viewer)) == 1, timeout=120_000)
    meta = _labels_layers(viewer)[0].metadata["bloodseg"]
    assert meta["rbc_diameter_method"] == "median of 3 images' estimates" and not meta["rbc_diameter_estimated"]
    # a value typed over is the user's own
    widget._diameter.value = 33.0
    widget._run.clicked.emit()
    qtbot.waitUntil(lambda: widget.worker is None and len(_labels_layers(viewer)) == 2, timeout=120_000)
    assert _labels_layers(viewer)[-1].metadata["bloodseg"]["rbc_diameter_method"] == "given"
