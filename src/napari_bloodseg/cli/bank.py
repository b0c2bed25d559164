"""`bloodseg bank ...`: import sources, add procedural cells and clumps, print stats, draw a gallery.

``add_parser(subparsers)`` registers the group on the main ``bloodseg`` parser; every handler
returns an exit code (0 ok, 1 some inputs failed, 2 usage/layout error).

Platelet clumps: no labelled source exists. ``bank clumps`` builds them (3-15 touching/overlapping
single thrombocytes of one source and one split, synthetic=1) from the real thrombocytes already in
the bank: run it after importing the platelet sources (pbc, voc). ``bank procedural`` adds the
renderer's own clumps with its other classes. Both are deterministic in ``--seed``.
"""

from __future__ import annotations

import argparse
import os
import sys

from ..bank.importers import FORMAT_NAMES
from .argtypes import add_box_set_options, positive_float, positive_int


def _err(msg: str) -> int:
    print(f"bloodseg bank: error: {msg}", file=sys.stderr)
    return 2


def cmd_import(args: argparse.Namespace) -> int:
    from ..bank.importers import LayoutError, parse_format, run_import
    from ..bank.scale import ScaleError

    try:
        fmt = parse_format(args.format)
    except ValueError as e:
        return _err(str(e))
    if fmt.value == "procedural":
        return _err("use 'bloodseg bank procedural --bank DIR' for the procedural source")
    try:
        report = run_import(
            fmt, args.src, args.bank, limit=args.limit, rbc_diameter=args.rbc_diameter,
            licence=args.licence, source=args.source, jobs=args.jobs, progress=not args.quiet,
            box_classes=args.box_classes, hold_out=args.hold_out, group_by=args.group_by,
        )
    except (LayoutError, ScaleError, ValueError) as e:
        return _err(str(e))
    print(report.summary())
    return 1 if report.unreadable else 0


def cmd_procedural(args: argparse.Namespace) -> int:
    from ..bank.importers import import_procedural
    from ..bank.store import Bank

    try:
        report = import_procedural(Bank.create(args.bank), per_class=args.per_class, seed=args.seed)
    except (ImportError, ValueError) as e:
        return _err(str(e))
    print(report.summary())
    return 0


def cmd_clumps(args: argparse.Namespace) -> int:
    from ..bank.importers import synthesize_clumps
    from ..bank.store import Bank

    try:
        bank = Bank.open(args.bank)
        added, already = synthesize_clumps(bank, args.n, seed=args.seed, sources=args.source or None)
    except ValueError as e:
        return _err(str(e))
    print(f"platelet clumps: added {added}, already in bank {already}")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from ..bank.store import Bank

    try:
        bank = Bank.open(args.dir)
    except ValueError as e:
        return _err(str(e))
    print(f"bank {args.dir}: {len(bank)} samples")
    print(bank.stats_table())
    return 0


def cmd_gallery(args: argparse.Namespace) -> int:
    from ..bank.gallery import save_gallery_png
    from ..bank.store import Bank

    try:
        bank = Bank.open(args.dir)
        out = save_gallery_png(bank, args.out, per_class=args.per_class, split=args.split, source=args.source, seed=args.seed)
    except ValueError as e:
        return _err(str(e))
    print(f"wrote {out}")
    return 0


def add_parser(subparsers) -> None:
    """Add the ``bank`` command group to an argparse subparsers object."""
    p = subparsers.add_parser("bank", help="build and inspect the single-cell sample bank")
    sub = p.add_subparsers(dest="bank_command", required=True, metavar="{import,procedural,clumps,stats,gallery}")

    s = sub.add_parser(
        "import", help="import a source folder",
        description=f"FORMAT: {', '.join(n for n in FORMAT_NAMES if n != 'procedural')} "
        "(the layouts each expects: see napari_bloodseg.bank.importers); rendered cells: 'bank procedural'.",
    )
    s.add_argument("format", metavar="FORMAT", help=f"one of: {', '.join(n for n in FORMAT_NAMES if n != 'procedural')}")
    s.add_argument("src", metavar="SRC", help="source folder in the layout FORMAT expects")
    s.add_argument("--bank", required=True, metavar="DIR", help="bank folder (created if missing)")
    s.add_argument("--limit", type=positive_int, default=None, metavar="N",
                   help="read at most N source images, taken evenly over classes (default: all)")
    s.add_argument("--rbc-diameter", type=positive_float, default=None, metavar="PX",
                   help="healthy RBC diameter of the source in px (default: measured from its images; "
                   "yolo / boxes-csv: the median of its RBC boxes when it has 20 or more)")
    s.add_argument("--licence", default=None, help="licence recorded for the samples (default: the format's)")
    s.add_argument("--source", default=None,
                   help="source name recorded, folder, yolo and boxes-csv formats (default: FORMAT:<name of SRC>)")
    add_box_set_options(s, "put in the test split and never trained on, e.g. a benchmark's held-out slides",
                        prefix="yolo / boxes-csv: ")
    s.add_argument("--jobs", type=positive_int, default=max(1, min(4, os.cpu_count() or 1)), metavar="J",
                   help="worker processes (default: CPU count, at most 4: %(default)s here)")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_import)

    s = sub.add_parser("procedural", help="add rendered cells of every class (the project's renderer)",
                       description="Adds N cells of each of the nine cell classes drawn by the project's renderer "
                       "(source 'procedural', licence BSD-3-Clause), split 80/10/10 per class. Running it again "
                       "with the same seed adds nothing twice.")
    s.add_argument("--bank", required=True, metavar="DIR", help="bank folder (created if missing)")
    s.add_argument("--per-class", type=positive_int, default=20, metavar="N",
                   help="cells rendered per class; from 3 on every class has train, val and test cells "
                        "(default: %(default)s)")
    s.add_argument("--seed", type=int, default=0,
                   help="random seed; another seed adds other cells, the same seed the same ones (default: %(default)s)")
    s.set_defaults(func=cmd_procedural)

    s = sub.add_parser("clumps", help="build platelet clumps from the bank's single thrombocytes",
                       description="Composes clumps of 3-15 touching single thrombocytes of one source and split "
                       "(source '<source>-clumps', synthetic). Run it after importing platelet sources.")
    s.add_argument("--bank", required=True, metavar="DIR", help="existing bank folder")
    s.add_argument("--n", type=positive_int, default=100, metavar="N", help="clumps to build (default: %(default)s)")
    s.add_argument("--seed", type=int, default=0,
                   help="random seed; the same seed rebuilds the same clumps and adds nothing twice (default: %(default)s)")
    s.add_argument("--source", action="append", default=None,
                   help="only platelets of this source, repeatable (default: every source with real thrombocytes)")
    s.set_defaults(func=cmd_clumps)

    s = sub.add_parser("stats", help="table of samples per class x source x split")
    s.add_argument("dir", metavar="DIR", help="bank folder")
    s.set_defaults(func=cmd_stats)

    s = sub.add_parser("gallery", help="write a PNG grid of samples per class with mask outlines")
    s.add_argument("dir", metavar="DIR", help="bank folder")
    s.add_argument("--out", required=True, metavar="PNG", help="PNG file to write")
    s.add_argument("--per-class", type=positive_int, default=10, metavar="N",
                   help="samples shown per class, picked at random (default: %(default)s)")
    s.add_argument("--split", default=None, choices=["train", "val", "test"],
                   help="only samples of this split (default: all splits)")
    s.add_argument("--source", default=None, help="only samples of this source (default: all sources)")
    s.add_argument("--seed", type=int, default=0, help="random seed for picking the samples (default: %(default)s)")
    s.set_defaults(func=cmd_gallery)


def main(argv: list[str] | None = None) -> int:
    """``python -m napari_bloodseg.cli.bank ...`` (same as ``bloodseg bank ...``)."""
    parser = argparse.ArgumentParser(prog="bloodseg")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["bank", *(argv if argv is not None else sys.argv[1:])])
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
