"""Whole-field time of the naive reference and the default path, in one process, interleaved.

    python benchmarks/bench_tiles.py [--repeats 3] [--sizes 1000,2048]

Four segmenters of the shipped model: torch eager fp32 with tiles of 224 (the naive reference,
the layout before issue 14), OpenVINO with tiles of 224 (the default before issue 14), the torch
default path and the default (backend 'auto') with the default tiles (Segmenter's SEGMENT_TILE).
Each field is segmented once by each as a warm-up, then ``--repeats`` rounds of all of them in
turn; prints median seconds and the median per-round ratio to the reference, with the load
average after each round. (bench_infer.py runs each field in a fresh process for its peak
memory; at a load of 3-7 on a 2-core VM those child processes timed OpenVINO with 224 px tiles
up to 3x slower than this in-process loop, for reasons not found.)
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from napari_bloodseg.checkpoint import load_checkpoint
from napari_bloodseg.infer import Segmenter
from napari_bloodseg.render import render_smear

REFERENCE = "torch eager fp32, tile 224"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sizes", default="1000,2048")
    args = ap.parse_args()
    model, info = load_checkpoint(None)
    segs = {REFERENCE: Segmenter(model, info, "cpu", backend="torch", fast=False, precision="fp32", tile=224),
            "default backend, tile 224": Segmenter(model, info, "cpu", tile=224),
            "torch default": Segmenter(model, info, "cpu", backend="torch"),
            "default (auto)": Segmenter(model, info, "cpu")}
    imgs = {s: render_smear((s, s), seed=1).image for s in map(int, args.sizes.split(","))}
    for img in imgs.values():
        for seg in segs.values():
            seg.segment(img, rbc_diameter=36.0)
    times: dict[tuple[str, int], list[float]] = {}
    for _ in range(args.repeats):
        for s, img in imgs.items():
            for k, seg in segs.items():
                t0 = time.perf_counter()
                seg.segment(img, rbc_diameter=36.0)
                times.setdefault((k, s), []).append(time.perf_counter() - t0)
        print(f"# round done, load {os.getloadavg()[0]:.2f}", flush=True)
    for s in imgs:
        for k, seg in segs.items():
            ratio = np.median([a / b for a, b in zip(times[REFERENCE, s], times[k, s])])
            print(f"{s}x{s} {k:<27} {seg.backend_text:<14} tile {seg.tile:<5} {np.median(times[k, s]):6.2f} s  x{ratio:.2f}"
                  f"  ({seg.count_tiles(s, s)} tiles)")


if __name__ == "__main__":
    main()
