"""Synthesizer throughput: images/s written with masks, labels JSON and (at the end) COCO.

    .venv/bin/python benchmarks/bench_synth.py [--n 300] [--workers 1 2] [--bank DIR] [--keep DIR]

Two parts:
1. Breakdown, in this process: where one image's time goes (RBC field share, per-tile compose,
   PNG encode, labels JSON, COCO RLE, file writes), as CPU milliseconds per image.
2. End to end: ``synthesize()`` with each worker count: wall-clock images/s, and CPU seconds per
   image (this process + its workers) → the rate the same work would reach on free cores.

On a shared machine wall-clock figures are bounded by whatever else runs: the load average is
printed before and after, and the CPU-time figures are the steadier ones.
Without --bank a procedural pool is used (16 sprites per class and split).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from napari_bloodseg.synth import (  # noqa: E402
    SamplePool,
    SynthConfig,
    encode_png,
    synthesize,
)
from napari_bloodseg.synth.compose import _Composer  # noqa: E402
from napari_bloodseg.synth.writer import _atomic_write  # noqa: E402


def _cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def breakdown(pool: SamplePool, n: int, cfg: SynthConfig, tmp: Path) -> dict[str, float]:
    """CPU ms per image for each stage (single process)."""
    comp = _Composer(pool, 7, cfg, field_cache=1)
    split = "train"
    (tmp / "images").mkdir(parents=True)
    (tmp / "masks").mkdir()
    (tmp / "labels").mkdir()
    t = dict.fromkeys(("field", "compose", "coco_rle", "png_image", "png_mask", "labels_json", "write"), 0.0)
    clock = time.process_time
    for i in range(n):
        f = i // cfg.crops_per_field
        if i % cfg.crops_per_field == 0:
            c0 = clock()
            comp.field(split, f)
            t["field"] += clock() - c0
        c0 = clock()
        si = comp.image(split, i, n, rle=False)
        c1 = clock()
        from napari_bloodseg.synth import instance_table

        instance_table(si.instances, len(si.objects))
        c2 = clock()
        png_i = encode_png(si.image, cfg.png_level)
        c3 = clock()
        png_m = encode_png(si.mask, cfg.png_level)
        c4 = clock()
        lab = si.labels_bytes()
        c5 = clock()
        _atomic_write(tmp / "images" / f"{si.id}.png", png_i)
        _atomic_write(tmp / "masks" / f"{si.id}.png", png_m)
        _atomic_write(tmp / "labels" / f"{si.id}.json", lab)
        c6 = clock()
        t["compose"] += c1 - c0
        t["coco_rle"] += c2 - c1
        t["png_image"] += c3 - c2
        t["png_mask"] += c4 - c3
        t["labels_json"] += c5 - c4
        t["write"] += c6 - c5
    return {k: v / n * 1e3 for k, v in t.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=300, help="images per run (default 300)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--bank", default=None, help="sample bank folder (default: procedural sprites)")
    ap.add_argument("--per-class", type=int, default=16, help="procedural sprites per class and split")
    ap.add_argument("--repeat", type=int, default=1, help="end-to-end runs per worker count (best and median shown)")
    ap.add_argument("--allow-missing", action="store_true", help="a bank lacking some classes")
    ap.add_argument("--keep", default=None, help="write the sets here (default: a temporary folder, removed)")
    ap.add_argument("--no-breakdown", action="store_true")
    args = ap.parse_args(argv)

    pool = SamplePool.from_bank_dir(args.bank) if args.bank else SamplePool.procedural(args.per_class, seed=0)
    pool.preload(["train"])  # load/render once: not part of the synthesis rate
    cfg = SynthConfig()
    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_synth_"))
    print(f"pool: {pool.kind} ({len(pool)} samples); {args.n} images of 224x224; field {cfg.field_size}px, "
          f"{cfg.crops_per_field} crops per field; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}")
    try:
        if not args.no_breakdown:
            bd = breakdown(pool, args.n, cfg, base / "breakdown")
            total = sum(bd.values())
            print(f"\nbreakdown (1 process, CPU ms per image; total {total:.1f} ms → {1e3 / total:.0f} images/s per core):")
            for k, v in bd.items():
                print(f"  {k:12s} {v:6.2f} ms  {100 * v / total:4.0f} %")
        print("\nend to end (synthesize: images + masks + labels JSON + COCO per split):")
        print(f"  {'workers':>7s} {'images/s best':>14s} {'median':>7s} {'CPU ms/img min':>15s} {'free-core bound':>16s}  load avg")
        for w in args.workers:
            out = base / f"set_w{w}"
            rates, pers = [], []
            for _ in range(max(1, args.repeat)):
                s0, c0, t0 = _cpu_self(), _cpu_children(), time.perf_counter()
                r = synthesize(pool, out, {"train": args.n}, seed=1, workers=w, config=cfg, overwrite=True,
                               allow_missing=args.allow_missing)
                wall = time.perf_counter() - t0
                rates.append(r["images"] / wall)
                pers.append(((_cpu_self() - s0) + (_cpu_children() - c0)) / args.n * 1e3)
            per = min(pers)
            bound = min(w, os.cpu_count() or 1) * 1e3 / per
            med = sorted(rates)[len(rates) // 2]
            print(f"  {w:7d} {max(rates):14.1f} {med:7.1f} {per:15.2f} {bound:13.0f}/s  {os.getloadavg()[0]:.2f}")
        coco = base / f"set_w{args.workers[-1]}" / "train" / "coco.json"
        print(f"\nCOCO file: {coco.stat().st_size / 1e6:.1f} MB for {args.n} images; "
              f"images folder {sum(p.stat().st_size for p in coco.parent.joinpath('images').iterdir()) / args.n / 1e3:.0f} kB per image")
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
