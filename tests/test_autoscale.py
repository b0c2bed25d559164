"""Automatic scale from the network: rendered fields at known RBC sizes, real fields of every source."""

from __future__ import annotations

import numpy as np
import pytest

from napari_bloodseg.autoscale import _measure, estimate_scale
from napari_bloodseg.classes import BloodClass
from napari_bloodseg.infer import Segmenter
from napari_bloodseg.render import render_smear


@pytest.fixture(scope="module")
def shipped():
    return Segmenter.from_file(None, device="cpu")


def test_measure_reads_the_inscribed_diameter_of_touching_and_cut_cells():
    from skimage.draw import disk

    lab = np.zeros((200, 200), np.uint8)
    for c in [(50, 50), (50, 84), (150, 150), (0, 120)]:  # two touching, one alone, one cut by the border
        lab[disk(c, 18, shape=lab.shape)] = BloodClass.HEALTHY_RBC
    m, n = _measure(lab, lab.shape, 36.0)
    assert n == 3 and m == pytest.approx(36, abs=2.5)  # the touching pair is one blob of one cell's width
    assert _measure(np.zeros((50, 50), np.uint8), (50, 50), 36.0) == (None, 0)


@pytest.mark.parametrize("d", [15.0, 24.0, 36.0, 60.0, 100.0])
def test_network_scale_on_rendered_fields_of_known_rbc_size(shipped, d):
    side = int(min(1200, max(320, 11 * d)))
    img = render_smear((side, side), rbc_diameter=d, seed=int(d)).image
    res = estimate_scale(shipped, img)
    assert res is not None and res.diameter == pytest.approx(d, rel=0.15)
    seg = shipped.segment(img)  # the segmenter uses it when no diameter is given
    assert seg.rbc_scale_method == "network" and seg.rbc_diameter == pytest.approx(res.diameter)


def test_network_scale_on_real_fields(shared_data, shipped):
    from napari_bloodseg.realmetrics import heldout_fields, select_fields

    for src in ("chula", "bccd"):
        fields = select_fields(heldout_fields(src, shared_data), 3)
        ok = sum(abs(estimate_scale(shipped, f.image()).diameter / f.rbc_diameter - 1) <= 0.15 for f in fields)
        assert ok >= 2, src
