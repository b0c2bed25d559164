"""`bloodseg synth`: compose a training set from a sample bank (or procedural sprites).

Imported by cli/__init__.py for every command, so it imports nothing heavy at module level.
"""

from __future__ import annotations

import argparse
import os
import sys

from .argtypes import count, positive_int


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "synth",
        help="compose a training set (images, masks, labels JSON, COCO) from a sample bank",
        description="Composite 224x224 training tiles the way the reference work did: RBC background fields "
        "(infected / healthy / mixed), random crops, WBC, thrombocyte and clump samples affixed at random "
        "positions and rotations. Writes OUT/synth.json and OUT/<split>/{images,masks,labels}/<id>.* and "
        "OUT/<split>/coco.json. The same seed gives byte-identical output with any --workers.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--bank", metavar="DIR", help="sample bank folder (manifest.csv + one RGBA PNG per cell)")
    src.add_argument("--procedural", action="store_true", help="use rendered sprites (render.render_cell) instead of a bank")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (new or empty; see --overwrite)")
    p.add_argument("--preset", choices=["small", "reference"], default="small",
                   help="image counts train/val/test: small = 200/40/40, reference = 65350/6560/6560 (the reference work's) "
                        "(default: %(default)s)")
    p.add_argument("--train", type=count, default=None, metavar="N", help="training images (default: the preset's)")
    p.add_argument("--val", type=count, default=None, metavar="N", help="validation images (default: the preset's)")
    p.add_argument("--test", type=count, default=None, metavar="N", help="test images (default: the preset's)")
    p.add_argument("--seed", type=count, default=0, metavar="S", help="random seed; the same seed gives byte-identical output (default: %(default)s)")
    p.add_argument("--workers", type=positive_int, default=min(os.cpu_count() or 1, 8), metavar="N",
                   help="worker processes; output does not depend on it (default: CPU count, at most 8: %(default)s here)")
    p.add_argument("--allow-missing", action="store_true",
                   help="synthesize even if the bank lacks some classes in some splits (they are left out; default: refuse)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier synthesized set in --out (default: refuse)")
    p.add_argument("--per-class", type=positive_int, default=16, metavar="N",
                   help="--procedural: sprites per class and split (default: %(default)s)")
    p.add_argument("--plain", action="store_true", help="turn the realism knobs off: no stain/colour jitter, gradient, blur, noise, scale jitter (default: on)")
    p.add_argument("--field-size", type=positive_int, default=None, metavar="PX", help="side of the square RBC background fields tiles are cropped from (default: 1000)")
    p.add_argument("--crops-per-field", type=positive_int, default=None, metavar="N", help="tiles cropped from each background field (default: 32)")
    p.add_argument("--platelet-size", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                   help="thrombocyte diameter range in RBC diameters: a larger sample is shrunk to a random size in it "
                        "(normal platelets are 2-3 µm against 7.5 µm for an RBC; PBC's platelet images show large "
                        "ones, ~0.7). 0 0: every sample at its own size (default: 0.2 0.5)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no closing summary line")
    p.set_defaults(func=cmd_synth)
    return p


def cmd_synth(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..synth import (
        DEFAULT_COUNTS,
        REFERENCE_COUNTS,
        SamplePool,
        SynthConfig,
        format_missing,
        iter_synthesize,
        missing_classes,
    )

    counts = dict(REFERENCE_COUNTS if args.preset == "reference" else DEFAULT_COUNTS)
    for sp in ("train", "val", "test"):
        if getattr(args, sp) is not None:
            counts[sp] = getattr(args, sp)
    if not any(counts.values()):
        print("bloodseg: error: nothing to synthesize (all counts are 0)", file=sys.stderr)
        return 2
    try:
        kw = {}
        if args.field_size is not None:
            kw["field_size"] = args.field_size
        if args.crops_per_field is not None:
            kw["crops_per_field"] = args.crops_per_field
        if args.platelet_size is not None:
            lo, hi = args.platelet_size
            if (lo, hi) != (0.0, 0.0) and not 0 < lo <= hi:
                raise ValueError(f"--platelet-size needs 0 < LOW <= HIGH (RBC diameters), or 0 0 to keep each "
                                 f"sample's own size; got {lo:g} {hi:g}")
            kw["thrombocyte_size"] = None if (lo, hi) == (0.0, 0.0) else (lo, hi)
        config = SynthConfig.plain(**kw) if args.plain else SynthConfig(**kw)
        pool = SamplePool.procedural(args.per_class, seed=args.seed) if args.procedural else SamplePool.from_bank_dir(args.bank)
    except ValueError as e:
        print(f"bloodseg: error: {e}", file=sys.stderr)
        return 2
    lack = missing_classes(pool, counts)
    if lack and not args.allow_missing:
        print(
            f"bloodseg: error: the bank lacks samples of some classes — {format_missing(lack)}. "
            "Add them to the bank, or pass --allow-missing to synthesize without them.",
            file=sys.stderr,
        )
        return 2
    if lack:
        print(f"bloodseg: warning: synthesizing without {format_missing(lack)}", file=sys.stderr)
    total = sum(counts.values())
    gen = iter_synthesize(pool, args.out, counts, seed=args.seed, workers=args.workers, config=config,
                          overwrite=args.overwrite, allow_missing=args.allow_missing)
    bar = None
    summary = None
    try:
        next(gen)  # checks, output folder, worker processes (forked before tqdm starts its monitor thread)
        bar = tqdm(total=total, desc="synth", unit="image", disable=args.quiet)
        while True:
            try:
                done, _ = next(gen)
            except StopIteration as stop:
                summary = stop.value
                break
            bar.update(done - bar.n)
    except (ValueError, FileExistsError, OSError) as e:
        if bar is not None:
            bar.close()
        print(f"bloodseg: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        gen.close()
        if bar is not None:
            bar.close()
        print(f"bloodseg: interrupted; {args.out} is incomplete", file=sys.stderr)
        return 130
    bar.close()
    if not args.quiet:
        parts = ", ".join(f"{sp} {n}" for sp, n in summary["counts"].items())
        print(f"wrote {summary['images']} images to {summary['out']} ({parts}) in {summary['seconds']:.1f} s "
              f"({summary['images_per_s']:.0f} images/s)")
    return 0
