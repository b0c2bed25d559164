"""Save a side-by-side PNG of a rendered smear and its colourised class mask.

    python scripts/render_preview.py OUT.png [--seed S] [--size H W] [--rbc-diameter D] [--separate]

Without --size/--rbc-diameter/--separate it shows ``sample_smear(seed)``; --cells adds a row with
one ``render_cell`` sprite per class.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from napari_bloodseg.classes import CLASS_NAMES, colorize
from napari_bloodseg.render import render_cell, render_smear, sample_smear


def _cell_row(height: int, d: float, seed: int) -> np.ndarray:
    tiles = []
    for c in range(1, len(CLASS_NAMES)):
        spr = render_cell(c, rbc_diameter=d, rng=seed + c)
        rgb = spr[..., :3].astype(np.float32)
        a = spr[..., 3:4].astype(np.float32) / 255
        tile = np.full((height, height, 3), 255, np.uint8)
        h, w = spr.shape[:2]
        h2, w2 = min(h, height), min(w, height)
        oy, ox = (height - h2) // 2, (height - w2) // 2
        # sprite with its background kept, and a thin outline where alpha changes
        tile[oy : oy + h2, ox : ox + w2] = rgb[:h2, :w2].astype(np.uint8)
        inside = a[:h2, :w2, 0] > 0
        edge = inside & ~ndimage.binary_erosion(inside)
        tile[oy : oy + h2, ox : ox + w2][edge] = (0, 160, 0)
        tiles.append(tile)
    return np.concatenate(tiles, axis=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, nargs=2, metavar=("H", "W"))
    ap.add_argument("--rbc-diameter", type=float)
    ap.add_argument("--separate", action="store_true", help="touching=False")
    ap.add_argument("--cells", action="store_true", help="add a row of render_cell sprites")
    args = ap.parse_args()
    t0 = time.perf_counter()
    if args.size or args.rbc_diameter or args.separate:
        smear = render_smear(
            tuple(args.size or (512, 512)),
            rbc_diameter=args.rbc_diameter or 36.0,
            seed=args.seed,
            touching=not args.separate,
        )
    else:
        smear = sample_smear(args.seed)
    dt = time.perf_counter() - t0
    gap = np.full((smear.image.shape[0], 8, 3), 255, np.uint8)
    out = np.concatenate([smear.image, gap, colorize(smear.mask)], axis=1)
    if args.cells:
        d = args.rbc_diameter or 36.0
        row = _cell_row(int(2.4 * d) + 12, d, args.seed)
        if row.shape[1] < out.shape[1]:
            row = np.pad(row, ((0, 0), (0, out.shape[1] - row.shape[1]), (0, 0)), constant_values=255)
        else:
            out = np.pad(out, ((0, 0), (0, row.shape[1] - out.shape[1]), (0, 0)), constant_values=255)
        out = np.concatenate([out, np.full((8, out.shape[1], 3), 255, np.uint8), row], axis=0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from skimage.io import imsave

    imsave(str(args.out), out, check_contrast=False)
    counts = np.bincount([c.cls for c in smear.cells], minlength=len(CLASS_NAMES))
    print(f"rendered {smear.image.shape[1]}x{smear.image.shape[0]} in {dt * 1000:.0f} ms; cells per class:")
    for name, n in zip(CLASS_NAMES[1:], counts[1:], strict=True):
        print(f"  {name:<16}{n}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
