"""Automatic scale from the network: rendered fields at known RBC sizes, real fields of every source."""

from __future__ import annotations

import numpy as np
import pytest

from napari_bloodseg.autoscale import estimate_scale, measure_rbc_blobs
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
    m, n = measure_rbc_blobs(lab, 36.0)
    assert n == 3 and m == pytest.approx(36, abs=2.5)  # the touching pair is one blob of one cell's width
    assert measure_rbc_blobs(np.zeros((50, 50), np.uint8), 36.0) == (None, 0)


@pytest.mark.parametrize("d", [15.0, 24.0, 36.0, 60.0, 100.0])
def test_network_scale_on_rendered_fields_of_known_rbc_size(shipped, d):
    side = int(min(1200, max(320, 11 * d)))
    img = render_smear((side, side), rbc_diameter=d, seed=int(d)).image
    res = estimate_scale(shipped, img)
    assert res is not None and res.diameter == pytest.approx(d, rel=0.15)
    seg = shipped.segment(img)  # the segmenter uses it when no diameter is given
    assert seg.rbc_scale_method == "network" and seg.rbc_diameter == pytest.approx(res.diameter)


def test_network_scale_does_not_depend_on_the_segmentation_tile(shipped, monkeypatch):
    """The size model was fitted on 224 px windows: the scale windows stay 224 whatever the tile."""
    img = render_smear((700, 700), rbc_diameter=50.0, seed=3).image
    small = Segmenter.from_file(None, device="cpu", tile=224)
    sizes = []
    real = shipped.predict_tiles
    monkeypatch.setattr(shipped, "predict_tiles", lambda t: sizes.append(t.shape[1:3]) or real(t))
    a, b = estimate_scale(shipped, img), estimate_scale(small, img)
    assert shipped.tile > 224 and set(sizes) == {(224, 224)}
    assert a.diameter == b.diameter and a.cells == b.cells


def test_network_scale_on_real_fields(shared_data, shipped):
    from napari_bloodseg.realmetrics import heldout_fields, select_fields

    for src in ("chula", "bccd"):
        fields = select_fields(heldout_fields(src, shared_data), 3)
        ok = sum(abs(estimate_scale(shipped, f.image()).diameter / f.rbc_diameter - 1) <= 0.15 for f in fields)
        assert ok >= 2, src


def test_scale_head_learns_a_size_signal_and_travels_in_the_checkpoint(tmp_path):
    from napari_bloodseg.checkpoint import CheckpointError, ModelInfo, load_checkpoint, save_checkpoint
    from napari_bloodseg.model import UNet
    from napari_bloodseg.scalehead import PREFIX, fit_head

    rng = np.random.default_rng(0)
    u = rng.uniform(-2, 2, 600)
    feats = rng.normal(size=(600, 12))
    feats[:, :4] += 2 * u[:, None]  # a few features carry the size, the rest is noise
    head = fit_head(feats[:500], u[:500], hidden=16, epochs=100)
    err = head.predict(feats[500:]) - u[500:]
    assert np.sqrt(np.mean(err**2)) < 0.45  # no signal: ~1.15
    model = UNet(width=4)
    save_checkpoint(tmp_path / "m.safetensors", model, ModelInfo(width=4, scale_head=head))
    loaded, info = load_checkpoint(tmp_path / "m.safetensors")
    assert np.allclose(info.scale_head.predict(feats[500:]), head.predict(feats[500:]), atol=1e-5)
    assert not any(k.startswith(PREFIX) for k in loaded.state_dict())
    # a head whose tensors do not fit together is refused with the file's name
    from safetensors.torch import load_file, save_file

    state = load_file(str(tmp_path / "m.safetensors"))
    state[PREFIX + "w2"] = state[PREFIX + "w2"][:3]
    from napari_bloodseg.checkpoint import META_KEY, read_metadata
    import json

    save_file(state, str(tmp_path / "bad.safetensors"), metadata={META_KEY: json.dumps(read_metadata(tmp_path / "m.safetensors"))})
    with pytest.raises(CheckpointError, match="bad.safetensors: scale head"):
        load_checkpoint(tmp_path / "bad.safetensors")


def test_a_bottleneck_head_runs_only_the_way_down_and_is_marked_in_the_checkpoint(tmp_path, monkeypatch):
    import json

    from safetensors.torch import load_file, save_file

    from napari_bloodseg.checkpoint import META_KEY, ModelInfo, load_checkpoint, read_metadata, save_checkpoint
    from napari_bloodseg.classes import NUM_CLASSES
    from napari_bloodseg.model import UNet
    from napari_bloodseg.scalehead import PREFIX, fit_head, window_features

    rng = np.random.default_rng(2)
    head = fit_head(rng.normal(size=(64, 128)), rng.uniform(-1, 1, 64), hidden=4, epochs=2)
    assert not head.reads_classes
    save_checkpoint(tmp_path / "m.safetensors", UNet(width=4), ModelInfo(width=4, scale_head=head))
    seg = Segmenter.from_file(tmp_path / "m.safetensors", device="cpu", backend="torch", precision="fp32")
    assert not seg.info.scale_head.reads_classes
    tiles = rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    full = window_features(seg, tiles, classes=True)
    assert full.shape == (2, 2 * 4 * 16 + NUM_CLASSES)
    # without the class probabilities the decoder never runs, and the bottleneck features are the same
    monkeypatch.setattr(UNet, "forward_with_bottleneck", lambda *a: pytest.fail("the decoder ran"))
    down = window_features(seg, tiles, classes=False)
    assert down.shape == (2, 2 * 4 * 16) and np.allclose(down, full[:, :-NUM_CLASSES], atol=1e-5)
    monkeypatch.undo()
    pytest.importorskip("openvino")
    ov = Segmenter.from_file(tmp_path / "m.safetensors", device="cpu", backend="openvino", precision="fp32")
    # both kinds compiled for one set of weights: each keeps its own compiled network
    assert np.allclose(window_features(ov, tiles, classes=False), down, atol=1e-3)
    assert np.allclose(window_features(ov, tiles, classes=True), full, atol=1e-3)
    # a checkpoint written before heads said what they read: its head read the class probabilities
    state = load_file(str(tmp_path / "m.safetensors"))
    del state[PREFIX + "reads_classes"]
    meta = {META_KEY: json.dumps(read_metadata(tmp_path / "m.safetensors"))}
    save_file(state, str(tmp_path / "old.safetensors"), metadata=meta)
    assert load_checkpoint(tmp_path / "old.safetensors")[1].scale_head.reads_classes


def test_the_shipped_model_carries_a_size_model(shipped):
    assert shipped.info.scale_head is not None


def test_ensemble_of_heads_fitted_on_other_feature_sets_predicts_their_mean():
    from napari_bloodseg.scalehead import ensemble, fit_head

    rng = np.random.default_rng(1)
    u = rng.uniform(-2, 2, 400)
    feats = rng.normal(size=(400, 6)) + u[:, None]
    # two heads standardised on different data (as when one was fitted with extra WBC-centred crops)
    a = fit_head(feats[:200], u[:200], hidden=8, epochs=20, seed=0)
    b = fit_head(feats[100:] * 1.5 + 0.3, u[100:], hidden=8, epochs=20, seed=1)
    both = ensemble([a, b])
    x = feats[300:]
    want = np.clip((a.predict(x) + b.predict(x)) / 2, -a.u_range, a.u_range)
    unclipped = (np.abs(a.predict(x)) < a.u_range - 1e-3) & (np.abs(b.predict(x)) < b.u_range - 1e-3)
    assert np.allclose(both.predict(x)[unclipped], want[unclipped], atol=1e-4)
    with pytest.raises(ValueError, match="same features"):
        ensemble([a, fit_head(feats[:, :4], u, hidden=4, epochs=1)])


def test_shared_scale_is_the_median_of_the_estimates_and_flags_disagreement():
    from napari_bloodseg.autoscale import shared_scale

    s = shared_scale([30.0, 36.0, 33.0])
    assert s.diameter == pytest.approx(33.0) and s.n == 3 and not s.doubtful
    assert s.method_text() == "median of 3 images' estimates"
    lo, hi = s.quartiles
    assert 30.0 < lo < 33.0 < hi < 36.0 and s.spread == pytest.approx(hi / lo)
    # one wild estimate does not move a median of five
    assert shared_scale([34, 35, 36, 37, 200]).diameter == pytest.approx(36.0)
    assert shared_scale([18, 20, 36, 70, 75]).doubtful  # not one magnification
    assert not shared_scale([20.0, 70.0]).doubtful  # too few to tell
    for bad in ([], [30.0, 0.0], [float("nan")]):
        with pytest.raises(ValueError):
            shared_scale(bad)


def test_shared_scale_holds_on_wbc_centred_crops_where_single_estimates_scatter(shared_data, shipped):
    """Zheng DS1: 120 px crops round one WBC; the median of ten crops' estimates is near the truth."""
    from napari_bloodseg.autoscale import shared_scale
    from napari_bloodseg.realmetrics import heldout_fields, select_fields

    fields = select_fields(heldout_fields("zheng1", shared_data), 10)
    est = [shipped.estimate_rbc_diameter(f.image())[0] for f in fields]
    truth = fields[0].rbc_diameter
    assert max(abs(d / truth - 1) for d in est) > 0.15  # single crops: some far off
    assert shared_scale(est).diameter == pytest.approx(truth, rel=0.15)
