import collections
import csv
import json

import numpy as np
import pytest

from napari_bloodseg.cells import GROUPS, MIN_AREA, find_cells, summarize, write_table
from napari_bloodseg.classes import BloodClass
from napari_bloodseg.render import render_smear

from drawing import disk


def _truth(smear, rbc_diameter=36.0):
    """Rendered cells, less slivers cut by the border below the smallest area counted."""
    area = np.bincount(smear.instances.ravel(), minlength=len(smear.cells) + 1)
    rbc_area = np.pi * (rbc_diameter / 2) ** 2
    group = {c: g for g, ids in GROUPS.items() for c in ids}
    return collections.Counter(c.cls for c in smear.cells if area[c.id] >= MIN_AREA[group[c.cls]] * rbc_area)


@pytest.mark.parametrize("seed", [0, 1])
def test_counts_and_parasitemia_exact_on_separated_cells(seed):
    s = render_smear((640, 640), seed=seed, touching=False, infected_fraction=0.2)
    instances, records = find_cells(s.mask, rbc_diameter=36.0)
    assert collections.Counter(r.class_id for r in records) == _truth(s)
    summary = summarize(records)
    t = _truth(s)
    rbc = t[BloodClass.INFECTED_RBC] + t[BloodClass.HEALTHY_RBC]
    assert summary["rbc_total"] == rbc
    assert summary["parasitemia_percent"] == pytest.approx(100 * t[BloodClass.INFECTED_RBC] / rbc, abs=1e-3)
    assert sum(v for v in summary["wbc_differential_percent"].values()) == pytest.approx(100)
    assert instances.max() == len(records)


def test_touching_cells_are_separated_within_tolerance():
    s = render_smear((768, 768), seed=3, touching=True, rbc_density=0.6)
    _, records = find_cells(s.mask, rbc_diameter=36.0)
    got = collections.Counter(r.class_id for r in records)
    t = _truth(s)
    for cls in (BloodClass.HEALTHY_RBC, BloodClass.INFECTED_RBC):
        assert abs(got[cls] - t[cls]) <= max(2, 0.08 * t[cls]), (cls, got[cls], t[cls])
    # without splitting, touching RBCs would merge into far fewer objects
    from skimage.measure import label

    merged = label(np.isin(s.mask, (8, 9))).max()
    assert merged < 0.9 * (t[8] + t[9])


def test_mixed_rbc_votes_majority():
    labels = np.zeros((80, 80), np.uint8)
    yy, xx = np.mgrid[:80, :80]
    disk = (yy - 40) ** 2 + (xx - 40) ** 2 < 18**2
    labels[disk] = BloodClass.INFECTED_RBC
    labels[disk & (xx > 50)] = BloodClass.HEALTHY_RBC
    _, records = find_cells(labels, 36.0)
    assert [r.class_name for r in records] == ["infected RBC"]


def test_report_from_cli(tmp_path, tiny_checkpoint):
    import imageio.v3 as iio

    from napari_bloodseg.cli import main

    s = render_smear((256, 256), seed=2)
    iio.imwrite(tmp_path / "f.png", s.image)
    rc = main(["segment", str(tmp_path / "f.png"), "--out", str(tmp_path / "o"), "--model", str(tiny_checkpoint),
               "--rbc-diameter", "36", "--report", "-q"])
    assert rc == 0
    summary = json.loads((tmp_path / "o" / "f_summary.json").read_text())
    rows = list(csv.DictReader(open(tmp_path / "o" / "f_cells.csv")))
    assert summary["counts_total"] == len(rows)
    assert set(rows[0]) >= {"id", "class_name", "centroid_row", "centroid_col", "area_px", "mean_probability"} if rows else True
    for row in rows:
        assert 0 <= float(row["mean_probability"]) <= 1


def test_small_whole_blob_is_not_a_cell_but_a_border_sliver_is():
    """An RBC-class speck inside the image (debris the model called infected) must not count
    towards parasitemia; a cell of which the border leaves the same area still counts."""
    from napari_bloodseg.classes import BloodClass

    d = 36.0
    lab = np.zeros((200, 200), np.uint8)
    yy, xx = np.mgrid[:200, :200]
    lab[np.hypot(yy - 60, xx - 60) < d / 2] = BloodClass.HEALTHY_RBC  # a whole RBC
    lab[np.hypot(yy - 140, xx - 140) < 0.45 * d / 2] = BloodClass.INFECTED_RBC  # 0.2 of its area, inside
    lab[np.hypot(yy - 100, xx - 0) < 0.45 * d / 2 * np.sqrt(2)] = BloodClass.INFECTED_RBC  # same area, half cut off
    _, recs = find_cells(lab, d)
    classes = sorted(r.class_name for r in recs)
    assert classes == ["healthy RBC", "infected RBC"]
    (inf,) = [r for r in recs if r.class_name == "infected RBC"]
    assert inf.min_col == 0  # the sliver at the border, not the speck
    assert summarize(recs, d)["parasitemia_percent"] == 50.0


def test_platelet_speck_in_a_cell_centre_is_not_a_platelet():
    """The model sometimes marks an RBC's pale centre as a thrombocyte: one RBC, no platelet.
    A free platelet, even with a thin RBC-class rim the model drew round it, still counts."""
    from napari_bloodseg.classes import BloodClass

    d = 36.0
    lab = np.zeros((200, 200), np.uint8)
    yy, xx = np.mgrid[:200, :200]
    lab[np.hypot(yy - 60, xx - 60) < d / 2] = BloodClass.HEALTHY_RBC
    lab[np.hypot(yy - 60, xx - 60) < 4] = BloodClass.THROMBOCYTE  # speck in the pallor
    lab[np.hypot(yy - 150, xx - 150) < 7] = BloodClass.HEALTHY_RBC  # thin rim...
    lab[np.hypot(yy - 150, xx - 150) < 5] = BloodClass.THROMBOCYTE  # ...round a real platelet
    lab[np.hypot(yy - 40, xx - 160) < 5] = BloodClass.THROMBOCYTE  # a free platelet
    _, recs = find_cells(lab, d)
    s = summarize(recs, d)
    assert s["rbc_total"] == 1 and s["platelets"] == 2
    assert {(round(r.centroid_row), round(r.centroid_col)) for r in recs if r.class_name == "thrombocyte"} == {(150, 150), (40, 160)}


def test_wilson_interval_known_values():
    from napari_bloodseg.slide_report import wilson_interval

    assert wilson_interval(0, 0) is None
    lo, hi = wilson_interval(0, 10)
    assert lo == 0 and hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = wilson_interval(5, 10)
    assert (lo, hi) == (pytest.approx(0.2366, abs=1e-4), pytest.approx(0.7634, abs=1e-4))
    lo, hi = wilson_interval(20, 1000)
    assert (lo, hi) == (pytest.approx(0.01300, abs=1e-4), pytest.approx(0.03066, abs=1e-4))
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def _image_summary(wbc: int, healthy: int, infected: int) -> dict:
    from napari_bloodseg.classes import CLASS_NAMES

    counts = {n: 0 for n in CLASS_NAMES[1:]}
    counts["neutrophil"], counts["lymphocyte"] = wbc - wbc // 4, wbc // 4
    counts["healthy RBC"], counts["infected RBC"] = healthy, infected
    return {"counts": counts, "rbc_diameter_px": 36.0}


def test_run_summary_totals_flags_and_files(tmp_path):
    from napari_bloodseg.slide_report import run_line, run_summary, write_run_summary

    run = run_summary([("a.png", _image_summary(60, 590, 10)), ("b.png", _image_summary(40, 395, 5))], failed=["c.png"])
    t = run["total"]
    assert t["images"] == 2 and t["wbc_total"] == 100 and t["rbc_total"] == 1000 and t["infected_rbc"] == 15
    assert t["parasitemia_percent"] == 1.5 and t["parasitemia_ci95_percent"] == [0.911, 2.46]
    assert t["wbc_differential_percent"]["neutrophil"] == 75.0 and t["flags"] == []  # 100 WBCs, 1,000 RBCs: enough
    assert [len(r["flags"]) for r in run["images"]] == [2, 2] and run["failed"] == ["c.png"]
    assert "1000 RBCs" in run_line(run) and "too few" not in run_line(run)
    write_run_summary(run, tmp_path / "summary.json", tmp_path / "summary.csv")
    first = (tmp_path / "summary.json").read_bytes(), (tmp_path / "summary.csv").read_bytes()
    other = run_summary([("a.png", _image_summary(1, 5, 0))])
    assert "too few WBCs and RBCs" in run_line(other)
    with pytest.raises(FileExistsError):
        write_run_summary(other, tmp_path / "summary.json", tmp_path / "new.csv")
    assert not (tmp_path / "new.csv").exists()
    assert ((tmp_path / "summary.json").read_bytes(), (tmp_path / "summary.csv").read_bytes()) == first
    write_run_summary(other, tmp_path / "summary.json", tmp_path / "summary.csv", overwrite=True)
    assert (tmp_path / "summary.json").read_bytes() != first[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.csv", "summary.json"]  # no temporary files left



def test_wbc_fringe_along_a_neighbouring_rbc_neither_inflates_the_wbc_nor_counts():
    """A thin WBC-class rim the model draws round an RBC touching a WBC stays out of the WBC's box."""
    d = 36.0
    labels = np.zeros((200, 300), np.uint8)
    rbc = disk(labels.shape, (100, 190), d / 2)
    labels[rbc] = BloodClass.HEALTHY_RBC
    rim = disk(labels.shape, (100, 190), d / 2 + 3) & ~rbc
    labels[rim] = BloodClass.NEUTROPHIL
    wbc = disk(labels.shape, (100, 130), 0.75 * d)
    labels[wbc] = BloodClass.NEUTROPHIL
    _, records = find_cells(labels, d)
    wbcs = [r for r in records if r.class_id == BloodClass.NEUTROPHIL]
    assert len(wbcs) == 1
    w = wbcs[0]
    assert w.max_col <= 130 + 0.75 * d + 2  # the box ends at the WBC, not round the RBC
    assert [r.class_id for r in records].count(BloodClass.HEALTHY_RBC) == 1


def test_wbc_class_specks_smaller_than_a_lymphocyte_are_not_counted():
    d = 36.0
    labels = np.zeros((200, 300), np.uint8)
    labels[disk(labels.shape, (100, 60), 0.6 * d / 2)] = BloodClass.BASOPHIL  # 0.36 x an RBC's area: a speck
    labels[disk(labels.shape, (100, 200), 0.5 * d)] = BloodClass.LYMPHOCYTE  # an RBC across: a small lymphocyte
    _, records = find_cells(labels, d)
    assert [r.class_name for r in records] == ["lymphocyte"]


def test_cells_cut_by_the_border_are_flagged_and_whole_rbcs_counted(tmp_path):
    """Two RBCs inside the field, one cut by the left edge, one by the bottom: every cell counts in
    rbc_total, only the two whole ones in rbc_whole, and the table says which were cut."""
    labels = np.zeros((200, 200), np.uint8)
    for centre in [(60, 60), (60, 140), (120, 0), (199, 100)]:
        labels[disk(labels.shape, centre, 18)] = BloodClass.HEALTHY_RBC
    _, records = find_cells(labels, 36.0)
    by_centre = {(round(r.centroid_row / 10), round(r.centroid_col / 10)): r for r in records}
    assert len(records) == 4 and all(r.class_id == BloodClass.HEALTHY_RBC for r in records)
    assert [r.cut_by_border for r in sorted(records, key=lambda r: (r.min_row, r.min_col))] == [False, False, True, True]
    assert not by_centre[(6, 6)].cut_by_border and not by_centre[(6, 14)].cut_by_border
    s = summarize(records, 36.0)
    assert (s["rbc_total"], s["rbc_whole"]) == (4, 2)
    path = tmp_path / "cells.csv"
    write_table(records, path)
    rows = list(csv.DictReader(open(path)))
    assert sorted(row["cut_by_border"] for row in rows) == ["False", "False", "True", "True"]


@pytest.mark.parametrize("gap", [0.3, 0.35])
def test_overlapping_rbcs_of_a_thick_smear_are_counted_one_by_one(gap):
    """Three RBCs overlapping like coins (thick areas of a smear, bcd_draaslan's fields), centres
    ``gap`` diameters apart, form a union without a clear waist; each is still one RBC. A large
    round RBC and an elongated one stay whole."""
    d = 40.0
    shape = (240, 320)
    lab = np.zeros(shape, np.uint8)
    stack = disk(shape, (170, 60), d / 2) | disk(shape, (170 + 0.3 * d, 60 + gap * d), d / 2) | disk(
        shape, (170, 60 + 2 * gap * d), d / 2)
    pair = disk(shape, (60, 60), d / 2) | disk(shape, (60, 60 + 0.5 * d), d / 2)
    macrocyte = disk(shape, (60, 240), 0.65 * d)  # 1.69 RBC areas, round
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    elongated = ((yy - 170) / (0.4 * d)) ** 2 + ((xx - 240) / (0.75 * d)) ** 2 < 1  # 1.2 RBC areas
    for m in (stack, pair, macrocyte, elongated):
        lab[m] = BloodClass.HEALTHY_RBC
    instances, records = find_cells(lab, d)
    cells_in = lambda region: len(set(instances[region]) - {0})  # noqa: E731
    assert cells_in(stack) == 3
    assert cells_in(pair) == 2
    assert cells_in(macrocyte) == 1
    assert cells_in(elongated) == 1
    assert summarize(records, d)["rbc_total"] == 7
