"""`make demo`: render the sample smear, segment it with the shipped default model, write the
labels, colour and overlay PNGs, and print per-class pixel counts and where the files are."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from napari_bloodseg.checkpoint import DEFAULT_MODEL
from napari_bloodseg.classes import CLASS_NAMES, colorize, overlay
from napari_bloodseg.infer import Segmenter
from napari_bloodseg.io import write_png
from napari_bloodseg.metrics import confusion_matrix, scores
from napari_bloodseg.render import sample_smear


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="demo_output")
    args = ap.parse_args()
    out = Path(args.out)
    smear = sample_smear()
    t0 = time.time()
    seg = Segmenter.from_file(None, device="auto")
    result = seg.segment(smear.image)
    dt = time.time() - t0
    files = {
        "image": write_png(out / "sample_smear.png", smear.image, overwrite=True),
        "labels": write_png(out / "sample_smear_labels.png", result.labels, overwrite=True),
        "colour map": write_png(out / "sample_smear_color.png", colorize(result.labels), overwrite=True),
        "overlay": write_png(out / "sample_smear_overlay.png", overlay(smear.image, result.labels), overwrite=True),
        "ground truth": write_png(out / "sample_smear_truth.png", smear.mask, overwrite=True),
    }
    print(f"model: {DEFAULT_MODEL.name} on {seg.device}; RBC diameter {result.rbc_diameter:.1f} px (estimated); {dt:.1f} s")
    counts = np.bincount(result.labels.ravel(), minlength=len(CLASS_NAMES))
    truth = np.bincount(smear.mask.ravel(), minlength=len(CLASS_NAMES))
    print(f"{'class':<16}{'pixels':>10}{'truth':>10}")
    for name, c, t in zip(CLASS_NAMES, counts, truth):
        print(f"{name:<16}{c:>10}{t:>10}")
    s = scores(confusion_matrix(result.labels, smear.mask))
    print(f"pixel accuracy vs ground truth {s['pixel_accuracy']:.3f}, mIoU {s['miou']:.3f}")
    for k, p in files.items():
        print(f"{k:<13}{p.resolve()}")


if __name__ == "__main__":
    main()
