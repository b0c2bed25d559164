"""Shrink a folder of training pairs for moving it to another machine, and restore it there.

    python scripts/pairs_pack.py pack PAIRS PACKED [--max-side 480] [--quality 90]
    python scripts/pairs_pack.py unpack PACKED PAIRS [--workers N]

``pack`` stores each image as a JPEG no larger than --max-side on its short side (masks stay
lossless PNG); ``unpack`` resizes every image back to its mask's size and writes PNG pairs that
``FolderDataset`` reads. Whole real fields upscaled to the model scale (e.g. pig_wbc, ~2.8x)
shrink about 6x; the JPEG loss is within what the training augmentation adds anyway.
"""

from __future__ import annotations

import argparse
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import imageio.v3 as iio
import numpy as np

from napari_bloodseg.infer import _resize_uint8


def _pack_one(args) -> None:
    img_path, out_dir, max_side, quality = args
    img = np.asarray(iio.imread(img_path))[..., :3]
    short = min(img.shape[:2])
    if short > max_side:
        f = max_side / short
        img = _resize_uint8(img, round(img.shape[0] * f), round(img.shape[1] * f), True)
    iio.imwrite(out_dir / "images" / f"{img_path.stem}.jpg", img, quality=quality)


def _unpack_one(args) -> None:
    jpg, mask_path, out_dir = args
    img = np.asarray(iio.imread(jpg))[..., :3]
    h, w = iio.improps(mask_path).shape[:2]
    if img.shape[:2] != (h, w):
        img = _resize_uint8(img, h, w, True)
    iio.imwrite(out_dir / "images" / f"{jpg.stem}.png", np.ascontiguousarray(img))
    shutil.copyfile(mask_path, out_dir / "masks" / mask_path.name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["pack", "unpack"])
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--max-side", type=int, default=480, help="pack: largest short side kept (default: %(default)s)")
    ap.add_argument("--quality", type=int, default=90, help="pack: JPEG quality (default: %(default)s)")
    ap.add_argument("--workers", type=int, default=4, help="processes (default: %(default)s)")
    args = ap.parse_args()
    src, dst = Path(args.src), Path(args.dst)
    if dst.exists() and any(dst.iterdir()):
        raise SystemExit(f"{dst} exists and is not empty")
    (dst / "images").mkdir(parents=True, exist_ok=True)
    (dst / "masks").mkdir(parents=True, exist_ok=True)
    masks = {p.stem: p for p in (src / "masks").glob("*.png")}
    if args.mode == "pack":
        imgs = [p for p in sorted((src / "images").glob("*.png")) if p.stem in masks]
        jobs = [(p, dst, args.max_side, args.quality) for p in imgs]
        fn = _pack_one
        for p in imgs:
            shutil.copyfile(masks[p.stem], dst / "masks" / f"{p.stem}.png")
    else:
        imgs = [p for p in sorted((src / "images").glob("*.jpg")) if p.stem in masks]
        jobs = [(p, masks[p.stem], dst) for p in imgs]
        fn = _unpack_one
    with ProcessPoolExecutor(args.workers) as pool:
        list(pool.map(fn, jobs, chunksize=8))
    print(f"{args.mode}ed {len(imgs)} pairs into {dst}")


if __name__ == "__main__":
    main()
