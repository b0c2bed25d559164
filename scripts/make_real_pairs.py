"""Write training pairs (image, partial class map) from the train-split fields of the annotated real
sources (see napari_bloodseg.realfields / fieldlabels), rescaled to the training scale.

    python scripts/make_real_pairs.py --out work_data/realpairs [--data ../shared/data] [--max-per-source 300]
        [--open-plasma-glass wbc_rpi]

--open-plasma-glass: sources whose wide stretches between cells are labelled glass however pale
(fieldlabels.derive_labels); the shipped model of session 29 was trained with wbc_rpi so labelled.
"""

from __future__ import annotations

import argparse
from multiprocessing import Pool
from pathlib import Path

import numpy as np

from napari_bloodseg.fieldlabels import field_pair
from napari_bloodseg.io import write_png
from napari_bloodseg.realfields import TRAINABLE, read_fields


def _one(args):
    field, out, open_plasma = args
    stem = f"{field.source}_{field.name}"
    if (out / "masks" / f"{stem}.png").is_file():
        return stem, "exists"
    try:
        rgb, mask = field_pair(field, open_plasma_is_glass=open_plasma)
    except Exception as e:  # noqa: BLE001 - one bad field must not stop the run
        return stem, f"skipped: {e}"
    if (mask < 10).sum() < 0.05 * mask.size:
        return stem, "skipped: too little labelled"
    write_png(out / "images" / f"{stem}.png", rgb, overwrite=True)
    write_png(out / "masks" / f"{stem}.png", mask, overwrite=True)
    return stem, "ok"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="folder for images/ and masks/")
    ap.add_argument("--data", default=None, help="the shared data folder (default: ../shared/data)")
    ap.add_argument("--max-per-source", type=int, default=300, help="fields per source, evenly spread (default %(default)s)")
    ap.add_argument("--jobs", type=int, default=2, help="worker processes (default %(default)s)")
    ap.add_argument("--open-plasma-glass", nargs="+", default=[], choices=TRAINABLE, metavar="SOURCE",
                    help="sources whose open plasma between cells is labelled glass, however pale (e.g. wbc_rpi)")
    args = ap.parse_args()
    out = Path(args.out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    jobs = []
    for src in TRAINABLE:
        fields = read_fields(src, args.data, splits=("train",))
        idx = np.linspace(0, len(fields) - 1, min(len(fields), args.max_per_source)).round().astype(int)
        jobs += [(fields[i], out, src in args.open_plasma_glass) for i in sorted(set(idx.tolist()))]
    with Pool(args.jobs) as pool:
        for n, (stem, status) in enumerate(pool.imap_unordered(_one, jobs, chunksize=4)):
            if status != "ok":
                print(stem, status, flush=True)
            if n % 100 == 0:
                print(f"{n}/{len(jobs)}", flush=True)


if __name__ == "__main__":
    main()
