import collections
import csv
import json

import numpy as np
import pytest

from napari_bloodseg.cells import GROUPS, MIN_AREA, find_cells, summarize
from napari_bloodseg.classes import BloodClass
from napari_bloodseg.render import render_smear


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
