#!/usr/bin/env python
"""Whole-cell Dice of the bank's WBC mask extraction against expert masks (Zheng et al. sets).

The images of ``segmentation_wbc/Dataset N`` are treated as unmasked crops, exactly as the ``pbc``
importer treats its crops: the source's RBC diameter is measured from the images, then
:func:`napari_bloodseg.bank.masks.extract_wbc` extracts the centred cell; its mask is compared with
the expert mask (cytoplasm + nucleus = cell). Border rejections are counted separately and do not
hide the mask (Dice is computed for every image).

    python scripts/eval_mask_extraction.py                 # Dataset 2, all 100 images
    python scripts/eval_mask_extraction.py --dataset 1 --limit 50 --csv /tmp/dice.csv
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np

from napari_bloodseg.bank.masks import as_rgb, border_fraction, dice, extract_wbc
from napari_bloodseg.bank.scale import ScaleError, measure_rbc_diameter

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"


def evaluate(data: Path, dataset: int = 2, limit: int | None = None, measure: bool = True) -> list[tuple[str, float, bool]]:
    """[(image name, Dice, would be rejected for touching the border)] for one Zheng set."""
    folder = data / "segmentation_wbc" / f"Dataset {dataset}"
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} not found (expected ../shared/data/segmentation_wbc/Dataset N)")
    images = sorted(p for p in folder.glob("*.bmp") if p.with_suffix(".png").is_file())
    if limit:
        images = images[:limit]
    d = None
    if measure:
        try:
            step = max(1, len(images) // 40)
            d = measure_rbc_diameter(as_rgb(iio.imread(p)) for p in images[::step]).diameter
        except ScaleError:
            d = None
    print(f"Dataset {dataset}: {len(images)} images, RBC diameter "
          + (f"{d:.1f} px (measured)" if d else "unknown (default: a quarter of the crop)"), file=sys.stderr)
    out = []
    for p in images:
        rgb = as_rgb(iio.imread(p))
        gt = np.asarray(iio.imread(p.with_suffix(".png")))
        gt = (gt[..., 0] if gt.ndim == 3 else gt) > 64
        ex = extract_wbc(rgb, rbc_diameter=d, max_border=1.0)
        score = dice(ex.mask, gt) if ex.mask is not None else 0.0
        border = ex.mask is not None and border_fraction(ex.mask) > 0.02
        out.append((p.name, score, border))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="shared data folder (default ../shared/data)")
    ap.add_argument("--dataset", type=int, default=2, choices=[1, 2])
    ap.add_argument("--limit", type=int, default=None, help="first N images only")
    ap.add_argument("--no-measure", action="store_true", help="do not measure the RBC diameter first")
    ap.add_argument("--csv", type=Path, default=None, help="write per-image Dice here")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    try:
        res = evaluate(args.data, args.dataset, args.limit, measure=not args.no_measure)
    except FileNotFoundError as e:
        print(f"eval_mask_extraction: {e}", file=sys.stderr)
        return 2
    scores = np.array([r[1] for r in res])
    worst = sorted(res, key=lambda r: r[1])[:5]
    print(f"whole-cell Dice, Zheng Dataset {args.dataset} treated as unmasked: n={len(scores)} "
          f"mean={scores.mean():.4f} median={np.median(scores):.4f} min={scores.min():.4f} "
          f"(>=0.90: {(scores >= 0.9).sum()}, touching border: {sum(r[2] for r in res)}, "
          f"{time.perf_counter() - t0:.1f} s)")
    print("worst: " + ", ".join(f"{n} {s:.3f}" for n, s, _ in worst))
    if args.csv:
        with open(args.csv, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["image", "dice", "touches_border"])
            w.writerows([(n, f"{s:.4f}", int(b)) for n, s, b in res])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
