"""Fine-tuning benchmark: how many corrected fields and CPU minutes fix a lab the model has not
learned (issue 13).

    python benchmarks/bench_finetune.py --out finetune.json [--source wbc_rpi] [--k 5 10 20]
        [--minutes 5] [--score-fields 20] [--synth work_data/synth] [--synth-tiles 100] [--model CKPT]
        [--seeds 0 1 2]

For ``--source`` (held-out fields only: slides never trained on) a fixed, WBC-type-stratified set of
scoring fields is set aside; from the remaining fields k are taken as the user's corrections (their
derived partial labels, napari_bloodseg.fieldlabels.field_pair, unlabelled pixels ignored), the model is
fine-tuned on them for ``--minutes`` of wall clock (napari_bloodseg.finetune, synthesized tiles
mixed in), and the scoring fields are scored before and after: the real-field metrics at given
scale (napari_bloodseg.realmetrics) plus pixel accuracy and WBC Dice on the derived labels; the
synthetic test split is scored before and after for forgetting. Writes
``{"runs": [{"source", "k", "minutes", "before", "after", "synthetic_before", "synthetic_after", ...}]}``.
Scoring and correction fields are disjoint but may share slides (one lab's slides, as for a user).

Sources: ``wbc_rpi`` (held-out slides; the model trained on other slides of that lab) labels from
WBC boxes: the WBC the bank's extraction finds in a box → the box's type. ``zheng2`` (Zheng et al.
Dataset 2, another lab and camera, evaluation only: never in any training set) has an expert WBC
mask and type per field, so a correction is what a user who corrects a field draws: the true WBC
mask with its type (its one-pixel edge ignored), the obvious glass and RBCs around it derived as for
wbc_rpi, the rest of the WBC's box and anything unsure ignored; scoring adds the true-mask WBC Dice
at the field's own size. Zheng2's 3 basophil fields all go to scoring when ``--score-fields`` ≥ 15
(stratified), so its corrections teach no basophil.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np

from napari_bloodseg.finetune import (LEARNING_RATE, MIX_FRACTION, PROCEDURAL, fine_tune, labelled_counts,
                                      summarize_counts)
from napari_bloodseg.realfields import RealField
from napari_bloodseg.realmetrics import aggregate, heldout_fields, score_field, select_fields

MIN_LABELLED = 0.05  # a field whose derived labels cover less is skipped (as scripts/make_real_pairs.py)
Pairs = dict[str, tuple[np.ndarray, np.ndarray]]


def pick_fields(fields: Sequence[RealField], ks: Sequence[int], n_score: int,
                seed: int = 0) -> tuple[list[RealField], dict[int, list[RealField]]]:
    """(scoring fields, {k: correction fields}): scoring fields first (stratified by WBC type), then
    k of the rest for each k, also stratified; never one field in both. ``seed`` 0: the corrections
    evenly spread over the rest; another seed: another stratified draw (the scoring fields stay)."""
    score = select_fields(fields, n_score, stratify=True)
    names = {f.name for f in score}
    pool = [f for f in fields if f.name not in names]
    if ks and max(ks) > len(pool):
        raise ValueError(f"{len(fields)} fields: too few for {n_score} scoring and {max(ks)} correction fields")
    if seed:
        pool = [pool[i] for i in np.random.default_rng(seed).permutation(len(pool))]
    return score, {k: select_fields(pool, k, stratify=True) for k in ks}


def derived_pairs(fields: Sequence[RealField], log: Callable[[str], None] = print) -> Pairs:
    """{name: (RGB, partial labels)} at the training scale; fields with too little labelled left out."""
    from napari_bloodseg.fieldlabels import field_pair

    out: Pairs = {}
    for f in fields:
        try:
            rgb, mask = field_pair(f)
        except ValueError as e:
            log(f"  {f.name}: skipped: {e}")
            continue
        if (mask != 255).mean() < MIN_LABELLED:
            log(f"  {f.name}: skipped: too little labelled")
            continue
        out[f.name] = (rgb, mask)
    return out


def write_pairs(pairs: Pairs, out: Path) -> Path:
    """The pairs as an images/ + masks/ folder (what *Add to training set* gives a user)."""
    from napari_bloodseg.io import write_png

    for name, (rgb, mask) in pairs.items():
        write_png(out / "images" / f"{name}.png", rgb, overwrite=True)
        write_png(out / "masks" / f"{name}.png", mask, overwrite=True)
    return out


def score_real(model: str | Path | None, fields: Sequence[RealField], pairs: Pairs, source: str) -> dict:
    """The real-field metrics at given scale plus pixel accuracy / WBC Dice on the derived labels,
    from one segmentation per field (at the training scale, mapped back to the field's size)."""
    from napari_bloodseg.infer import Segmenter, _resize_uint8

    seg = Segmenter.from_file(model, device="cpu", backend="torch", precision="fp32")
    counts, scores, n = np.zeros(5, np.int64), [], 0
    for f in fields:
        if f.name not in pairs:
            continue
        rgb, mask = pairs[f.name]
        labels = seg.segment(rgb, seg.info.rbc_diameter_px).labels
        counts += labelled_counts(labels, mask)
        h, w = f.image().shape[:2]
        scores.append(score_field(f, _resize_uint8(labels, h, w, smooth=False), float(f.rbc_diameter), "given"))
        n += 1
    out = {k.removesuffix("_given"): v for k, v in aggregate(scores, source, "given").items()}
    labelled = summarize_counts(counts, n)
    out["labelled_pixel_accuracy"], out["labelled_wbc_dice"] = labelled["pixel_accuracy"], labelled["wbc_dice"]
    out["n"] = n
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}


def synthetic_test_set(synth: str | None, tiles: int):
    """The synthetic test split (``<synth>/test``, evenly spread subset of ``tiles``; 0 = all) or,
    without a set, ``tiles`` procedural tiles as `bloodseg evaluate --data procedural` draws them."""
    from torch.utils.data import Subset

    from napari_bloodseg.train import FolderDataset, RenderedDataset

    if synth is None:
        return RenderedDataset(tiles or 100, seed=12345)
    root = Path(synth)
    ds = FolderDataset(root / "test" if (root / "test").is_dir() else root)
    if tiles and tiles < len(ds):
        ds = Subset(ds, np.linspace(0, len(ds) - 1, tiles).round().astype(int).tolist())
    return ds


def score_synthetic(model: str | Path | None, dataset) -> dict:
    """Pixel accuracy and mIoU as `bloodseg evaluate` computes them."""
    from torch.utils.data import DataLoader

    from napari_bloodseg.checkpoint import load_checkpoint
    from napari_bloodseg.infer import resolve_device
    from napari_bloodseg.train import _collate, evaluate_model

    device = resolve_device("cpu")
    net, info = load_checkpoint(model, device)
    res = evaluate_model(net, DataLoader(dataset, batch_size=8, collate_fn=_collate), info, device)
    return {"pixel_accuracy": round(res["pixel_accuracy"], 4), "miou": round(res["miou"], 4), "items": len(dataset)}


def run_benchmark(fields: Sequence[RealField], source: str, init: str | Path | None, ks: Sequence[int], minutes: float,
                  work: Path, synth: str | None = None, n_score: int = 20, synth_tiles: int = 100,
                  log: Callable[[str], None] = print, freeze_encoder: bool = True, lr: float = LEARNING_RATE,
                  mix_fraction: float = MIX_FRACTION, seeds: Sequence[int] = (0,), mix_from: str | None = None) -> dict:
    """Every k and seed: write its correction pairs, fine-tune, score; the 'before' scores once.
    A seed draws its own correction fields (see :func:`pick_fields`) and seeds the fine-tune.
    ``mix_from``: the tiles mixed into fine-tuning when not ``synth``'s train split, e.g.
    'procedural' (what the napari dock and ``bloodseg train --minutes`` mix in by default)."""
    mix = mix_from or synth or PROCEDURAL
    t0 = time.time()
    score_fields, _ = pick_fields(fields, ks, n_score)
    log(f"{source}: {len(fields)} held-out fields; scoring on {len(score_fields)}")
    score_pairs = derived_pairs(score_fields, log)
    synth_test = synthetic_test_set(synth, synth_tiles)
    before = score_real(init, score_fields, score_pairs, source)
    synthetic_before = score_synthetic(init, synth_test)
    log(f"before: {json.dumps(before)}\n  synthetic {json.dumps(synthetic_before)}")
    runs = []
    for seed in seeds:
        corrections = pick_fields(fields, ks, n_score, seed)[1]
        for k in ks:
            name = f"k{k}" if seed == 0 else f"k{k}_seed{seed}"
            pairs = derived_pairs(corrections[k], log)
            pairs_dir = write_pairs(pairs, work / name / "pairs")
            log(f"k={k}, seed {seed}: {len(pairs)} correction fields, fine-tuning {minutes} min")
            rep = fine_tune(init, pairs_dir, work / name / "run", minutes, synth_dir=mix, holdout=0,
                            device="cpu", seed=seed, overwrite=True, freeze_encoder=freeze_encoder, lr=lr,
                            mix_fraction=mix_fraction)
            ckpt = rep["checkpoint"]
            run = {"source": source, "k": k, "seed": seed, "minutes": minutes, "fields": sorted(pairs), "before": before,
                   "after": score_real(ckpt, score_fields, score_pairs, source),
                   "synthetic_before": synthetic_before, "synthetic_after": score_synthetic(ckpt, synth_test),
                   "lr": lr, "mix_fraction": mix_fraction, "steps": rep["steps"],
                   "seconds_training": rep["seconds_training"], "checkpoint": ckpt}
            log(f"after: {json.dumps(run['after'])}\n  synthetic {json.dumps(run['synthetic_after'])}")
            runs.append(run)
    import torch

    return {"source": source, "init": str(init) if init else "shipped default", "scoring_fields": sorted(score_pairs),
            "synth": synth or PROCEDURAL, "mixed_in": mix, "cpu_threads": torch.get_num_threads(), "runs": runs,
            "summary": summarize_runs(runs), "seconds": round(time.time() - t0, 1)}


SUMMARY_KEYS = ("wbc_type_balanced_acc", "wbc_dice", "labelled_wbc_dice")


def summarize_runs(runs: Sequence[dict]) -> dict[str, dict]:
    """Per k over its seeds: mean and standard deviation (population) of the 'after' scores of
    :data:`SUMMARY_KEYS` and of the synthetic pixel accuracy, and the number of runs."""
    out: dict[str, dict] = {}
    for k in sorted({r["k"] for r in runs}):
        rs = [r for r in runs if r["k"] == k]
        entry: dict = {"runs": len(rs)}
        values = {key: [r["after"].get(key) for r in rs] for key in SUMMARY_KEYS}
        values["synthetic_pixel_accuracy"] = [r["synthetic_after"]["pixel_accuracy"] for r in rs]
        for key, vals in values.items():
            vals = [v for v in vals if v is not None]
            if vals:
                entry[key] = {"mean": round(float(np.mean(vals)), 4), "sd": round(float(np.std(vals)), 4)}
        out[str(k)] = entry
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument("--source", default="wbc_rpi", help="real source whose held-out fields are used: wbc_rpi (WBC "
                    "boxes) or a WBC-mask source such as zheng2 (default: %(default)s)")
    ap.add_argument("--k", type=int, nargs="+", default=[5, 10, 20], help="corrected fields per run (default: 5 10 20)")
    ap.add_argument("--minutes", type=float, default=5.0, help="wall-clock fine-tuning budget per run (default: %(default)s)")
    ap.add_argument("--score-fields", type=int, default=20, help="held-out fields scored before/after (default: %(default)s)")
    ap.add_argument("--synth", default="work_data/synth",
                    help="synthesized set: mixed into fine-tuning (train/) and scored for forgetting (test/); "
                    f"'{PROCEDURAL}' or a missing folder: rendered tiles for both (default: %(default)s)")
    ap.add_argument("--mix-from", default=None, help="what is mixed into fine-tuning, if not --synth's train split: "
                    f"another set, or '{PROCEDURAL}' (rendered tiles, what the napari dock and bloodseg train "
                    "--minutes mix in when given no set)")
    ap.add_argument("--synth-tiles", type=int, default=100, help="synthetic test tiles scored, evenly spread; 0 = all (default: %(default)s)")
    ap.add_argument("--model", default=None, help="checkpoint to start from (default: the shipped model)")
    ap.add_argument("--train-encoder", action="store_true", help="adapt the encoder too (default: decoder only, "
                    "as bloodseg train --minutes does)")
    ap.add_argument("--lr", type=float, default=LEARNING_RATE, help="learning rate (default: %(default)s, as bloodseg train --minutes)")
    ap.add_argument("--mix", type=float, default=MIX_FRACTION, help="share of synthesized tiles per batch (default: %(default)s)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="one run per k and seed: seed 0 takes the "
                    "corrections evenly spread, another seed draws its own (stratified) and seeds the fine-tune; "
                    "the JSON's summary gives mean and sd over seeds (default: 0)")
    ap.add_argument("--data", default=None, help="the shared data folder (default: ../shared/data)")
    ap.add_argument("--work", default=None, help="folder for pairs and runs (default: a temporary folder)")
    args = ap.parse_args(argv)
    import tempfile

    synth = args.synth if args.synth != PROCEDURAL and Path(args.synth).is_dir() else None
    if synth is None and args.synth != PROCEDURAL:
        print(f"{args.synth}: not found; using rendered tiles", flush=True)
    fields = heldout_fields(args.source, args.data)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        res = run_benchmark(fields, args.source, args.model, args.k, args.minutes, work, synth, args.score_fields,
                            args.synth_tiles, log=lambda s: print(s, flush=True), freeze_encoder=not args.train_encoder,
                            lr=args.lr, mix_fraction=args.mix, seeds=args.seeds, mix_from=args.mix_from)
    if not args.work:
        for r in res["runs"]:
            r["checkpoint"] = None  # gone with the temporary folder
    Path(args.out).write_text(json.dumps(res, indent=1))
    for k, entry in res["summary"].items():
        print(f"k={k}, {entry['runs']} run(s): " + ", ".join(
            f"{key} {v['mean']:.3f} ± {v['sd']:.3f}" for key, v in entry.items() if isinstance(v, dict)))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
