
import numpy as np
from qtpy.QtCore import Qt

from napari_bloodseg.classes import CLASS_COLORS, BloodClass
from napari_bloodseg.layers import labels_layer_kwargs
from napari_bloodseg.render import render_smear


def test_counts_dock_table_points_and_centring(make_napari_viewer, qtbot):
    from napari_bloodseg.widgets.counts import CountsWidget

    viewer = make_napari_viewer()
    s = render_smear((400, 400), seed=1, touching=False)
    viewer.add_image(s.image, name="smear", rgb=True)
    viewer.add_labels(s.mask, **labels_layer_kwargs("smear classes", metadata={"bloodseg": {"rbc_diameter": 36.0}}))
    w = CountsWidget(viewer)
    viewer.window.add_dock_widget(w)
    w._run.clicked.emit()
    qtbot.waitUntil(lambda: w.worker is None and w.summary is not None, timeout=60_000)
    assert w.table.rowCount() == len(w.records) > 0
    ids = [int(w.table.item(i, 0).text()) for i in range(w.table.rowCount())]
    assert ids == sorted(ids) and ids[0] == 1  # by id until a header is clicked
    assert "parasitemia" in w._summary.value
    whole = sum(r.class_id in (BloodClass.HEALTHY_RBC, BloodClass.INFECTED_RBC) and not r.cut_by_border for r in w.records)
    assert 0 < whole < w.summary["rbc_total"] and w.summary["rbc_whole"] == whole  # a 400² field has cut RBCs
    assert f"({whole} not cut by the edge)" in w._summary.value
    points = viewer.layers["smear classes cells"]
    assert len(points.data) == len(w.records)
    assert set(points.features["class"]) <= {r.class_name for r in w.records}
    # every cell is marked in its class colour; every cell but the healthy RBCs is named
    healthy = np.array([r.class_id == BloodClass.HEALTHY_RBC for r in w.records])
    assert 0 < healthy.sum() < len(healthy)
    assert (points.features["name"][healthy] == "").all()
    assert list(points.features["name"][~healthy]) == [r.class_name for r, h in zip(w.records, healthy) if not h]
    assert np.allclose(points.face_color[:, :3], CLASS_COLORS[[r.class_id for r in w.records]] / 255.0)
    n_wbc = sum(1 for c in s.cells if 1 <= c.cls <= 5)
    assert w.summary["wbc_total"] == n_wbc
    # clicking a row centres the view on that cell
    row = len(w.records) // 2
    w.table.cellClicked.emit(row, 0)
    r = w.records[row]
    assert np.allclose(viewer.camera.center[-2:], (r.centroid_row, r.centroid_col))
    # sorted by class (a header click), the first row is a basophil or eosinophil, and a click still
    # centres on the cell that row shows; numbers sort as numbers
    w.table.sortItems(1)
    first = w.table.item(0, 1).text()
    assert first == min(r.class_name for r in w.records)
    w.table.cellClicked.emit(0, 0)
    r = next(r for r in w.records if r.id == int(w.table.item(0, 0).text()))
    assert r.class_name == first
    assert np.allclose(viewer.camera.center[-2:], (r.centroid_row, r.centroid_col))
    w.table.sortItems(4, Qt.SortOrder.DescendingOrder)
    areas = [int(w.table.item(i, 4).text()) for i in range(w.table.rowCount())]
    assert areas == sorted(areas, reverse=True)
    # counting again replaces our own points layer, not anything else
    w._run.clicked.emit()
    qtbot.waitUntil(lambda: w.worker is None, timeout=60_000)
    assert [l.name for l in viewer.layers].count("smear classes cells") == 1


def test_counts_dock_saves_table_and_summary_without_overwriting(make_napari_viewer, qtbot, tmp_path):
    import csv
    import json

    from napari_bloodseg.widgets.counts import CountsWidget

    viewer = make_napari_viewer()
    s = render_smear((300, 300), seed=2, touching=False)
    viewer.add_labels(s.mask, **labels_layer_kwargs("smear classes", metadata={"bloodseg": {"rbc_diameter": 36.0}}))
    w = CountsWidget(viewer)
    assert not w._save.enabled  # nothing counted yet
    w._run.clicked.emit()
    qtbot.waitUntil(lambda: w.worker is None and w.summary is not None, timeout=60_000)
    w._save_to.value = tmp_path / "slide 1"  # no suffix: .csv is added
    csv_path, json_path = w.save()
    assert csv_path == tmp_path / "slide 1.csv" and json_path == tmp_path / "slide 1_summary.json"
    rows = list(csv.DictReader(open(csv_path)))
    assert len(rows) == len(w.records) and {r["class_name"] for r in rows} == {r.class_name for r in w.records}
    summary = json.loads(json_path.read_text())
    assert summary["wbc_total"] == w.summary["wbc_total"] and summary["class_map"] == "smear classes"
    # saving again under the same name keeps the first files untouched
    before = csv_path.read_bytes()
    csv_path.write_bytes(before + b"# mine")
    assert w.save() is None
    assert csv_path.read_bytes() == before + b"# mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["slide 1.csv", "slide 1_summary.json"]


def test_picker_paints_exports_and_pair_is_on_disk(make_napari_viewer, qtbot, tmp_path):
    import imageio.v3 as iio

    from napari_bloodseg.train import FolderDataset
    from napari_bloodseg.widgets.correct import CorrectWidget

    viewer = make_napari_viewer()
    s = render_smear((224, 224), seed=4)
    viewer.add_image(s.image, name="field 1", rgb=True)
    labels = viewer.add_labels(s.mask.copy(), **labels_layer_kwargs("field 1 classes"))
    w = CorrectWidget(viewer)
    viewer.window.add_dock_widget(w)
    w._buttons[BloodClass.PLATELET_CLUMP].clicked.emit()
    assert labels.selected_label == 7 and labels.mode == "paint"
    w.select_class(3)
    assert labels.selected_label == 3
    labels.paint((50, 50), 3)  # a brush stroke as the paint tool makes it
    assert labels.data[50, 50] == 3
    w._dataset.value = str(tmp_path / "corrected")
    w._add.clicked.emit()
    w._add.clicked.emit()  # a second export never replaces the first
    images = sorted((tmp_path / "corrected" / "train" / "images").iterdir())
    masks = sorted((tmp_path / "corrected" / "train" / "masks").iterdir())
    assert [p.name for p in images] == [p.name for p in masks] == ["field_1.png", "field_1_2.png"]
    assert np.array_equal(iio.imread(masks[0]), labels.data)
    assert iio.imread(masks[0]).dtype == np.uint8
    ds = FolderDataset(tmp_path / "corrected" / "train")
    img, mask = ds[0]
    assert img.shape == (224, 224, 3) and mask[50, 50] == 3


def test_keys_select_class(make_napari_viewer):
    from napari_bloodseg.widgets.correct import CorrectWidget

    viewer = make_napari_viewer()
    labels = viewer.add_labels(np.zeros((64, 64), np.uint8), name="mask")
    w = CorrectWidget(viewer)
    assert "class" in labels.features.columns  # the status bar can name classes
    from app_model.types import KeyBinding

    labels.keymap[KeyBinding.from_str("8")](labels)
    assert labels.selected_label == 8 and "infected RBC" in w._status.value


def test_counts_dock_summarizes_all_class_maps_without_overwriting(make_napari_viewer, qtbot, tmp_path):
    import csv
    import json

    from napari_bloodseg.cells import find_cells, summarize
    from napari_bloodseg.widgets.counts import CountsWidget

    viewer = make_napari_viewer()
    fields = [render_smear((300, 300), seed=k, touching=False) for k in (5, 6)]
    for k, s in enumerate(fields):
        viewer.add_labels(s.mask, **labels_layer_kwargs(f"field {k} classes", metadata={"bloodseg": {"rbc_diameter": 36.0}}))
    viewer.add_labels(np.arange(400, dtype=np.int32).reshape(20, 20), name="instances")  # not a class map
    w = CountsWidget(viewer)
    w._summarize.clicked.emit()  # no save path: shown only
    qtbot.waitUntil(lambda: w.worker is None and w.run_summary is not None, timeout=60_000)
    assert w.run_paths is None and "95 % CI" in w._summary.value
    run = w.run_summary
    assert [r["image"] for r in run["images"]] == ["field 0 classes", "field 1 classes"]
    expected = [summarize(find_cells(s.mask, 36.0)[1]) for s in fields]
    assert run["total"]["rbc_total"] == sum(e["rbc_total"] for e in expected) > 0
    assert run["total"]["wbc_total"] == sum(e["wbc_total"] for e in expected)
    assert run["total"]["flags"]  # two small fields: far fewer than 100 WBCs
    w._save_to.value = tmp_path / "counts.csv"
    for k in range(2):  # the second run gets a free name, the first files stay
        w.run_summary = None
        w._summarize.clicked.emit()
        qtbot.waitUntil(lambda: w.worker is None and w.run_summary is not None, timeout=60_000)
        stem = "summary" if k == 0 else "summary_2"
        assert w.run_paths == (tmp_path / f"{stem}.json", tmp_path / f"{stem}.csv")
    first = json.loads((tmp_path / "summary.json").read_text())
    assert first == json.loads((tmp_path / "summary_2.json").read_text()) == json.loads(json.dumps(run))
    rows = list(csv.DictReader(open(tmp_path / "summary.csv")))
    assert [r["image"] for r in rows] == ["field 0 classes", "field 1 classes", "TOTAL"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.csv", "summary.json", "summary_2.csv", "summary_2.json"]
