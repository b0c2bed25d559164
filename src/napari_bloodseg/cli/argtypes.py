"""argparse value types and option texts shared by the `bloodseg` subcommands (one clear message each)."""

from __future__ import annotations

import argparse


def count(text: str) -> int:
    """A whole number >= 0."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {v}")
    return v


def positive_int(text: str) -> int:
    """A whole number >= 1."""
    v = count(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def positive_float(text: str) -> float:
    """A number of pixels > 0."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of pixels, got {text!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return v


BACKENDS = ["auto", "torch", "openvino"]
BACKEND_HELP = ("what runs the network: torch, or OpenVINO (CPU only, faster than torch on most CPUs; "
                "pip install 'napari-bloodseg[openvino]'); auto = OpenVINO on the CPU when it is installed, "
                "except torch bf16 on CPUs with Intel AMX (faster there), else torch, and always torch on a "
                "CUDA or MPS GPU (default: %(default)s)")


def names(text: str) -> list[str]:
    """Comma-separated names (class names, slides, images)."""
    out = [n.strip() for n in text.split(",") if n.strip()]
    if not out:
        raise argparse.ArgumentTypeError("expected comma-separated names, e.g. neutrophil,lymphocyte")
    return out


def add_box_set_options(p: argparse.ArgumentParser, held_out_goes: str, prefix: str = "") -> None:
    """--box-classes, --group-by, --hold-out of the commands that read a box set (yolo / boxes-csv)."""
    p.add_argument("--box-classes", type=names, default=None, metavar="NAMES",
                   help=f"{prefix}yolo: the class of each YOLO id 0, 1, ... in order, comma separated, e.g. "
                   "neutrophil,eosinophil,basophil,lymphocyte,monocyte (default: data.yaml or classes.txt in SRC)")
    p.add_argument("--group-by", choices=("image", "slide"), default="image",
                   help=f"{prefix}what one split unit (and a --hold-out name) is: each image, or each slide (the file "
                   "name up to a trailing _<number>: B-30_0047 is slide B-30) (default: %(default)s)")
    p.add_argument("--hold-out", type=names, default=None, metavar="NAMES",
                   help=f"{prefix}images or slides, comma separated, {held_out_goes}")
