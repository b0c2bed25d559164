"""`bloodseg` command line: thin layer over the core modules (see DESIGN.md for the contract)."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from .. import __version__
from .argtypes import BACKEND_HELP, BACKENDS, positive_float, positive_int


def _warn(text: str) -> None:
    """One ``bloodseg: warning:`` line on stderr, through tqdm so progress bars stay intact."""
    from tqdm import tqdm

    tqdm.write(f"bloodseg: warning: {text}", file=sys.stderr)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """``warnings.showwarning`` for the command line: one line, no source location."""
    _warn(" ".join(str(message).split()))


def cmd_segment(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..checkpoint import CheckpointError
    from ..classes import color_palette
    from ..infer import Prepared, ScaleMethod, Segmenter, prepare_image
    from ..io import expand_inputs, read_image, read_pixel_size, write_png
    from ..pipeline import WarningsByKey, prefetch
    from ..slide_report import (
        SUMMARY_CSV,
        SUMMARY_JSON,
        run_line,
        run_summary,
        write_run_summary,
    )

    out = Path(args.out)
    run_json, run_csv = out / SUMMARY_JSON, out / SUMMARY_CSV
    if args.report and not args.overwrite:
        taken = [p for p in (run_json, run_csv) if p.exists()]
        if taken:
            print(f"bloodseg: error: {taken[0]} already exists (use --overwrite to replace it)", file=sys.stderr)
            return 2
    try:
        seg = Segmenter.from_file(args.model, device=args.device, batch_size=args.batch_size, tta=args.tta,
                                  scale_method=args.scale_method, backend=args.backend,
                                  tighten_wbcs=not args.raw_map)
    except (CheckpointError, ValueError) as e:
        print(f"bloodseg: error: {e}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    inputs = expand_inputs(args.images)
    if not inputs:
        print("bloodseg: error: no images found in the given paths", file=sys.stderr)
        return 2
    failed: list[str] = []
    seen: set[str] = set()
    summaries: list[tuple[str, dict]] = []
    estimated: list[float] = []  # per-image estimates, for the --shared-scale hint
    diameter = args.rbc_diameter or (RBC_MICRONS / args.pixel_size if args.pixel_size else None)
    caught = WarningsByKey()
    shared = None
    if args.shared_scale and diameter is None:
        shared = _shared_scale(seg, inputs, args.quiet)
    scale_without_network = diameter is not None or shared is not None or seg.scale_method is ScaleMethod.CLASSICAL

    def load(path: Path) -> tuple[list[Path], object, object]:
        """Checks, read, convert and (when no network is needed for the scale) rescale: runs in a
        thread while the model segments the image before."""
        if path.stem in seen:
            raise ValueError(f"{path}: another input has the same name '{path.stem}'; outputs would collide")
        seen.add(path.stem)
        targets = [out / f"{path.stem}_labels.png", out / f"{path.stem}_color.png"]
        if args.report:
            targets += [out / f"{path.stem}_cells.csv", out / f"{path.stem}_summary.json"]
        clash = [t for t in targets if t.exists()]
        if clash and not args.overwrite:
            raise ValueError(f"{path}: {clash[0]} already exists (use --overwrite to replace)")
        with caught.under(path):
            image = read_image(path)
            d, how = diameter, None
            if d is None:
                file_um = read_pixel_size(path)  # the file's own pixel size beats any estimate
                if file_um is not None:
                    d, how = RBC_MICRONS / file_um, f"pixel size {file_um:g} µm (file)"
                elif shared is not None:
                    d, how = shared.diameter, shared.method_text()
            prep = seg.prepare(image, d) if d is not None or scale_without_network else prepare_image(image)
            return targets, image, prep, how

    bar = tqdm(total=0, desc="segment", unit="tile", disable=args.quiet, leave=False, file=sys.stderr)
    tiles_known = images_known = 0
    with caught:
        for k, (path, loaded) in enumerate(prefetch(inputs, load)):
            try:
                with caught.under(path):
                    targets, image, prep, file_scale = loaded.result()
                    if not isinstance(prep, Prepared):
                        prep = seg.prepare(prep, None)  # the network measures the RBCs
                    # the bar counts tiles over the run; images not yet read are guessed at the mean so far
                    tiles_known, images_known = tiles_known + seg.count_tiles(*prep.scaled.shape[:2]), images_known + 1
                    bar.total = tiles_known + round((len(inputs) - k - 1) * tiles_known / images_known)
                    base = bar.n
                    result = seg.segment(prep, progress=lambda done, total: bar.update(base + done - bar.n))
                    if args.pixel_size and not args.rbc_diameter:
                        result.rbc_scale_method = f"pixel size {args.pixel_size:g} µm"
                    elif file_scale:
                        result.rbc_scale_method = file_scale
                for text in caught.pop(path):
                    _warn(f"{path}: {text}")
                write_png(targets[0], result.labels, overwrite=True)
                write_png(targets[1], result.labels, overwrite=True, palette=color_palette())
                msg = f"{path.name}: RBC diameter {result.rbc_diameter_text()}"
                if result.rbc_diameter_estimated:
                    estimated.append(result.rbc_diameter)
                if args.report:
                    from ..cells import write_report

                    summary = write_report(result, image, targets[2], targets[3])
                    summaries.append((path.name, summary))
                    msg += f", {summary['counts_total']} cells"
                if result.rbc_diameter_uncertain:  # one line per image: the warning says it all
                    _warn(f"{path}: RBC diameter {result.rbc_diameter_text()} (--rbc-diameter PX)"
                          + (f"; {summary['counts_total']} cells" if args.report else ""))
                elif not args.quiet:
                    tqdm.write(msg)
            except (ValueError, OSError) as e:
                caught.pop(path)
                failed.append(str(path))
                text = str(e)
                if str(path) not in text:
                    text = f"{path}: {text}"
                tqdm.write(f"bloodseg: failed: {text}", file=sys.stderr)
            finally:
                loaded = image = prep = result = None  # free this image before the next one is read
    bar.close()
    hint = _shared_scale_hint(estimated)
    if hint and not args.quiet:
        tqdm.write(hint)
    if args.report and summaries:
        report = run_summary(summaries, failed, shared.as_dict() if shared is not None else None)
        try:
            write_run_summary(report, run_json, run_csv, overwrite=args.overwrite)
        except OSError as e:
            print(f"bloodseg: error: could not write the run summary: {e}", file=sys.stderr)
            return 2
        if not args.quiet:
            print(f"run summary in {run_json} and {run_csv.name}: {run_line(report)}")
    if failed:
        print(f"bloodseg: {len(failed)} of {len(inputs)} images failed", file=sys.stderr)
        return 1
    return 0


SHARED_HINT_SPREAD = 1.2  # quartile ratio of per-image estimates above which --shared-scale is suggested


def _shared_scale_hint(estimated: list[float]) -> str | None:
    """A line suggesting --shared-scale when four or more images were each estimated and their
    estimates scatter (one microscope's fields agree to a few percent; single estimates do not)."""
    from ..autoscale import shared_scale

    if len(estimated) < 4:
        return None
    s = shared_scale(estimated)
    if s.spread <= SHARED_HINT_SPREAD:
        return None
    lo, hi = s.quartiles
    return (f"RBC diameters estimated per image scatter (quartiles {lo:.1f}-{hi:.1f} px): if these images come "
            f"from one microscope at one magnification, --shared-scale segments them all at the median "
            f"({s.diameter:.1f} px), which is far steadier")


def _shared_scale(seg, inputs: list[Path], quiet: bool):
    """``--shared-scale``: the median of the RBC diameters estimated on each input (files that store
    their pixel size keep it and are left out); None when no image gave an estimate."""
    from tqdm import tqdm

    from ..autoscale import SHARED_DOUBT_TEXT, shared_scale
    from ..infer import prepare_image
    from ..io import read_image, read_pixel_size

    estimates = []
    for path in tqdm(inputs, desc="RBC diameter", unit="image", disable=quiet, leave=False, file=sys.stderr):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # shown once, when the image itself is segmented
                if read_pixel_size(path) is None:
                    estimates.append(seg.estimate_rbc_diameter(prepare_image(read_image(path)))[0])
        except (ValueError, OSError):
            pass  # reported when the image itself is segmented
    if not estimates:
        _warn("--shared-scale: no image gave an RBC diameter estimate; each image is estimated on its own")
        return None
    shared = shared_scale(estimates)
    line = f"RBC diameter {shared.diameter:.1f} px for every image: {shared.text()}"
    if shared.doubtful:
        _warn(f"{line}; {SHARED_DOUBT_TEXT}, or give --rbc-diameter")
    elif not quiet:
        tqdm.write(line)
    return shared


from ..io import RBC_MICRONS  # noqa: E402 - a healthy RBC's diameter (µm), for --pixel-size


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bloodseg", description="Ten-class blood smear segmentation.")
    p.add_argument("--version", action="version", version=f"napari-bloodseg {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("segment", help="segment smear images into class-id maps",
                       description="Writes DIR/<stem>_labels.png (uint8 class ids) and DIR/<stem>_color.png per image.")
    s.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders of images (not recursive)")
    s.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    s.add_argument("--model", default=None, metavar="PATH",
                   help="checkpoint (.safetensors) to segment with (default: the model shipped with the package)")
    s.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                   help="where the model runs; auto = CUDA GPU, else Apple MPS, else CPU (default: %(default)s)")
    s.add_argument("--backend", default="auto", choices=BACKENDS, help=BACKEND_HELP)
    s.add_argument("--rbc-diameter", type=positive_float, default=None, metavar="PX",
                   help="healthy red cell diameter in input pixels (default: from the pixel size a TIFF/OME-TIFF "
                        "stores, else estimated per image)")
    s.add_argument("--pixel-size", type=positive_float, default=None, metavar="UM",
                   help=f"micrometres per input pixel; the RBC diameter is then {RBC_MICRONS:g} µm / UM "
                        "(default: the pixel size a TIFF/OME-TIFF stores, else estimated per image; --rbc-diameter "
                        "wins if both are given)")
    s.add_argument("--shared-scale", action="store_true",
                   help="the images come from one microscope at one magnification: estimate the RBC diameter on "
                        "each and segment them all at the median (far more reliable than one image's estimate, "
                        "above all on WBC-centred crops with few RBCs; a file's stored pixel size still wins; "
                        "ignored with --rbc-diameter or --pixel-size)")
    s.add_argument("--scale-method", default="network", choices=["network", "classical"],
                   help="how an unknown RBC diameter is estimated: 'network' measures the RBCs the model finds at a few "
                        "candidate scales, 'classical' the isolated round cells found by thresholds (default: %(default)s)")
    s.add_argument("--raw-map", action="store_true",
                   help="write the class map as the network draws it (its arg-max): no tightening of the WBCs (by "
                        "default a pixel is WBC only where the WBC classes hold 75 %% of the probability, and thin "
                        "WBC-class spurs and a rim of 0.04 RBC diameters are given to the neighbouring class; a pixel "
                        "is a platelet only where the platelet classes hold 80 %% of it, else glass or RBC)")
    s.add_argument("--batch-size", type=positive_int, default=4, metavar="N",
                   help="224 px tiles per forward pass; larger is faster on a GPU, needs more memory (default: %(default)s)")
    s.add_argument("--tta", default="none", choices=["none", "flip", "d4"],
                   help="test-time augmentation: average over a mirror (flip, 2x time) or all 8 flips/rotations "
                        "(d4, 8x time); a little more accurate (default: %(default)s)")
    s.add_argument("--report", action="store_true",
                   help="also count cells: <stem>_cells.csv and <stem>_summary.json per image, and summary.json + "
                        "summary.csv over the whole run (differential, parasitemia with 95%% CI, flags)")
    s.add_argument("--overwrite", action="store_true", help="replace existing outputs (default: keep them; that image fails)")
    s.add_argument("-q", "--quiet", action="store_true",
                   help="for scripts: no progress bar and no per-image lines; only warnings and errors")
    s.set_defaults(func=cmd_segment)

    from .bank import add_parser as add_bank
    from .pairs import add_parser as add_pairs
    from .synth import add_parser as add_synth
    from .train import add_parser as add_train

    for add in (add_bank, add_synth, add_pairs, add_train):
        add(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning  # any other warning: one `bloodseg: warning:` line too
        return int(args.func(args) or 0)

