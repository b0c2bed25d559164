"""Fit the size model (napari_bloodseg.scalehead) of a checkpoint on images of known scale that
the benchmark never scores, and store it in the checkpoint's metadata.

    python scripts/fit_scale_head.py --model CKPT [--out CKPT] [--per-source 120] [--synth SYNTH]

Images: training-split fields of the real sources (realfields.TRAINABLE: truth diameters from
their boxes/points), whole PBC crops of the bank's training split (WBC-centred crops, 76 px RBCs),
and optionally synthesized tiles (36 px); with --wbc-crops instead, WBC-centred crops (2.5-6 RBC
diameters a side) cut from the training-split box fields, for a cache to add by --extra-cache. Each image gives windows at several candidate scales
exactly as autoscale cuts them (u = log of the window's RBC size over the training size, uniform
in ±U_RANGE), half of them with the wide appearance randomisation. Prints a leave-one-source-out
error before fitting on all. Caches hold the bottleneck features and the mean class probabilities,
so one cache serves both kinds of head (--features).

The shipped size model (session 21; reads the bottleneck alone), two caches of each kind:

    python scripts/fit_scale_head.py --model CKPT --per-source 220 --windows 6 --synth SYNTH --cache A.npz --no-loo
    python scripts/fit_scale_head.py --model CKPT --per-source 220 --windows 6 --wbc-crops --cache B.npz --no-loo
    # the same two with --seed 1 --cache A2.npz / B2.npz, then:
    python scripts/fit_scale_head.py --model CKPT --cache A.npz --extra-cache B.npz A2.npz B2.npz --seeds 16
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from napari_bloodseg.augment import appearance
from napari_bloodseg.classes import NUM_CLASSES
from napari_bloodseg.autoscale import _pad_batch, _window
from napari_bloodseg.infer import Segmenter
from napari_bloodseg.realfields import TRAINABLE, default_data_dir, read_fields
from napari_bloodseg.scalehead import ensemble, fit_head, window_features

U_RANGE = 2.5
FEATURES = ("bottleneck", "bottleneck+classes")


def _wbc_crop(field, rng) -> np.ndarray:
    """A WBC-centred crop of a field, 2.5-6 RBC diameters a side (like Zheng's or PBC's crops)."""
    rgb = field.image()
    d = float(field.rbc_diameter)
    r0, c0, r1, c1 = field.wbc_boxes[rng.integers(len(field.wbc_boxes))]
    side = int(round(d * rng.uniform(2.5, 6.0)))
    cy, cx = (r0 + r1) / 2 + rng.uniform(-0.5, 0.5) * d, (c0 + c1) / 2 + rng.uniform(-0.5, 0.5) * d
    y0 = int(np.clip(cy - side / 2, 0, max(0, rgb.shape[0] - side)))
    x0 = int(np.clip(cx - side / 2, 0, max(0, rgb.shape[1] - side)))
    return rgb[y0 : y0 + side, x0 : x0 + side]


def wbc_crop_images(data: Path, per_source: int, rng) -> list[tuple[str, object, float]]:
    """(group, loader, truth diameter) of WBC-centred crops cut from training-split box fields."""
    out = []
    for source in TRAINABLE:
        fields = [f for f in read_fields(source, data) if f.split == "train" and f.rbc_diameter and f.wbc_boxes]
        for i in rng.permutation(len(fields))[:per_source]:
            seed = int(rng.integers(1 << 31))
            out.append((f"crop_{source}", (lambda f=fields[i], s=seed: _wbc_crop(f, np.random.default_rng(s))),
                        float(fields[i].rbc_diameter)))
    return out


def known_scale_images(data: Path, per_source: int, synth: Path | None, rng) -> list[tuple[str, object, float]]:
    """(group, loader, truth diameter) of images of known scale, none of them benchmark fields."""
    import imageio.v3 as iio

    out = []
    for source in TRAINABLE:
        fields = [f for f in read_fields(source, data) if f.split == "train" and f.rbc_diameter]
        for i in rng.permutation(len(fields))[:per_source]:
            out.append((source, fields[i].image, float(fields[i].rbc_diameter)))
    bank = Path("work_data/bank/manifest.csv")
    if bank.is_file():
        rows = {r["source_file"]: r for r in csv.DictReader(bank.open()) if r["source"] == "pbc" and r["split"] == "train"}
        files = sorted(rows)
        for i in rng.permutation(len(files))[:per_source]:
            r = rows[files[i]]
            out.append(("pbc", (lambda p=data / "pbc" / r["source_file"]: np.asarray(iio.imread(p))[..., :3]),
                        float(r["source_rbc_diameter_px"])))
    if synth is not None:
        files = sorted((synth / "train" / "images").glob("*.png"))
        for i in rng.permutation(len(files))[:per_source]:
            out.append(("synth", (lambda p=files[i]: np.asarray(iio.imread(p))[..., :3]), 36.0))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--out", default=None, help="checkpoint to write (default: --model, in place)")
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--per-source", type=int, default=120)
    ap.add_argument("--windows", type=int, default=5, help="candidate windows per image")
    ap.add_argument("--synth", type=Path, default=None)
    ap.add_argument("--cache", type=Path, default=None, help="npz of features to reuse/write")
    ap.add_argument("--extra-cache", type=Path, nargs="*", default=[], help="more feature npz files to fit on")
    ap.add_argument("--wbc-crops", action="store_true",
                    help="WBC-centred crops cut from the training-split box fields instead of whole images")
    ap.add_argument("--ensemble-with", default=None,
                    help="checkpoint whose size model is averaged with the fitted one (equal weight)")
    ap.add_argument("--no-loo", action="store_true", help="skip the leave-one-source-out report")
    ap.add_argument("--seeds", type=int, default=4, help="heads averaged (an ensemble stored as one head)")
    ap.add_argument("--seed", type=int, default=0, help="draws the images, windows and augmentation of a new cache")
    ap.add_argument("--features", choices=FEATURES, default=FEATURES[0],
                    help="what the head reads: the bottleneck alone (the way down of the network only: faster, and "
                         "exact after a decoder-only fine-tune), or the bottleneck and the mean class probabilities "
                         "(the heads of sessions 12-20)")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    seg = Segmenter.from_file(args.model, "cpu")
    train_d, tile = float(seg.info.rbc_diameter_px), seg.scale_window
    if args.cache and args.cache.is_file():
        z = np.load(args.cache)
        feats, us, groups = z["feats"], z["u"], z["groups"]
    else:
        data = args.data or default_data_dir()
        if args.wbc_crops:
            items = wbc_crop_images(data, args.per_source, rng)
        else:
            items = known_scale_images(data, args.per_source, args.synth, rng)
        t0 = time.perf_counter()
        feats, us, groups = [], [], []
        for k, (group, load, d_true) in enumerate(items):
            rgb = load()
            wins, ulist = [], []
            for u in rng.uniform(-U_RANGE, U_RANGE, args.windows):
                d = d_true * math.exp(-u)  # candidate at which the window's RBCs are train_d * e^u
                if min(rgb.shape[:2]) * train_d / d < 16:
                    continue
                win = _window(rgb, d, train_d, tile)
                if rng.random() < 0.5:
                    win = appearance(win, np.ones(win.shape[:2], np.uint8), rng)
                wins.append(win)
                ulist.append(u)
            if not wins:
                continue
            f = window_features(seg, _pad_batch(wins, tile), classes=True)  # the cache serves both kinds
            feats.append(f)
            us += ulist
            groups += [group] * len(ulist)
            if k % 50 == 0:
                print(f"  {k}/{len(items)} images, {time.perf_counter() - t0:.0f} s", flush=True)
        feats, us, groups = np.concatenate(feats), np.asarray(us), np.asarray(groups)
        if args.cache:
            np.savez(args.cache, feats=feats, u=us, groups=groups)
    for extra in args.extra_cache:
        z = np.load(extra)
        feats, us, groups = np.concatenate([feats, z["feats"]]), np.concatenate([us, z["u"]]), np.concatenate([groups, z["groups"]])
    reads_classes = args.features == FEATURES[1]
    if not reads_classes:
        feats = feats[:, : feats.shape[1] - NUM_CLASSES]  # the cache holds the class probabilities last
    print(f"{len(us)} windows from groups {sorted(set(groups.tolist()))}, {feats.shape[1]} features")
    for g in [] if args.no_loo else sorted(set(groups.tolist())):
        tr, te = groups != g, groups == g
        head = fit_head(feats[tr], us[tr], u_range=U_RANGE, reads_classes=reads_classes)
        err = head.predict(feats[te]) - us[te]
        near = np.abs(us[te]) < 0.5
        print(f"  leave out {g:<13} rmse {np.sqrt(np.mean(err ** 2)):.3f}  |u|<0.5: rmse {np.sqrt(np.mean(err[near] ** 2)):.3f}"
              f"  within 15%: {np.mean(np.abs(err[near]) < math.log(1.15)):.2f}")
    head = ensemble([fit_head(feats, us, u_range=U_RANGE, seed=k, reads_classes=reads_classes) for k in range(args.seeds)])
    if args.ensemble_with:
        from napari_bloodseg.checkpoint import load_checkpoint

        other = load_checkpoint(args.ensemble_with)[1].scale_head
        if other is None:
            raise SystemExit(f"{args.ensemble_with} has no size model")
        if other.reads_classes != reads_classes:
            raise SystemExit(f"{args.ensemble_with}'s size model reads other features: fit with --features "
                             f"{FEATURES[int(other.reads_classes)]} to average with it")
        head = ensemble([head, other])
    write_head(args.model, args.out or args.model, head)


def write_head(src, dst, head) -> None:
    from napari_bloodseg.checkpoint import DEFAULT_MODEL, load_checkpoint, save_checkpoint

    model, info = load_checkpoint(src)
    info.scale_head = head
    save_checkpoint(dst or src or DEFAULT_MODEL, model, info)
    print(f"wrote the scale head into {dst or src or DEFAULT_MODEL}")


if __name__ == "__main__":
    main()
