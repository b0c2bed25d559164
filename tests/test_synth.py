"""Synthesizer: determinism, split hygiene, masks vs labels JSON vs COCO, coverage, CLI, widget."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from napari_bloodseg.classes import CLASS_NAMES, NUM_CLASSES, BloodClass, folder_name
from napari_bloodseg.render import render_cell
from napari_bloodseg.synth import (
    SPLITS,
    SamplePool,
    SynthConfig,
    compose_image,
    instance_table,
    is_synth_set,
    read_synth_set,
    rle_encode,
    synthesize,
)

# small fields keep the tests quick; the recipe is the same
FAST = SynthConfig(field_size=320, crops_per_field=8, rbc_variants=6)
CELLS = range(1, NUM_CLASSES)
HEADER = ("sample_id,class_id,class_name,path,source,source_file,licence,source_rbc_diameter_px,"
          "scale_factor,split,group,synthetic").split(",")


def write_bank(root: Path, per_class: int = 2, skip: tuple[tuple[int, str], ...] = (), seed: int = 0) -> Path:
    """A tiny bank in the on-disk format: <class_folder>/<id>.png RGBA + manifest.csv + bank.json."""
    root.mkdir(parents=True)
    (root / "bank.json").write_text(json.dumps({"format": "bloodseg-bank", "version": 1, "rbc_diameter_px": 36.0}))
    rows = []
    for s_i, split in enumerate(SPLITS):
        for c in CELLS:
            if (c, split) in skip:
                continue
            for k in range(per_class):
                sid = f"{split[:2]}{c}{k}"
                rel = f"{folder_name(c)}/{sid}.png"
                (root / folder_name(c)).mkdir(exist_ok=True)
                iio.imwrite(root / rel, render_cell(c, 36.0, np.random.default_rng([seed, s_i, c, k])))
                rows.append([sid, c, CLASS_NAMES[c], rel, "test", f"{sid}.png", "CC0", "36.00", "1.0000", split, f"g{sid}", "1"])
    with open(root / "manifest.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(HEADER)
        w.writerows(rows)
    return root


@pytest.fixture(scope="module")
def proc_pool() -> SamplePool:
    pool = SamplePool.procedural(per_class=2, seed=3)
    pool.preload()
    return pool


@pytest.fixture(scope="module")
def bank_set(tmp_path_factory):
    """A bank on disk and a set synthesized from it (all three splits)."""
    base = tmp_path_factory.mktemp("bankset")
    bank = write_bank(base / "bank")
    out = base / "set"
    summary = synthesize(SamplePool.from_bank_dir(bank), out, {"train": 24, "val": 8, "test": 8}, seed=5, config=FAST)
    return bank, out, summary


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- encoders
def test_rle_and_boxes_match_pycocotools():
    mask_util = pytest.importorskip("pycocotools.mask")
    rng = np.random.default_rng(0)
    for t in range(60):
        h, w = (int(v) for v in rng.integers(1, 14, 2))
        inst = rng.integers(0, 4, (h, w))
        if t % 5 == 0:
            inst[:] = 1  # one instance covering everything (ends on the last pixel)
        ids = np.unique(inst[inst > 0])
        lut = np.zeros(int(inst.max()) + 1, np.int32)
        lut[ids] = np.arange(1, len(ids) + 1)
        inst = lut[inst]
        rles, areas, boxes = instance_table(inst, len(ids))
        assert rle_encode(inst, len(ids))[0] == rles
        for k in range(1, len(ids) + 1):
            m = inst == k
            ref = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
            assert ref["counts"].decode() == rles[k - 1]
            ys, xs = np.nonzero(m)
            assert list(boxes[k - 1]) == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            assert areas[k - 1] == m.sum()


# ----------------------------------------------------------------------------- determinism
def test_same_seed_byte_identical_with_any_workers(tmp_path, proc_pool):
    counts = {"train": 20, "val": 8, "test": 4}
    a = synthesize(proc_pool, tmp_path / "a", counts, seed=11, workers=1, config=FAST)
    synthesize(proc_pool, tmp_path / "b", counts, seed=11, workers=2, config=FAST)
    fa, fb = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert fa.keys() == fb.keys()
    assert len([k for k in fa if k.endswith(".png")]) == 2 * 32
    assert all(fa[k] == fb[k] for k in fa), [k for k in fa if fa[k] != fb[k]][:5]
    assert a["images"] == 32
    synthesize(proc_pool, tmp_path / "c", counts, seed=12, workers=1, config=FAST)
    fc = _files(tmp_path / "c")
    assert fc["train/images/train_000000.png"] != fa["train/images/train_000000.png"]
    meta = json.loads(fa["synth.json"])
    assert meta["format"] == "bloodseg-synth" and meta["complete"] and meta["seed"] == 11

    # the streaming dataset gives exactly the written pixels, in any order
    from torch.utils.data import Dataset

    from napari_bloodseg.synth import SynthDataset
    from napari_bloodseg.train import FolderDataset

    ds = SynthDataset(proc_pool, "train", 20, seed=11, config=FAST)
    assert isinstance(ds, Dataset) and len(ds) == 20
    order = ds.grouped_order(0)
    assert sorted(order) == list(range(20)) and order != list(range(20))
    assert len({i // FAST.crops_per_field for i in order[:8]}) == 1  # one field's crops together
    folder = FolderDataset(tmp_path / "a" / "train")
    assert len(folder) == 20
    for i in (13, 2, 19):
        img, mask = ds[i]
        assert img.shape == (224, 224, 3) and img.dtype == np.uint8 and mask.shape == (224, 224) and mask.dtype == np.uint8
        assert np.array_equal(img, iio.imread(tmp_path / "a" / "train" / "images" / f"train_{i:06d}.png"))
        fimg, fmask = folder[i]
        assert np.array_equal(mask, fmask)


# ----------------------------------------------------------------------------- split hygiene
def test_each_split_uses_only_its_own_samples(bank_set):
    bank, out, _ = bank_set
    with open(bank / "manifest.csv", newline="") as fh:
        split_of = {r["path"]: r["split"] for r in csv.DictReader(fh)}
    for split in SPLITS:
        labels = sorted((out / split / "labels").glob("*.json"))
        assert labels
        used = {o["samplePath"] for p in labels for o in json.loads(p.read_text()).values()}
        assert used and {split_of[u] for u in used} == {split}, (split, {u: split_of[u] for u in used if split_of[u] != split})
        assert all(o["bgPath"].startswith(f"fields/{split}/") for p in labels for o in json.loads(p.read_text()).values())


def test_shared_sample_across_splits_is_refused(tmp_path):
    bank = write_bank(tmp_path / "bank", per_class=1)
    man = bank / "manifest.csv"
    rows = list(csv.reader(open(man, newline="")))
    rows.append(list(rows[1]))
    rows[-1][9] = "test" if rows[1][9] != "test" else "train"
    with open(man, "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    with pytest.raises(ValueError, match="two splits"):
        SamplePool.from_bank_dir(bank)


# ----------------------------------------------------------------------------- ground truth
REF_KEYS = ["className", "classIdx", "posX", "posY", "bboxW", "bboxH", "tlX", "tlY", "samplePath", "bgPath"]


def test_masks_agree_with_labels_json(bank_set):
    _, out, _ = bank_set
    for split in SPLITS:
        for lp in sorted((out / split / "labels").glob("*.json")):
            mask = iio.imread(out / split / "masks" / f"{lp.stem}.png")
            img = iio.imread(out / split / "images" / f"{lp.stem}.png")
            assert mask.shape == (224, 224) and mask.dtype == np.uint8 and img.shape == (224, 224, 3)
            objs = json.loads(lp.read_text())
            assert list(objs) == [str(k) for k in range(len(objs))]
            seen = set()
            for o in objs.values():
                assert list(o) == REF_KEYS
                assert o["className"] == CLASS_NAMES[o["classIdx"]]
                box = mask[o["tlY"] : o["tlY"] + o["bboxH"], o["tlX"] : o["tlX"] + o["bboxW"]]
                assert o["bboxW"] > 0 and o["bboxH"] > 0 and box.shape == (o["bboxH"], o["bboxW"])
                assert (box == o["classIdx"]).any()
                seen.add(o["classIdx"])
            assert seen == set(np.unique(mask)) - {0}


def test_masks_agree_with_coco(bank_set):
    coco_mod = pytest.importorskip("pycocotools.coco")
    _, out, _ = bank_set
    for split in SPLITS:
        coco = coco_mod.COCO(str(out / split / "coco.json"))
        assert sorted(c["id"] for c in coco.loadCats(coco.getCatIds())) == list(CELLS)
        assert [c["name"] for c in coco.loadCats(list(CELLS))] == list(CLASS_NAMES[1:])
        assert len(coco.imgs) == len(list((out / split / "images").glob("*.png")))
        for img_id, info in coco.imgs.items():
            mask = iio.imread(out / split / info["file_name"].replace("images/", "masks/"))
            labels = json.loads((out / split / info["file_name"].replace("images/", "labels/").replace(".png", ".json")).read_text())
            anns = coco.loadAnns(coco.getAnnIds(imgIds=img_id))
            assert len(anns) == len(labels)
            union = np.zeros((NUM_CLASSES,) + mask.shape, bool)
            for a in anns:
                m = coco.annToMask(a).astype(bool)
                assert m.any() and (mask[m] == a["category_id"]).all()
                assert m.sum() == a["area"]
                assert not (union[a["category_id"]] & m).any()  # instances do not overlap
                union[a["category_id"]] |= m
            for c in CELLS:
                assert np.array_equal(union[c], mask == c), (split, info["file_name"], c)


# ----------------------------------------------------------------------------- coverage
def test_every_class_and_combination_appears(proc_pool):
    from napari_bloodseg.synth import SynthDataset

    ds = SynthDataset(proc_pool, "train", 192, seed=2, config=FAST)
    kinds_combos = set()
    pixels = np.zeros(NUM_CLASSES, np.int64)
    for i in range(len(ds)):
        si = ds.compose(i, rle=False)
        kinds_combos.add((si.kind, si.combo))
        if i < 48:
            pixels += np.bincount(si.mask.ravel(), minlength=NUM_CLASSES)
        present = set(np.unique(si.mask).tolist())
        # background kind holds: only-infected fields show no healthy RBC and vice versa
        if si.kind == "infected":
            assert int(BloodClass.HEALTHY_RBC) not in present
        if si.kind == "healthy":
            assert int(BloodClass.INFECTED_RBC) not in present
    assert len(kinds_combos) == 3 * 16 * 4  # {none, 5 single, 10 pairs of WBCs} x platelets x background
    assert (pixels > 0).all(), dict(zip(CLASS_NAMES, pixels.tolist()))


def test_cut_cells_keep_their_class_and_top_objects_win(proc_pool):
    si = compose_image(proc_pool, "val", 5, seed=1, config=FAST)
    border = np.concatenate([si.mask[0], si.mask[-1], si.mask[:, 0], si.mask[:, -1]])
    assert set(border.tolist()) - {0}  # cells are cut by the tile border and keep their class
    for k, o in enumerate(si.objects, start=1):
        assert set(np.unique(si.mask[si.instances == k]).tolist()) == {o["classIdx"]}


def test_bank_scale_is_brought_to_model_scale(tmp_path):
    """A bank stored at another RBC size is rescaled to the model's 36 px."""
    bank = tmp_path / "bank72"
    bank.mkdir()
    (bank / "bank.json").write_text(json.dumps({"format": "bloodseg-bank", "version": 1, "rbc_diameter_px": 72.0}))
    rows = []
    for c in (int(BloodClass.HEALTHY_RBC), int(BloodClass.LYMPHOCYTE)):
        for k in range(2):
            rel = f"{folder_name(c)}/{c}{k}.png"
            (bank / folder_name(c)).mkdir(exist_ok=True)
            iio.imwrite(bank / rel, render_cell(c, 72.0, np.random.default_rng([c, k])))
            rows.append([f"{c}{k}", c, CLASS_NAMES[c], rel, "t", "x", "CC0", "72", "1", "train", f"g{c}{k}", "1"])
    with open(bank / "manifest.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([HEADER, *rows])
    pool = SamplePool.from_bank_dir(bank)
    assert pool.scale == 0.5
    si = compose_image(pool, "train", 0, seed=0, config=SynthConfig.plain(field_size=320, crops_per_field=4, rbc_variants=4))
    rbc = [o for o in si.objects if o["classIdx"] == int(BloodClass.HEALTHY_RBC)
           and 0 < o["tlX"] and o["tlX"] + o["bboxW"] < 224 and 0 < o["tlY"] and o["tlY"] + o["bboxH"] < 224]
    sizes = [max(o["bboxW"], o["bboxH"]) for o in rbc]
    assert sizes and 30 <= float(np.median(sizes)) <= 42, sizes


def test_large_platelet_samples_are_shrunk_to_platelet_size(tmp_path):
    """PBC centres its platelet images on large platelets (~0.7 RBC diameters); the synthesizer
    brings thrombocytes larger than the configured range into it, unless the range is None."""
    bank = write_bank(tmp_path / "bank", per_class=1)
    plt = int(BloodClass.THROMBOCYTE)
    for k, png in enumerate(sorted((bank / folder_name(plt)).glob("*.png"))):
        iio.imwrite(png, render_cell(plt, 108.0, np.random.default_rng([9, k])))  # drawn 3x too large
    pool = SamplePool.from_bank_dir(bank)

    def diameters(config):
        out = []
        for i in range(48):
            si = compose_image(pool, "train", i, seed=4, config=config)
            for k, o in enumerate(si.objects, start=1):
                if o["classIdx"] == plt:
                    out.append(2 * np.sqrt((si.instances == k).sum() / np.pi) / 36.0)
        assert len(out) >= 10
        return np.array(out)

    shrunk = diameters(SynthConfig(field_size=320, crops_per_field=8, rbc_variants=6, thrombocyte_size=(0.25, 0.45)))
    as_sampled = diameters(SynthConfig(field_size=320, crops_per_field=8, rbc_variants=6, thrombocyte_size=None))
    assert shrunk.max() <= 0.5, shrunk  # cut or covered ones are smaller, never larger
    assert np.median(shrunk) >= 0.2, shrunk
    assert np.median(as_sampled) >= 0.6, as_sampled
    # a set written before the range existed keeps its recipe when its config is read back
    assert SynthConfig.from_dict({"tile": 224}).thrombocyte_size is None
    assert SynthConfig.from_dict(SynthConfig().to_dict()).thrombocyte_size == SynthConfig().thrombocyte_size
    with pytest.raises(ValueError, match="thrombocyte_size"):
        SynthConfig(thrombocyte_size=(0.5, 0.2))


def test_cli_platelet_size_is_recorded_and_checked(tmp_path, capsys):
    bank = write_bank(tmp_path / "bank", per_class=1)
    few = ("--bank", str(bank), "--train", "2", "--val", "0", "--test", "0")
    assert _cli(*few, "--out", str(tmp_path / "a")) == 0
    assert json.loads((tmp_path / "a" / "synth.json").read_text())["config"]["thrombocyte_size"] == [0.2, 0.5]
    assert _cli(*few, "--out", str(tmp_path / "b"), "--platelet-size", "0", "0") == 0
    assert json.loads((tmp_path / "b" / "synth.json").read_text())["config"]["thrombocyte_size"] is None
    capsys.readouterr()
    assert _cli(*few, "--out", str(tmp_path / "c"), "--platelet-size", "0.5", "0.2") == 2
    assert "--platelet-size needs 0 < LOW <= HIGH" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


# ----------------------------------------------------------------------------- CLI
def _cli(*args):
    from napari_bloodseg.cli import main

    return main(["synth", *args, "--field-size", "320", "--crops-per-field", "8", "--workers", "1", "-q"])


def test_cli_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "set"
    assert _cli("--procedural", "--per-class", "1", "--out", str(out), "--train", "4", "--val", "0", "--test", "0") == 0
    first = (out / "train" / "images" / "train_000000.png").read_bytes()
    capsys.readouterr()
    assert _cli("--procedural", "--per-class", "1", "--out", str(out), "--train", "4", "--val", "0", "--test", "0", "--seed", "9") == 2
    assert "not empty" in capsys.readouterr().err
    assert (out / "train" / "images" / "train_000000.png").read_bytes() == first
    assert _cli("--procedural", "--per-class", "1", "--out", str(out), "--train", "3", "--val", "0", "--test", "0",
                "--seed", "9", "--overwrite") == 0
    assert len(list((out / "train" / "images").glob("*.png"))) == 3
    other = tmp_path / "photos"
    other.mkdir()
    (other / "holiday.jpg").write_bytes(b"x")
    assert _cli("--procedural", "--per-class", "1", "--out", str(other), "--train", "2", "--overwrite") == 2
    assert "not a synthesized set" in capsys.readouterr().err
    assert (other / "holiday.jpg").exists()


def test_cli_reports_missing_classes(tmp_path, capsys):
    bank = write_bank(tmp_path / "bank", per_class=1,
                      skip=((int(BloodClass.BASOPHIL), "val"), (int(BloodClass.PLATELET_CLUMP), "test")))
    out = tmp_path / "set"
    assert _cli("--bank", str(bank), "--out", str(out), "--train", "2", "--val", "2", "--test", "2") == 2
    err = capsys.readouterr().err
    assert "val: basophil" in err and "test: platelet clump" in err and "--allow-missing" in err
    assert not out.exists() or not any(out.iterdir())
    assert _cli("--bank", str(bank), "--out", str(out), "--train", "2", "--val", "16", "--test", "2", "--allow-missing") == 0
    for lp in (out / "val" / "labels").glob("*.json"):
        assert all(o["classIdx"] != int(BloodClass.BASOPHIL) for o in json.loads(lp.read_text()).values())
    meta = json.loads((out / "synth.json").read_text())
    assert meta["missing_classes"] == {"val": ["basophil"], "test": ["platelet clump"]}


def test_cli_preset_counts():
    from napari_bloodseg.cli import build_parser

    args = build_parser().parse_args(["synth", "--procedural", "--out", "x", "--preset", "reference"])
    assert args.preset == "reference" and args.train is None
    from napari_bloodseg.synth import REFERENCE_COUNTS

    assert REFERENCE_COUNTS == {"train": 65350, "val": 6560, "test": 6560}


# ----------------------------------------------------------------------------- reader + napari
def test_reader_functions(bank_set):
    _, out, _ = bank_set
    assert is_synth_set(out) and is_synth_set(out / "train")
    assert not is_synth_set(out / "train" / "images") and not is_synth_set(out.parent)
    layers = read_synth_set(out / "val")
    assert [t for _, _, t in layers] == ["image", "labels"]
    (imgs, ikw, _), (masks, lkw, _) = layers
    assert imgs.shape == (8, 224, 224, 3) and masks.shape == (8, 224, 224) and ikw["rgb"]
    assert lkw["name"].endswith("val classes")
    assert len(read_synth_set(out)) == 6


def test_synth_widget_builds_and_previews(make_napari_viewer, qtbot, tmp_path):
    from napari.layers import Image, Labels
    from napari.utils.colormaps import DirectLabelColormap

    from napari_bloodseg.widgets.synth import SynthWidget

    viewer = make_napari_viewer()
    widget = SynthWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget._procedural.value = True
    widget._per_class.value = 1
    widget._out.value = str(tmp_path / "wset")
    widget._train.value, widget._val.value, widget._test.value = 6, 2, 0
    widget._workers.value = 1
    widget._preview.value = 4
    widget._run.clicked.emit()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=120_000)
    assert widget._status.value.startswith("done"), widget._status.value
    images = [lay for lay in viewer.layers if isinstance(lay, Image)]
    labels = [lay for lay in viewer.layers if isinstance(lay, Labels)]
    assert len(images) == 1 and len(labels) == 1
    assert images[0].rgb and images[0].data.shape == (4, 224, 224, 3)
    assert labels[0].data.shape == (4, 224, 224)
    assert isinstance(labels[0].colormap, DirectLabelColormap)
    assert np.allclose(labels[0].colormap.map(9)[:3], (0, 1, 0))
    assert (tmp_path / "wset" / "val" / "coco.json").is_file()

    # a second run into the same folder is refused with a message, nothing replaced
    before = (tmp_path / "wset" / "train" / "images" / "train_000000.png").read_bytes()
    widget._run.clicked.emit()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    assert widget._status.value.startswith("error") and "not empty" in widget._status.value
    assert (tmp_path / "wset" / "train" / "images" / "train_000000.png").read_bytes() == before

    # errors inside the worker (a bank lacking a class) become a message
    bank = write_bank(tmp_path / "bank", per_class=1, skip=((int(BloodClass.MONOCYTE), "train"),))
    widget._procedural.value = False
    widget._bank.value = str(bank)
    widget._out.value = str(tmp_path / "wset2")
    widget._run.clicked.emit()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    assert widget._status.value.startswith("error") and "train: monocyte" in widget._status.value

    # cancel stops a long run and leaves the set marked incomplete
    widget._procedural.value = True
    widget._out.value = str(tmp_path / "wset3")
    widget._train.value = 5000
    widget._run.clicked.emit()
    qtbot.waitUntil(lambda: widget._status.value.startswith("image"), timeout=60_000)
    widget._cancel.clicked.emit()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    assert widget._status.value.startswith("cancelled") and widget._run.enabled
    assert len(list((tmp_path / "wset3" / "train" / "images").glob("*.png"))) < 5000
    assert json.loads((tmp_path / "wset3" / "synth.json").read_text())["complete"] is False
