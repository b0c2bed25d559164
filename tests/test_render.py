"""Procedural smear renderer: determinism, exact ground truth, separable cells, scale, argument checks."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage.measure import label, regionprops

from napari_bloodseg.classes import NUM_CLASSES, WBC_CLASSES, BloodClass
from napari_bloodseg.render import Cell, RenderedSmear, render_cell, render_smear, sample_smear

COUNTS = {
    BloodClass.NEUTROPHIL: 2,
    BloodClass.EOSINOPHIL: 1,
    BloodClass.BASOPHIL: 1,
    BloodClass.LYMPHOCYTE: 3,
    BloodClass.MONOCYTE: 1,
    BloodClass.THROMBOCYTE: 5,
    BloodClass.PLATELET_CLUMP: 2,
}


def _class_lut(s: RenderedSmear) -> np.ndarray:
    lut = np.zeros(len(s.cells) + 1, np.uint8)
    for c in s.cells:
        lut[c.id] = c.cls
    return lut


def _same(a: RenderedSmear, b: RenderedSmear) -> bool:
    return (
        a.image.tobytes() == b.image.tobytes()
        and a.mask.tobytes() == b.mask.tobytes()
        and a.instances.tobytes() == b.instances.tobytes()
        and a.cells == b.cells
    )


def test_same_seed_gives_identical_output_and_seeds_differ():
    kw = dict(rbc_diameter=30.0, counts={BloodClass.MONOCYTE: 1, BloodClass.THROMBOCYTE: 2})
    a, b = render_smear((160, 200), seed=5, **kw), render_smear((160, 200), seed=5, **kw)
    assert _same(a, b)
    c = render_smear((160, 200), seed=6, **kw)
    assert not np.array_equal(a.image, c.image)
    assert not np.array_equal(render_smear((96, 96), seed=None).image, render_smear((96, 96), seed=None).image)
    assert np.array_equal(render_cell(BloodClass.NEUTROPHIL, rng=3), render_cell(BloodClass.NEUTROPHIL, rng=3))
    assert _same(sample_smear(), sample_smear())


@pytest.mark.parametrize("touching", [True, False])
def test_outputs_are_well_formed_and_mask_is_the_instance_class_map(touching):
    s = render_smear((300, 260), seed=2, touching=touching, rbc_diameter=30.0)
    assert s.image.shape == (300, 260, 3) and s.image.dtype == np.uint8
    assert s.mask.shape == (300, 260) and s.mask.dtype == np.uint8
    assert s.instances.shape == (300, 260) and s.instances.dtype == np.int32
    assert set(np.unique(s.mask).tolist()) <= set(range(NUM_CLASSES))
    assert all(isinstance(c, Cell) for c in s.cells)
    # ids are exactly 1..n, every listed cell is visible, and the mask is its class map
    assert [c.id for c in s.cells] == list(range(1, len(s.cells) + 1))
    assert set(np.unique(s.instances).tolist()) == set(range(len(s.cells) + 1))
    assert np.array_equal(s.mask, _class_lut(s)[s.instances])
    for c, sl in zip(s.cells, ndimage.find_objects(s.instances), strict=True):
        assert c.bbox == (sl[0].start, sl[1].start, sl[0].stop, sl[1].stop)
        assert 0 <= c.bbox[0] < c.bbox[2] <= 300 and 0 <= c.bbox[1] < c.bbox[3] <= 260


def test_sample_smear_shows_every_cell_class():
    s = sample_smear()
    assert s.image.shape == (512, 512, 3)
    assert set(np.unique(s.mask).tolist()) == set(range(NUM_CLASSES))
    assert {c.cls for c in s.cells} == set(range(1, NUM_CLASSES))
    # each WBC type exactly once, and it is drawn whole (not cut by the border)
    for w in WBC_CLASSES:
        (cell,) = [c for c in s.cells if c.cls == w]
        r0, c0, r1, c1 = cell.bbox
        assert r0 > 0 and c0 > 0 and r1 < 512 and c1 < 512


def test_separate_cells_are_one_component_each_and_counts_are_exact():
    s = render_smear((420, 520), seed=7, counts=COUNTS, touching=False, infected_fraction=0.2, rbc_diameter=28.0)
    comps, n = label(s.mask > 0, connectivity=2, return_num=True)
    assert n == len(s.cells)
    # every component is exactly one instance and vice versa
    pairs = np.unique(np.stack([comps[s.mask > 0], s.instances[s.mask > 0]]), axis=1)
    assert pairs.shape[1] == n and len(set(pairs[0])) == n and len(set(pairs[1])) == n
    # at least two background pixels between different objects
    inst = s.instances
    big = np.where(inst == 0, np.iinfo(np.int32).max, inst)
    fg = inst > 0
    assert np.all(ndimage.maximum_filter(inst, size=5)[fg] == inst[fg])
    assert np.all(ndimage.minimum_filter(big, size=5)[fg] == inst[fg])
    per_class = np.bincount([c.cls for c in s.cells], minlength=NUM_CLASSES)
    for cls, k in COUNTS.items():
        assert per_class[cls] == k
        assert label(s.mask == cls, connectivity=2, return_num=True)[1] == k  # countable from the mask alone
    # RBCs cut by the border keep enough area to be counted
    areas = np.bincount(inst.ravel())
    rbc_area = np.pi * 14.0**2
    assert all(areas[c.id] > 0.18 * rbc_area for c in s.cells if c.cls in (8, 9))
    assert any(c.bbox[0] == 0 or c.bbox[2] == 420 for c in s.cells)
    n_inf, n_ok = per_class[BloodClass.INFECTED_RBC], per_class[BloodClass.HEALTHY_RBC]
    assert n_inf == round(0.2 * (n_inf + n_ok)) and n_ok > 50
    assert label(s.mask == BloodClass.INFECTED_RBC, connectivity=2, return_num=True)[1] == n_inf
    assert label(s.mask == BloodClass.HEALTHY_RBC, connectivity=2, return_num=True)[1] == n_ok


def test_touching_smear_fills_to_density_and_places_requested_counts():
    s = render_smear((400, 400), seed=1, rbc_density=0.4, counts=COUNTS, rbc_diameter=30.0)
    rbc_frac = np.isin(s.mask, (BloodClass.INFECTED_RBC, BloodClass.HEALTHY_RBC)).mean()
    assert 0.34 < rbc_frac < 0.46
    per_class = np.bincount([c.cls for c in s.cells], minlength=NUM_CLASSES)
    for cls, k in COUNTS.items():
        assert per_class[cls] == k
    assert render_smear((200, 200), seed=1, rbc_density=0.0, counts={}).mask.max() == 0


def test_default_counts_scale_with_area():
    small = np.bincount([c.cls for c in render_smear((512, 512), seed=3).cells], minlength=NUM_CLASSES)
    assert all(small[w] == 1 for w in WBC_CLASSES)
    assert small[BloodClass.THROMBOCYTE] == 4 and small[BloodClass.PLATELET_CLUMP] == 1
    big = np.bincount([c.cls for c in render_smear((1024, 1024), seed=3).cells], minlength=NUM_CLASSES)
    assert all(big[w] == 4 for w in WBC_CLASSES)
    # a field too small for a WBC still renders (defaults leave out what cannot fit)
    tiny = render_smear((64, 64), seed=3)
    assert set(np.unique(tiny.mask).tolist()) <= {0, 6, 8, 9}


@pytest.mark.parametrize("d", [16.0, 36.0, 80.0])
def test_rbc_size_follows_rbc_diameter(d):
    side = int(14 * d)
    s = render_smear((side, side), rbc_diameter=d, seed=4, touching=False, counts={}, infected_fraction=0.0)
    props = [
        p for p in regionprops(s.instances) if p.bbox[0] > 0 and p.bbox[1] > 0 and p.bbox[2] < side and p.bbox[3] < side
    ]
    assert len(props) > 20
    assert all(s.mask[tuple(p.coords[0])] == BloodClass.HEALTHY_RBC for p in props)
    eq = np.mean([p.equivalent_diameter_area for p in props])
    assert eq == pytest.approx(d, rel=0.1)


@pytest.mark.parametrize("cls", range(1, NUM_CLASSES))
def test_render_cell_is_one_blob_inside_its_crop(cls):
    for seed in range(3):
        spr = render_cell(cls, rbc_diameter=36.0, rng=seed)
        assert spr.ndim == 3 and spr.shape[2] == 4 and spr.dtype == np.uint8
        a = spr[..., 3]
        assert set(np.unique(a).tolist()) == {0, 255}
        assert label(a > 0, connectivity=2, return_num=True)[1] == 1
        assert not (a[0].any() or a[-1].any() or a[:, 0].any() or a[:, -1].any())
        # tight crop: a few px margin around the blob
        ys, xs = np.nonzero(a)
        assert spr.shape[0] - np.ptp(ys) <= 8 and spr.shape[1] - np.ptp(xs) <= 8


def test_cell_sizes_rank_and_scale():
    def area(cls: int, d: float = 36.0) -> float:
        return float(np.mean([(render_cell(cls, d, rng=i)[..., 3] > 0).sum() for i in range(4)]))

    B = BloodClass
    assert area(B.MONOCYTE) > area(B.EOSINOPHIL) > area(B.BASOPHIL) > area(B.LYMPHOCYTE) > area(B.HEALTHY_RBC)
    assert area(B.HEALTHY_RBC) > 4 * area(B.THROMBOCYTE)
    assert area(B.NEUTROPHIL) / area(B.HEALTHY_RBC) == pytest.approx(1.6**2, rel=0.2)
    assert area(B.MONOCYTE, 72.0) / area(B.MONOCYTE, 36.0) == pytest.approx(4.0, rel=0.1)


def test_wbc_types_differ_in_colour():
    """Mean colour inside the cell separates the WBC types (what a small CNN can use first)."""
    means = {}
    for w in WBC_CLASSES:
        spr = render_cell(w, rng=0).astype(float)
        means[w] = spr[spr[..., 3] > 0, :3].mean(0)
    ws = list(WBC_CLASSES)
    for i, a in enumerate(ws):
        for b in ws[i + 1 :]:
            assert np.abs(means[a] - means[b]).max() > 12, (a.label, b.label)
    # eosinophils are the reddest, basophils the darkest
    assert max(ws, key=lambda w: means[w][0] - means[w][2]) == BloodClass.EOSINOPHIL
    assert min(ws, key=lambda w: means[w].sum()) == BloodClass.BASOPHIL


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(shape=(32, 128)), "at least 64x64"),
        (dict(shape=(128,)), "shape"),
        (dict(rbc_diameter=5.0), "rbc_diameter"),
        (dict(rbc_diameter=200.0), "rbc_diameter"),
        (dict(rbc_density=-0.1), "rbc_density"),
        (dict(rbc_density=1.5), "rbc_density"),
        (dict(infected_fraction=1.2), "infected_fraction"),
        (dict(counts={BloodClass.HEALTHY_RBC: 3}), "rbc_density"),
        (dict(counts={BloodClass.NEUTROPHIL: -1}), "non-negative"),
        (dict(counts={"no such cell": 1}), "unknown class"),
        (dict(shape=(128, 128), counts={BloodClass.MONOCYTE: 30}), "cannot fit"),
        (dict(shape=(64, 64), counts={BloodClass.MONOCYTE: 1}), "does not fit"),
        (dict(seed=-1), "seed"),
    ],
)
def test_invalid_arguments_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        render_smear(**kwargs)


def test_render_cell_rejects_bad_arguments():
    for bad in (0, 10, "platelet"):
        with pytest.raises(ValueError):
            render_cell(bad)
    with pytest.raises(ValueError, match="rbc_diameter"):
        render_cell(BloodClass.LYMPHOCYTE, rbc_diameter=500)
    with pytest.raises(ValueError, match="rng"):
        render_cell(BloodClass.LYMPHOCYTE, rng="seed")  # type: ignore[arg-type]


def test_counts_accept_class_names():
    s = render_smear((256, 256), seed=0, counts={"lymphocyte": 2, "platelet clump": 1}, touching=False)
    per_class = np.bincount([c.cls for c in s.cells], minlength=NUM_CLASSES)
    assert per_class[BloodClass.LYMPHOCYTE] == 2 and per_class[BloodClass.PLATELET_CLUMP] == 1
    assert per_class[BloodClass.MONOCYTE] == 0
