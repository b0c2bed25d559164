"""Training for unseen labs: augmentation, partial labels and labels derived from boxes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from napari_bloodseg.augment import AugmentLevel, appearance, augment_level, augment_pair, cheap_camera, low_res_camera, zoom
from napari_bloodseg.classes import IGNORE_INDEX, NOT_WBC, SOME_WBC, WBC_CLASSES, BloodClass
from napari_bloodseg.fieldlabels import derive_labels
from napari_bloodseg.losses import PartialCrossEntropy
from napari_bloodseg.render import render_smear

WBC_IDS = [int(c) for c in WBC_CLASSES]


# ----------------------------------------------------------------------------- loss
def test_partial_ce_equals_weighted_ce_without_partial_labels():
    torch.manual_seed(0)
    logits = torch.randn(2, 10, 12, 12)
    target = torch.randint(0, 10, (2, 12, 12))
    target[0, :2] = IGNORE_INDEX
    w = torch.rand(10) + 0.2
    ours = PartialCrossEntropy(w)(logits, target)
    ref = nn.CrossEntropyLoss(weight=w, ignore_index=IGNORE_INDEX)(logits, target)
    assert torch.allclose(ours, ref, atol=1e-5)


def test_partial_label_costs_the_summed_probability_of_its_classes():
    logits = torch.randn(1, 10, 1, 2)
    target = torch.tensor([[[SOME_WBC, NOT_WBC]]])
    p = torch.softmax(logits, 1)[0, :, 0]
    w = torch.linspace(0.5, 2.0, 10)
    not_wbc = [c for c in range(10) if c not in WBC_IDS]
    want_num = -(torch.log(p[WBC_IDS, 0].sum()) * w[WBC_IDS].min() + torch.log(p[not_wbc, 1].sum()) * w[not_wbc].min())
    want = want_num / (w[WBC_IDS].min() + w[not_wbc].min())
    assert torch.allclose(PartialCrossEntropy(w)(logits, target), want, atol=1e-5)


def test_partial_label_training_moves_mass_into_the_allowed_set():
    logits = torch.zeros(1, 10, 4, 4, requires_grad=True)
    target = torch.full((1, 4, 4), SOME_WBC)
    opt = torch.optim.SGD([logits], lr=30.0)
    for _ in range(60):
        opt.zero_grad()
        PartialCrossEntropy()(logits, target).backward()
        opt.step()
    p = torch.softmax(logits, 1)[0, :, 0, 0]
    assert p[WBC_IDS].sum() > 0.95
    assert p[WBC_IDS].std() < 1e-4  # nothing says which type: it stays undecided


# ----------------------------------------------------------------------------- augmentation
def test_augment_level_names_allowed_values():
    assert augment_level("WIDE") is AugmentLevel.WIDE
    with pytest.raises(ValueError, match="none, mild, wide"):
        augment_level("strong")


def test_wide_augmentation_keeps_labels_and_changes_the_look():
    s = render_smear((224, 224), seed=1)
    rng = np.random.default_rng(0)
    changed = 0
    for _ in range(12):
        img, mask = augment_pair(s.image, s.mask, rng, "wide")
        assert img.shape == s.image.shape and img.dtype == np.uint8 and mask.shape == s.mask.shape
        assert set(np.unique(mask)) <= set(np.unique(s.mask)) | {IGNORE_INDEX}
        changed += np.abs(img.astype(int).mean((0, 1)) - s.image.mean((0, 1))).max() > 3
    assert changed >= 6


def test_zoom_out_pads_with_ignore_and_zoom_in_keeps_classes():
    s = render_smear((224, 224), seed=2)

    class Fixed:
        def __init__(self, u):
            self.u = u

        def uniform(self, lo, hi, *a):
            return lo + self.u * (hi - lo)

        def integers(self, lo, hi=None, *a):
            return 0

    img, mask = zoom(s.image, s.mask, Fixed(0.0), lo=0.5, hi=0.5)
    assert img.shape == s.image.shape and (mask == IGNORE_INDEX).mean() > 0.6
    img, mask = zoom(s.image, s.mask, Fixed(0.0), lo=2.0, hi=2.0)
    assert (mask == IGNORE_INDEX).sum() == 0 and (mask[:112, :112] == s.mask[:56, :56].repeat(2, 0).repeat(2, 1)).mean() > 0.9


def test_appearance_tints_glass_only_where_the_mask_says_glass():
    img = np.full((64, 64, 3), 230, np.uint8)
    mask = np.zeros((64, 64), np.uint8)
    mask[:, 32:] = BloodClass.HEALTHY_RBC
    diffs = []
    for seed in range(30):
        out = appearance(img, mask, np.random.default_rng(seed))
        left, right = out[:, :20].astype(float).mean((0, 1)), out[:, 44:].astype(float).mean((0, 1))
        diffs.append(np.abs(left - right).max())
    assert max(diffs) > 5  # the same grey differs between glass and cell once the glass is tinted


def test_cheap_camera_darkens_corners_warms_and_compresses():
    img = np.full((120, 160, 3), 200, np.uint8)
    a = cheap_camera(img, np.random.default_rng(0))
    assert a.shape == img.shape and a.dtype == np.uint8
    assert np.array_equal(a, cheap_camera(img, np.random.default_rng(0)))  # the same field looks the same for every model
    assert not np.array_equal(a, cheap_camera(img, np.random.default_rng(1)))  # only the noise is drawn
    f = a.astype(float)
    centre, corner = f[50:70, 70:90].mean(), f[:8, :8].mean()
    assert corner < 0.7 * centre  # light falls off toward the corners
    assert f[50:70, 70:90, 0].mean() > f[50:70, 70:90, 2].mean() + 20  # a warm cast on grey glass
    assert 0.5 < f[50:70, 70:90, 1].std() < 8  # sensor noise, most of it smoothed away by the JPEG
    with pytest.raises(ValueError, match="uint8"):
        cheap_camera(img.astype(np.float32), np.random.default_rng(0))


def test_low_res_camera_loses_detail_at_the_training_scale():
    img = render_smear((128, 128), seed=2, infected_fraction=0.5).image

    def edges(a):
        return np.abs(np.diff(a.astype(float), axis=1)).mean()

    coarse = low_res_camera(img, np.random.default_rng(0), 0.35)
    fine = low_res_camera(img, np.random.default_rng(0), 0.9)
    assert coarse.shape == img.shape and coarse.dtype == np.uint8
    assert np.array_equal(coarse, low_res_camera(img, np.random.default_rng(0), 0.35))
    assert edges(coarse) < 0.8 * edges(fine)  # 13 px RBCs enlarged 2.8x: soft edges, big grains
    assert np.abs(coarse.astype(float) - img).mean() < 25  # still the same field


# ----------------------------------------------------------------------------- derived labels
def test_labels_derived_when_the_wbc_box_covers_the_whole_field():
    """A tight WBC-centred crop (Zheng DS1): the loose box round the WBC covers every pixel, so the
    cell/glass threshold comes from the whole field instead of failing."""
    s = render_smear((96, 96), seed=5, counts={"neutrophil": 1}, infected_fraction=0.0)
    lab = derive_labels(s.image, [(0, 0, 96, 96)], [None], 36.0, threshold_outside_boxes=True)
    assert lab.shape == (96, 96)
    called = lab == SOME_WBC
    assert called.any() and (s.mask[called] == BloodClass.NEUTROPHIL).mean() > 0.8


def test_labels_derived_from_boxes_agree_with_the_truth():
    s = render_smear((448, 448), seed=3, counts={"neutrophil": 1, "lymphocyte": 1, "thrombocyte": 3},
                     infected_fraction=0.0)
    boxes, types = [], []
    for cls in (BloodClass.NEUTROPHIL, BloodClass.LYMPHOCYTE):
        rr, cc = np.nonzero(s.mask == cls)
        boxes.append((rr.min(), cc.min(), rr.max() + 1, cc.max() + 1))
        types.append(int(cls) if cls == BloodClass.NEUTROPHIL else None)
    lab = derive_labels(s.image, boxes, types, 36.0)
    labelled = lab != IGNORE_INDEX
    assert labelled.mean() > 0.4
    # glass and RBC labels are right where given
    assert (s.mask[lab == 0] == 0).mean() > 0.97
    assert np.isin(s.mask[lab == BloodClass.HEALTHY_RBC], [BloodClass.HEALTHY_RBC, BloodClass.INFECTED_RBC]).mean() > 0.95
    # WBC labels only inside their boxes: the typed one gets its type, the other 'some WBC'
    assert (s.mask[lab == BloodClass.NEUTROPHIL] == BloodClass.NEUTROPHIL).mean() > 0.9
    assert (s.mask[lab == SOME_WBC] == BloodClass.LYMPHOCYTE).mean() > 0.9
    assert (lab == SOME_WBC).sum() > 0.3 * (s.mask == BloodClass.LYMPHOCYTE).sum()
    # nothing outside the boxes is called a WBC, and no WBC pixel is called 'not a WBC' or RBC
    called_wbc = np.isin(lab, WBC_IDS + [SOME_WBC])
    assert (called_wbc & (s.mask == 0)).sum() < 0.03 * called_wbc.sum()  # a rim at most
    assert not np.isin(s.mask[np.isin(lab, [NOT_WBC, BloodClass.HEALTHY_RBC])], WBC_IDS).any()


def test_glass_enclosed_by_pale_rims_is_background_and_rim_centres_are_cells():
    """Pale RBCs show only their dark rims: the centre of a rim is the cell, but the glass that a
    ring of touching cells encloses is glass (filling every hole taught the model to call it RBC)."""
    from skimage.draw import disk

    d, size = 36.0, 400
    img = np.full((size, size, 3), (225, 215, 225), np.uint8)  # pinkish glass
    truth = np.zeros((size, size), np.uint8)
    centre = np.array([200, 200])
    ring = [centre + np.round(56 * np.array([np.sin(a), np.cos(a)])).astype(int) for a in np.linspace(0, 2 * np.pi, 11)[:-1]]
    for c in ring:  # ten touching cells round a pocket of glass over two RBCs wide
        truth[disk(tuple(c), d / 2, shape=truth.shape)] = 1
        rim = np.zeros_like(truth, bool)
        rim[disk(tuple(c), d / 2, shape=truth.shape)] = True
        rim[disk(tuple(c), d / 2 - 6, shape=truth.shape)] = False
        img[rim] = (150, 120, 150)  # the rim
    lab = derive_labels(img, [], [], d)
    pocket = np.zeros_like(truth, bool)
    pocket[disk((200, 200), 20, shape=truth.shape)] = True
    assert (lab[pocket] == BloodClass.BACKGROUND).mean() > 0.8
    centres = np.zeros_like(pocket)
    for c in ring:
        centres[disk(tuple(c), 8, shape=truth.shape)] = True
    assert (lab[centres] == BloodClass.HEALTHY_RBC).mean() > 0.8
    assert (lab[truth == 0] == BloodClass.HEALTHY_RBC).mean() < 0.02


def test_pale_open_plasma_is_glass_only_when_asked():
    """On pale fields (wbc_rpi's Pi camera) the plasma is hardly clearer than the cells: hardly any
    pixel passes the 'clearly clear' glass threshold, yet a stretch open over several RBC areas is
    glass when ``open_plasma_is_glass`` asks for it, and the cells stay cells."""
    from scipy import ndimage as ndi
    from skimage.draw import disk

    d, size = 36.0, 300
    rng = np.random.default_rng(0)
    # grainy pink plasma, its grain as strong as the cells' faint rims
    img = np.full((size, size, 3), (205, 170, 195), np.float32) + rng.normal(0, 12, (size, size, 1))
    truth = np.zeros((size, size), np.uint8)
    for c in rng.uniform(30, 270, size=(8, 2)).astype(int):
        truth[disk(tuple(c), d / 2, shape=truth.shape)] = 1
        rim = np.zeros_like(truth, bool)
        rim[disk(tuple(c), d / 2, shape=truth.shape)] = True
        rim[disk(tuple(c), d / 2 - 5, shape=truth.shape)] = False
        img[rim] = (170, 135, 165)
    img = np.clip(img, 0, 255).astype(np.uint8)
    far = ndi.distance_transform_edt(truth == 0) > 8
    plain = derive_labels(img, [], [], d)
    wide = derive_labels(img, [], [], d, open_plasma_is_glass=True)
    assert (plain[far] == BloodClass.BACKGROUND).mean() < 0.5
    assert (wide[far] == BloodClass.BACKGROUND).mean() > 0.8
    assert (wide[truth == 1] == BloodClass.BACKGROUND).mean() < 0.05
    # only unlabelled or glass pixels change: the rule adds glass and takes nothing else
    changed = plain != wide
    assert (wide[changed] == BloodClass.BACKGROUND).all()

# ----------------------------------------------------------------------------- real sources
def test_real_field_splits_never_mix(shared_data):
    from napari_bloodseg.bank.store import assign_split
    from napari_bloodseg.realfields import SOURCES, read_fields

    for src in SOURCES:
        fields = read_fields(src, shared_data)
        assert fields, src
        by_group: dict[str, set] = {}
        for f in fields:
            by_group.setdefault(f.group, set()).add(f.split)
            assert f.rbc_diameter and f.rbc_diameter > 5
        assert all(len(v) == 1 for v in by_group.values()), src
    # BCCD and Chula fields share the sample bank's groups, so bank crops of a held-out field are held out too
    f = read_fields("bccd", shared_data)[0]
    assert f.split == assign_split(f.group) and f.group.startswith("bccd:")
    rpi = read_fields("wbc_rpi", shared_data)
    types = {t for f in rpi if f.split == "test" for t in f.wbc_types if t is not None}
    assert types == set(WBC_IDS)
    assert {f.split for f in read_fields("zheng2", shared_data)} == {"test"}
