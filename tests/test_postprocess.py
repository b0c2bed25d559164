"""Tightening the network's WBC regions: spurs and the fat rim go, the cell stays."""

import numpy as np
import pytest

from napari_bloodseg.classes import BloodClass
from napari_bloodseg.postprocess import tighten_wbcs

from drawing import disk



def test_spur_along_an_rbc_takes_the_rbc_class_and_the_wbc_body_stays():
    d = 36.0
    labels = np.zeros((160, 240), np.uint8)
    rbc = disk(labels.shape, (80, 160), d / 2)
    labels[rbc] = BloodClass.HEALTHY_RBC
    spur = disk(labels.shape, (80, 160), d / 2) & ~disk(labels.shape, (80, 160), d / 2 - 3)  # RBC's rim
    labels[spur] = BloodClass.NEUTROPHIL
    wbc = disk(labels.shape, (80, 100), 0.75 * d)
    labels[wbc] = BloodClass.NEUTROPHIL
    before = labels.copy()
    out = tighten_wbcs(labels, d)
    assert np.array_equal(labels, before)  # the input is not modified
    assert not (out[spur & ~wbc] == BloodClass.NEUTROPHIL).any()
    assert set(np.unique(out[spur & ~wbc])) <= {0, BloodClass.HEALTHY_RBC}  # its neighbours' classes
    assert (out[rbc] == BloodClass.HEALTHY_RBC).mean() > 0.8  # the inner half of its rim back (nearest class)
    kept = (out == BloodClass.NEUTROPHIL) & wbc
    assert 0.8 < kept.sum() / wbc.sum() < 1.0  # a thin rim shaved, the body kept
    assert (out[rbc & ~spur] == BloodClass.HEALTHY_RBC).all()


def test_maps_without_wbcs_are_returned_as_they_are():
    labels = np.full((50, 50), BloodClass.HEALTHY_RBC, np.uint8)
    assert tighten_wbcs(labels, 36.0) is labels


def test_wbc_filling_the_whole_map_is_kept_and_a_speck_becomes_glass():
    d = 36.0
    full = np.full((120, 120), BloodClass.LYMPHOCYTE, np.uint8)
    assert (tighten_wbcs(full, d) == BloodClass.LYMPHOCYTE).all()  # no edge inside the map: nothing shaved
    speck = np.zeros((120, 120), np.uint8)
    speck[disk(speck.shape, (60, 60), 5)] = BloodClass.BASOPHIL  # thinner than the opening
    assert (tighten_wbcs(speck, d) == 0).all()


def test_negative_sizes_are_refused():
    with pytest.raises(ValueError, match="opening and erosion"):
        tighten_wbcs(np.zeros((8, 8), np.uint8), 36.0, opening=-1)


@pytest.mark.parametrize("radius", [3.0, 6.5, 9.0, 12.25])
def test_the_smallest_part_an_opening_keeps_is_kept_and_a_pixel_less_goes(radius):
    from napari_bloodseg.postprocess import shrink_mask

    yy, xx = np.mgrid[:60, :60]
    d2 = (yy - 30) ** 2 + (xx - 30) ** 2
    exact = d2 <= radius**2  # the lattice disc: the opening's own structuring element, fewer than pi r^2 pixels at some r
    assert np.array_equal(shrink_mask(exact, radius), exact)
    nicked = exact.copy()
    nicked[30, 30 + int(radius)] = False  # one rim pixel less: no disc fits any more
    assert not shrink_mask(nicked, radius).any()
    specks = np.zeros((60, 60), bool)
    specks[5:8, 5:8] = specks[50:52, 40:43] = True
    assert not shrink_mask(exact | specks, radius)[specks].any()
