"""Fine-tuning on corrections: the core (hold-out, scoring, refusals, ignored pixels), the
`bloodseg train --minutes` CLI, and the fine-tuning benchmark's bookkeeping on a fixture."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_bloodseg.checkpoint import DEFAULT_MODEL, load_checkpoint
from napari_bloodseg.classes import IGNORE_INDEX, NOT_WBC, SOME_WBC, BloodClass
from napari_bloodseg.cli import main
from napari_bloodseg.finetune import (
    check_out_dir,
    find_pairs,
    labelled_counts,
    split_holdout,
    summarize_counts,
)
from napari_bloodseg.io import write_png
from napari_bloodseg.render import render_smear

REPO = Path(__file__).resolve().parents[1]


def write_pairs(root: Path, n: int, shape=(96, 128), unlabelled: bool = False, seed: int = 0) -> Path:
    """n rendered fields as images/ + masks/ (all 255 when ``unlabelled``)."""
    for i in range(n):
        s = render_smear(shape, counts={3: 1}, seed=seed + i)
        mask = np.full_like(s.mask, IGNORE_INDEX) if unlabelled else s.mask
        write_png(root / "images" / f"f{i}.png", s.image)
        write_png(root / "masks" / f"f{i}.png", mask)
    return root


def conv_weights(path: Path) -> dict[str, torch.Tensor]:
    net, _ = load_checkpoint(path)
    return {k: v for k, v in net.state_dict().items() if k.endswith("weight") and v.ndim == 4}


def test_labelled_counts_ignore_255_and_score_partial_codes():
    mask = np.array([[0, 9, IGNORE_INDEX, SOME_WBC], [3, 3, NOT_WBC, NOT_WBC]], np.uint8)
    pred = np.array([[0, 8, 3, 4], [3, 1, 9, 5]], np.uint8)
    correct, labelled, inter, p_wbc, t_wbc = labelled_counts(pred, mask)
    # correct: 0, SOME_WBC→4 (a WBC), 3, NOT_WBC→9; the 255 pixel is not counted anywhere
    assert (correct, labelled) == (4, 7)
    # true WBC: SOME_WBC and the two 3s; predicted WBC on labelled pixels: 4, 3, 1, 5 (the 3 on 255 ignored)
    assert (inter, p_wbc, t_wbc) == (3, 4, 3)
    s = summarize_counts(np.array([correct, labelled, inter, p_wbc, t_wbc]), 1)
    assert s["pixel_accuracy"] == round(4 / 7, 4) and s["wbc_dice"] == round(6 / 7, 4)
    assert summarize_counts(np.zeros(5), 0)["pixel_accuracy"] is None


def test_holdout_rules(tmp_path):
    set_dir = tmp_path / "set"
    write_pairs(set_dir / "train", 3)
    train, val = find_pairs(set_dir)
    assert [p[0].stem for p in train] == ["f0", "f1", "f2"] and val == []
    kept, held = split_holdout(train, val, 1)
    assert [p[0].stem for p in held] == ["f2"] and len(kept) == 2
    assert split_holdout(train, val, 0) == (train, [])
    with pytest.raises(ValueError, match="need more than 3"):
        split_holdout(train, val, 3)
    write_pairs(set_dir / "val", 1, seed=7)  # the user's own val/ pairs are the held-out ones
    kept, held = split_holdout(*find_pairs(set_dir), 1)
    assert len(kept) == 3 and [p[0].parent.parent.name for p in held] == ["val"]
    with pytest.raises(ValueError, match="no corrected image/mask pairs"):
        find_pairs(tmp_path)


def test_out_dir_refusals(tmp_path):
    with pytest.raises(ValueError, match="shipped model is never replaced"):
        check_out_dir(DEFAULT_MODEL.parent, overwrite=True)
    with pytest.raises(ValueError, match="is a file"):
        check_out_dir(tmp_path / "model.safetensors")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "fine_tuned.safetensors").write_bytes(b"x")
    with pytest.raises(ValueError, match="--overwrite"):
        check_out_dir(tmp_path / "run")
    check_out_dir(tmp_path / "run", overwrite=True)
    assert not (tmp_path / "run" / "fine_tuned.safetensors").exists()


def test_cli_minutes_mix_synth_and_refusals(tmp_path, tiny_checkpoint, capsys):
    pairs = write_pairs(tmp_path / "pairs", 3)
    synth = write_pairs(tmp_path / "synth" / "train", 2, shape=(224, 224), seed=20).parent
    out = tmp_path / "run"
    argv = ["train", "--init", str(tiny_checkpoint), "--data", str(pairs), "--out", str(out), "--minutes", "0.03",
            "--mix-synth", str(synth), "--mix-fraction", "0.25", "--device", "cpu"]
    assert main(argv) == 0
    report = json.loads((out / "fine_tune.json").read_text())
    assert report["synth"] == str(synth) and report["mix_fraction"] == 0.25
    assert report["steps"] >= 1 and report["seconds_training"] < 60
    assert report["held_out"] == ["f2"] and report["train_fields"] == 2
    assert report["before"]["fields"] == report["after"]["fields"] == 1
    _, info = load_checkpoint(out / "fine_tuned.safetensors")
    assert info.training["fine_tuned_from"] == str(tiny_checkpoint)
    before, after = conv_weights(tiny_checkpoint), conv_weights(out / "fine_tuned.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert "pixel accuracy" in capsys.readouterr().out
    # an existing checkpoint is kept unless --overwrite
    stamp = (out / "fine_tuned.safetensors").stat().st_mtime_ns
    assert main(argv) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "fine_tuned.safetensors").stat().st_mtime_ns == stamp
    assert main(argv + ["--overwrite"]) == 0
    # the package's models/ folder never, even with --overwrite
    models = ["train", "--data", str(pairs), "--out", str(DEFAULT_MODEL.parent), "--minutes", "0.03", "--overwrite"]
    assert main(models) == 2
    assert "never replaced" in capsys.readouterr().err
    # fine-tuning options without --minutes, and a bad fraction: one clear line
    assert main(["train", "--data", str(pairs), "--out", str(tmp_path / "r2"), "--mix-fraction", "0.3"]) == 2
    assert "--mix-fraction" in capsys.readouterr().err
    assert main(argv[:-4] + ["--mix-fraction", "1.5", "--out", str(tmp_path / "r3")]) == 2
    assert "[0, 1)" in capsys.readouterr().err


def test_unlabelled_pixels_teach_nothing(tmp_path, tiny_checkpoint):
    """Masks all 255 and no synthetic mix: zero loss, and batch norms keep their statistics while
    fine-tuning, so the model stays exactly as it was; labelled masks do change it."""
    from napari_bloodseg.finetune import fine_tune

    blank = write_pairs(tmp_path / "blank", 2, unlabelled=True)
    rep = fine_tune(tiny_checkpoint, blank, tmp_path / "r0", 0.02, mix_fraction=0.0, holdout=0, device="cpu")
    s0, s1 = (load_checkpoint(p)[0].state_dict() for p in (tiny_checkpoint, rep["checkpoint"]))
    assert rep["steps"] >= 1 and all(torch.equal(s0[k], s1[k]) for k in s0)
    w0 = conv_weights(tiny_checkpoint)
    labelled = write_pairs(tmp_path / "lab", 2)
    rep = fine_tune(tiny_checkpoint, labelled, tmp_path / "r1", 0.02, mix_fraction=0.0, holdout=0, device="cpu")
    w2 = conv_weights(Path(rep["checkpoint"]))
    assert any(not torch.equal(w0[k], w2[k]) for k in w0)


class _Index(torch.utils.data.Dataset):
    """Item i is (i, i): shows which synthesized tile was drawn."""

    def __len__(self):
        return 10**6

    def __getitem__(self, i):
        return np.array([i]), np.array([i])


def test_loader_processes_each_draw_their_own_synthesized_tiles():
    """With loader processes (a GPU's default), a copied generator would make each process mix in the
    same tiles; each process must draw its own, and the single-process draws stay seeded."""
    from torch.utils.data import DataLoader

    from napari_bloodseg.finetune import MixedDataset

    mixed = MixedDataset(_Index(), _Index(), n_own=0, n_synth=8, seed=3)
    drawn = [int(x) for x, _ in DataLoader(mixed, batch_size=1, num_workers=2)]
    assert len(set(drawn)) == 8  # processes 0 and 1 took items 0,2,4,6 and 1,3,5,7
    again = [int(MixedDataset(_Index(), _Index(), 0, 8, seed=3)[i][0][0]) for i in range(8)]
    assert again == [int(MixedDataset(_Index(), _Index(), 0, 8, seed=3)[i][0][0]) for i in range(8)]


def test_fine_tune_with_loader_processes(tmp_path, tiny_checkpoint):
    from napari_bloodseg.finetune import fine_tune

    pairs = write_pairs(tmp_path / "p", 3)
    rep = fine_tune(tiny_checkpoint, pairs, tmp_path / "r", 0.05, holdout=1, device="cpu", workers=2)
    assert rep["workers"] == 2 and rep["steps"] >= 1 and rep["after"]["fields"] == 1
    assert load_checkpoint(rep["checkpoint"])[0] is not None
    assert fine_tune(tiny_checkpoint, pairs, tmp_path / "r0", 0.01, holdout=0, device="cpu")["workers"] == 0
    with pytest.raises(ValueError, match="workers"):
        fine_tune(tiny_checkpoint, pairs, tmp_path / "r1", 0.01, device="cpu", workers=-1)


def test_training_accuracy_counts_as_the_arg_max_does():
    from napari_bloodseg.train import correct_pixels

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 10, 17, 19, generator=g)
    masks = torch.randint(0, 10, (3, 17, 19), generator=g)
    masks[0, :5] = IGNORE_INDEX
    masks[1, :2] = NOT_WBC
    valid = masks < 10
    assert int(correct_pixels(logits, masks, valid)) == int(((logits.argmax(1) == masks) & valid).sum()) > 0


# ----------------------------------------------------------------------------- benchmark bookkeeping
def _bench():
    spec = importlib.util.spec_from_file_location("bench_finetune", REPO / "benchmarks" / "bench_finetune.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _fields(tmp_path: Path, n: int) -> list:
    """Rendered fields posing as held-out wbc_rpi fields: a WBC box and type each, RBC 36 px."""
    from napari_bloodseg.realfields import RealField

    types = [BloodClass.NEUTROPHIL, BloodClass.LYMPHOCYTE, BloodClass.EOSINOPHIL]
    out = []
    for i in range(n):
        t = types[i % len(types)]
        s = render_smear((160, 200), counts={int(t): 1}, seed=i, rbc_diameter=36.0)
        path = write_png(tmp_path / "fields" / f"slide{i % 2}_{i}.png", s.image)
        boxes = [tuple(float(v) for v in c.bbox) for c in s.cells if c.cls == int(t)]
        out.append(RealField("wbc_rpi", path.stem, path, f"wbc_rpi:slide{i % 2}", "test", wbc_boxes=boxes,
                             wbc_types=[int(t)] * len(boxes), rbc_diameter=36.0))
    return out


def test_bench_finetune_bookkeeping(tmp_path, tiny_checkpoint, monkeypatch):
    bench = _bench()
    fields = _fields(tmp_path, 7)
    score, corr = bench.pick_fields(fields, [1, 3], 3)
    assert len(score) == 3 and [len(corr[k]) for k in (1, 3)] == [1, 3]
    assert not {f.name for f in score} & {f.name for k in corr for f in corr[k]}
    with pytest.raises(ValueError, match="too few"):
        bench.pick_fields(fields, [5], 3)

    synth = write_pairs(tmp_path / "synth" / "test", 3, shape=(224, 224), seed=30).parent
    write_pairs(synth / "train", 2, shape=(224, 224), seed=40)
    monkeypatch.setattr(bench, "heldout_fields", lambda source, data=None: fields)
    out = tmp_path / "finetune.json"
    argv = ["--out", str(out), "--k", "1", "2", "--minutes", "0.02", "--score-fields", "3", "--synth", str(synth),
            "--synth-tiles", "2", "--model", str(tiny_checkpoint), "--work", str(tmp_path / "work")]
    assert bench.main(argv) == 0
    res = json.loads(out.read_text())
    assert [r["k"] for r in res["runs"]] == [1, 2]
    scored = set(res["scoring_fields"])
    for r in res["runs"]:
        assert r["source"] == "wbc_rpi" and r["minutes"] == 0.02 and r["steps"] >= 1
        assert not scored & set(r["fields"]) and len(r["fields"]) <= r["k"]
        assert r["before"] == res["runs"][0]["before"] and r["synthetic_before"] == res["runs"][0]["synthetic_before"]
        assert r["synthetic_before"]["items"] == r["synthetic_after"]["items"] == 2
        assert {"wbc_found", "wbc_type_balanced_acc", "labelled_pixel_accuracy", "labelled_wbc_dice", "n"} <= set(r["after"])
        # 'after' is the run's own checkpoint scored on the same fields (recomputed independently)
        pairs = bench.derived_pairs([f for f in fields if f.name in scored], log=lambda s: None)
        again = bench.score_real(r["checkpoint"], fields, pairs, "wbc_rpi")
        assert again == r["after"] and r["after"]["n"] == len(scored)
        assert bench.score_synthetic(r["checkpoint"], bench.synthetic_test_set(str(synth), 2)) == r["synthetic_after"]
    assert res["runs"][0]["checkpoint"] != res["runs"][1]["checkpoint"]
    assert res["summary"]["1"]["runs"] == 1 and res["summary"]["2"]["runs"] == 1
    assert res["mixed_in"] == res["synth"] == str(synth)  # by default the set scored is the set mixed in
    r2 = res["runs"][1]
    assert res["summary"]["2"]["labelled_wbc_dice"] == {"mean": round(r2["after"]["labelled_wbc_dice"], 4), "sd": 0.0}


def test_bench_finetune_seeds_draw_their_own_corrections(tmp_path, tiny_checkpoint, monkeypatch):
    bench = _bench()
    fields = _fields(tmp_path, 12)
    score0, corr0 = bench.pick_fields(fields, [3], 3)
    score1, corr1 = bench.pick_fields(fields, [3], 3, seed=1)
    assert [f.name for f in score0] == [f.name for f in score1]  # one scoring set for every seed
    assert not {f.name for f in score1} & {f.name for f in corr1[3]} and len(corr1[3]) == 3
    draws = {tuple(sorted(f.name for f in bench.pick_fields(fields, [3], 3, seed=s)[1][3])) for s in range(1, 6)}
    assert len(draws) > 1  # seeds draw different corrections

    monkeypatch.setattr(bench, "heldout_fields", lambda source, data=None: fields)
    out = tmp_path / "finetune.json"
    argv = ["--out", str(out), "--k", "2", "--seeds", "0", "3", "--minutes", "0.02", "--score-fields", "3",
            "--synth", "procedural", "--synth-tiles", "2", "--model", str(tiny_checkpoint), "--work", str(tmp_path / "w")]
    assert bench.main(argv) == 0
    res = json.loads(out.read_text())
    assert [(r["k"], r["seed"]) for r in res["runs"]] == [(2, 0), (2, 3)]
    assert (tmp_path / "w" / "k2").is_dir() and (tmp_path / "w" / "k2_seed3").is_dir()
    vals = [r["after"]["labelled_wbc_dice"] for r in res["runs"]]
    s = res["summary"]["2"]
    assert s["runs"] == 2 and s["labelled_wbc_dice"]["mean"] == pytest.approx(np.mean(vals), abs=1e-4)
    assert s["labelled_wbc_dice"]["sd"] == pytest.approx(np.std(vals), abs=1e-4)


def test_bench_finetune_mix_from_mixes_one_set_and_scores_forgetting_on_another(tmp_path, tiny_checkpoint, monkeypatch):
    """--mix-from procedural: fine-tuning mixes rendered tiles (what the dock does without a set)
    while forgetting is still scored on --synth's test split."""
    bench = _bench()
    fields = _fields(tmp_path, 6)
    synth = write_pairs(tmp_path / "synth" / "test", 3, shape=(224, 224), seed=30).parent
    write_pairs(synth / "train", 2, shape=(224, 224), seed=40)
    monkeypatch.setattr(bench, "heldout_fields", lambda source, data=None: fields)
    mixed = []
    real_fine_tune = bench.fine_tune

    def spy(*args, **kw):
        mixed.append(kw["synth_dir"])
        return real_fine_tune(*args, **kw)

    monkeypatch.setattr(bench, "fine_tune", spy)
    out = tmp_path / "finetune.json"
    argv = ["--out", str(out), "--k", "1", "--minutes", "0.02", "--score-fields", "3", "--synth", str(synth),
            "--mix-from", "procedural", "--synth-tiles", "3", "--model", str(tiny_checkpoint)]
    assert bench.main(argv) == 0
    res = json.loads(out.read_text())
    assert mixed == ["procedural"] and res["mixed_in"] == "procedural" and res["synth"] == str(synth)
    assert res["runs"][0]["synthetic_after"]["items"] == 3  # the --synth test split, not rendered tiles


def _mask_fields(tmp_path: Path, n: int) -> list:
    """Rendered fields posing as Zheng DS2 fields: one WBC each with its expert mask (255 on the
    cell) and type, RBC 72 px (twice the training scale)."""
    from napari_bloodseg.realfields import RealField

    types = [BloodClass.NEUTROPHIL, BloodClass.LYMPHOCYTE, BloodClass.MONOCYTE]
    out = []
    for i in range(n):
        t = types[i % len(types)]
        s = render_smear((288, 288), counts={int(t): 1}, seed=100 + i, rbc_diameter=72.0)
        path = write_png(tmp_path / "zheng" / f"{i:03d}.png", s.image)
        mask = write_png(tmp_path / "zheng" / f"{i:03d}_mask.png", np.where(s.mask == int(t), 255, 0).astype(np.uint8))
        out.append(RealField("zheng2", f"{i:03d}", path, f"zheng2:{i:03d}", "test", mask_path=mask,
                             wbc_type=int(t), rbc_diameter=72.0))
    return out


def test_field_pair_of_a_mask_field_is_the_true_wbc_and_derived_labels_elsewhere(tmp_path):
    from scipy import ndimage as ndi

    from napari_bloodseg.fieldlabels import field_pair
    from napari_bloodseg.infer import _resize_uint8

    f = _mask_fields(tmp_path, 1)[0]
    rgb, labels = field_pair(f)
    assert rgb.shape == (144, 144, 3) and labels.shape == (144, 144)  # rescaled to RBC 36 px
    true = _resize_uint8(f.wbc_mask().astype(np.uint8) * 255, 144, 144, smooth=True) > 127
    wbc = labels == f.wbc_type
    assert wbc.any() and not (wbc & ~true).any() and wbc.sum() >= 0.6 * true.sum()  # the mask, edge left out
    assert not np.isin(labels, [SOME_WBC, *(int(c) for c in BloodClass if c != f.wbc_type and 1 <= c <= 5)]).any()
    assert (labels[ndi.binary_dilation(true) & ~ndi.binary_erosion(true)] == IGNORE_INDEX).all()
    outside = labels[~ndi.binary_dilation(true, iterations=30)]
    assert np.isin(outside, [BloodClass.BACKGROUND, BloodClass.HEALTHY_RBC]).mean() > 0.3  # glass / RBCs derived


def test_bench_finetune_on_a_mask_source(tmp_path, tiny_checkpoint, monkeypatch):
    """--source zheng2: corrections and scoring from expert WBC masks; true-mask WBC Dice scored."""
    bench = _bench()
    fields = _mask_fields(tmp_path, 5)
    monkeypatch.setattr(bench, "heldout_fields", lambda source, data=None: fields)
    out = tmp_path / "finetune.json"
    argv = ["--out", str(out), "--source", "zheng2", "--k", "2", "--minutes", "0.02", "--score-fields", "3",
            "--synth", "procedural", "--synth-tiles", "2", "--model", str(tiny_checkpoint)]
    assert bench.main(argv) == 0
    res = json.loads(out.read_text())
    (r,) = res["runs"]
    assert res["source"] == r["source"] == "zheng2" and r["steps"] >= 1 and len(r["fields"]) == 2
    assert len(res["scoring_fields"]) == 3 and not set(res["scoring_fields"]) & set(r["fields"])
    for scores in (r["before"], r["after"]):
        assert scores["n"] == 3 and {"wbc_dice", "wbc_type_balanced_acc", "labelled_pixel_accuracy",
                                     "labelled_wbc_dice"} <= set(scores)
        assert "wbc_found" not in scores  # a mask source: no boxes to match
