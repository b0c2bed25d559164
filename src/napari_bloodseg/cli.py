"""`bloodseg` command line: thin layer over the core modules (see DESIGN.md for the contract)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import __version__
from .argtypes import positive_float


def cmd_segment(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .checkpoint import CheckpointError
    from .classes import colorize
    from .infer import Segmenter
    from .io import expand_inputs, read_image, write_png

    try:
        seg = Segmenter.from_file(args.model, device=args.device, batch_size=args.batch_size, tta=args.tta)
    except (CheckpointError, ValueError) as e:
        print(f"bloodseg: error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    inputs = expand_inputs(args.images)
    if not inputs:
        print("bloodseg: error: no images found in the given paths", file=sys.stderr)
        return 2
    failed: list[str] = []
    seen: set[str] = set()
    for path in tqdm(inputs, desc="segment", unit="image", disable=args.quiet):
        try:
            if path.stem in seen:
                raise ValueError(f"{path}: another input has the same name '{path.stem}'; outputs would collide")
            seen.add(path.stem)
            targets = [out / f"{path.stem}_labels.png", out / f"{path.stem}_color.png"]
            if args.report:
                targets += [out / f"{path.stem}_cells.csv", out / f"{path.stem}_summary.json"]
            clash = [t for t in targets if t.exists()]
            if clash and not args.overwrite:
                raise ValueError(f"{path}: {clash[0]} already exists (use --overwrite to replace)")
            image = read_image(path)
            result = seg.segment(image, rbc_diameter=args.rbc_diameter)
            write_png(targets[0], result.labels, overwrite=True)
            write_png(targets[1], colorize(result.labels), overwrite=True)
            msg = f"{path.name}: RBC diameter {result.rbc_diameter_text()}"
            if result.rbc_diameter_uncertain:
                tqdm.write(f"bloodseg: warning: {path}: RBC diameter {result.rbc_diameter_text()} (--rbc-diameter)",
                           file=sys.stderr)
            if args.report:
                from .cells import write_report

                summary = write_report(result, image, targets[2], targets[3])
                msg += f", {summary['counts_total']} cells"
            if not args.quiet:
                tqdm.write(msg)
        except (ValueError, OSError) as e:
            failed.append(str(path))
            text = str(e)
            if str(path) not in text:
                text = f"{path}: {text}"
            tqdm.write(f"bloodseg: failed: {text}", file=sys.stderr)
    if failed:
        print(f"bloodseg: {len(failed)} of {len(inputs)} images failed", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bloodseg", description="Ten-class blood smear segmentation.")
    p.add_argument("--version", action="version", version=f"napari-bloodseg {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("segment", help="segment smear images into class-id maps")
    s.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders of images")
    s.add_argument("--out", required=True, metavar="DIR", help="output folder")
    s.add_argument("--model", default=None, metavar="PATH", help="checkpoint (default: the model shipped with the package)")
    s.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    s.add_argument("--rbc-diameter", type=positive_float, default=None, metavar="PX",
                   help="healthy red cell diameter in input pixels (default: estimated per image)")
    s.add_argument("--batch-size", type=int, default=4, help="tiles per forward pass")
    s.add_argument("--tta", default="none", choices=["none", "flip", "d4"],
                   help="test-time augmentation: average over a mirror (flip, 2x time) or all 8 flips/rotations "
                        "(d4, 8x time); a little more accurate")
    s.add_argument("--report", action="store_true", help="also write <stem>_cells.csv and <stem>_summary.json")
    s.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_segment)

    from .bank.cli import add_parser as add_bank
    from .synth_cli import add_parser as add_synth
    from .train_cli import add_parser as add_train

    for add in (add_bank, add_synth, add_train):
        add(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
