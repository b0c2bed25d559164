"""`bloodseg pairs`: training pairs from a lab's own box annotations (see napari_bloodseg.boxsets).

Imported by cli/__init__.py for every command, so it imports nothing heavy at module level.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .argtypes import add_box_set_options, positive_float, positive_int


def cmd_pairs(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..bank.importers import LayoutError
    from ..bank.scale import ScaleError
    from ..boxsets import write_box_pairs

    bar = tqdm(desc="pairs", unit="field", disable=args.quiet, leave=False)

    def on_field(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    try:
        report = write_box_pairs(args.format, args.src, args.out, box_classes=args.box_classes,
                                 rbc_diameter=args.rbc_diameter, overwrite=args.overwrite, jobs=args.jobs,
                                 hold_out=args.hold_out or (), group_by=args.group_by, on_field=on_field)
    except (LayoutError, ScaleError, ValueError) as e:
        print(f"bloodseg pairs: error: {e}", file=sys.stderr)
        return 2
    finally:
        bar.close()
    print(report.summary())
    if report.written:
        print(f"fine-tune on them: bloodseg train --data {args.out} --out RUN --minutes 5 "
              "(starts from the shipped model; --init CKPT for another)")
    have_pairs = any(Path(args.out).glob("**/masks/*.png"))
    return 0 if have_pairs else 1  # 1: nothing to fine-tune on


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "pairs", help="training pairs (image + partial class map) from your own box annotations",
        description="Turns every field of a YOLO (images/ + labels/) or CSV (image, xmin, ymin, xmax, ymax, "
        "label) box set into a training pair at the model's scale: glass, RBCs and the WBC in each WBC box "
        "(its type, or 'some WBC' for a box without one) labelled, the rest ignored. Then fine-tune on them "
        "with `bloodseg train --data OUT --out RUN --minutes M`.",
    )
    p.add_argument("format", choices=("yolo", "boxes-csv"), help="the layout of SRC (as in `bloodseg bank import`)")
    p.add_argument("src", metavar="SRC", help="the annotated set")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for images/ and masks/")
    p.add_argument("--rbc-diameter", type=positive_float, default=None, metavar="PX",
                   help="healthy RBC diameter in the images, px (default: the median of the RBC boxes when there are "
                   "20 or more, else measured from the images)")
    add_box_set_options(p, "written to OUT/val/ (the others to OUT/train/): a fine-tune on OUT scores itself "
                        "before and after on them, fields it never learned")
    p.add_argument("--overwrite", action="store_true", help="replace pairs already in --out (default: keep them)")
    p.add_argument("--jobs", type=positive_int, default=max(1, min(4, os.cpu_count() or 1)), metavar="J",
                   help="worker processes (default: CPU count, at most 4: %(default)s here)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_pairs)
    return p
