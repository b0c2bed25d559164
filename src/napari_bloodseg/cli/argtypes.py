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
