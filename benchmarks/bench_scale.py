"""Automatic scale on real fields: the RBC-diameter estimate against the truth from boxes,
points or masks (issue "Automatic scale that is right on real fields"), and its cost.

    python benchmarks/bench_scale.py [--model CKPT] [--per-source N] [--sources a,b] [--shared-batch B]
                                     [--method network|classical] [--rescale F,F,...] [--camera phone]
                                     [--out scale.json]

Only the estimate runs (no segmentation), so all held-out fields of a source can be measured in
seconds each. Per source: fraction of fields within ±15 % of the truth, median relative error,
and the worst fields. With ``--rescale``, each field is also resized by each factor (another
objective or camera: the truth scales with it) and scored again, under ``rescaled``. With ``--camera
phone`` every field (resized or not) is first taken as a phone through the eyepiece would take it
(realmetrics.phone_camera, as ``bench_real.py --camera``). Cost: mean
estimate time against segmenting a 1000×1000 rendered field at a given scale, measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from napari_bloodseg import realmetrics
from napari_bloodseg.cli.argtypes import BACKEND_HELP, BACKENDS
from napari_bloodseg.realfields import SOURCES, default_data_dir


def _round3(v: float | None) -> float | None:
    return None if v is None else round(float(v), 3)


def cost_ratio(seg, repeats: int = 3) -> dict:
    """Estimate time / segmentation time on a 1000×1000 rendered field (median of ``repeats``)."""
    from napari_bloodseg.render import render_smear

    rgb = render_smear((1000, 1000), rbc_diameter=40.0, seed=0).image
    seg.segment(rgb, 40.0)  # warm-up
    est, full = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        seg.estimate_rbc_diameter(rgb)
        est.append(time.perf_counter() - t)
        t = time.perf_counter()
        seg.segment(rgb, 40.0)
        full.append(time.perf_counter() - t)
    e, f = float(np.median(est)), float(np.median(full))
    return {"estimate_s": round(e, 3), "segment_s": round(f, 3), "ratio": round(e / f, 3)}


def rescale_factors(text: str) -> list[float]:
    """'0.5,2' → [0.5, 2.0]; each factor in (0, 8]."""
    try:
        factors = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected factors like 0.5,2 — got {text!r}") from None
    if not factors or not all(0 < f <= 8 for f in factors):
        raise argparse.ArgumentTypeError(f"each factor must be in (0, 8], got {text!r}")
    return factors


def estimate_rows(seg, chosen, factor: float = 1.0,
                  camera: realmetrics.Camera | None = None) -> tuple[list[dict], list[float]]:
    """Per field: truth, estimate, cells, method, relative error (fields resized by ``factor``, then
    taken by ``camera``)."""
    from napari_bloodseg.infer import _resize_uint8

    rows, times = [], []
    for f in chosen:
        try:
            rgb = f.image()
        except ValueError:
            continue
        if factor != 1.0:
            h, w = rgb.shape[:2]
            rgb = _resize_uint8(rgb, max(8, round(h * factor)), max(8, round(w * factor)), smooth=True)
        if camera is not None:
            rgb = camera(rgb, f.name)
        truth = f.rbc_diameter * factor
        t = time.perf_counter()
        d, n, how = seg.estimate_rbc_diameter(rgb)
        times.append(time.perf_counter() - t)
        rows.append({"field": f.name, "truth": round(truth, 1), "estimate": round(d, 1), "cells": n,
                     "method": how, "err": round(realmetrics.scale_error(d, truth), 3)})
    return rows, times


def _within(rows: list[dict]) -> tuple[float | None, float | None]:
    errs = [r["err"] for r in rows]
    if not errs:
        return None, None
    return round(float(np.mean([e <= 0.15 for e in errs])), 3), round(float(np.median(errs)), 3)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="checkpoint (default: the shipped model)")
    ap.add_argument("--data", type=Path, default=None, help="shared data folder (default ../shared/data)")
    ap.add_argument("--out", type=Path, default=Path("scale.json"))
    ap.add_argument("--per-source", type=int, default=30, help="fields per source (default: %(default)s)")
    ap.add_argument("--sources", default=",".join(SOURCES), help="comma-separated subset of " + ",".join(SOURCES))
    ap.add_argument("--method", default="network", choices=["network", "classical"])
    ap.add_argument("--shared-batch", type=int, default=10,
                    help="also score runs of this many fields (in name order) segmented at one shared scale, the median "
                         "of their estimates, as `bloodseg segment --shared-scale` does; 0: not (default: %(default)s)")
    ap.add_argument("--rescale", type=rescale_factors, default=[],
                    help="also score every field resized by each of these factors, e.g. 0.5,2 (another objective or "
                         "camera; the truth scales with it): JSON key 'rescaled' (default: none)")
    ap.add_argument("--camera", default="none", choices=sorted(realmetrics.CAMERAS),
                    help="estimate on the fields as this camera takes them ('phone': through the eyepiece; "
                         "default: as recorded)")
    ap.add_argument("--no-cost", action="store_true", help="skip the cost measurement")
    ap.add_argument("--backend", default="auto", choices=BACKENDS, help=BACKEND_HELP)
    args = ap.parse_args(argv)

    from napari_bloodseg.infer import Segmenter

    data = args.data or default_data_dir()
    if not data.is_dir():
        ap.error(f"no data folder {data}")
    seg = Segmenter.from_file(args.model, "cpu", scale_method=args.method, backend=args.backend)
    camera = realmetrics.CAMERAS[args.camera]
    result: dict = {"model": str(args.model or "default"), "method": args.method, "backend": seg.backend_text,
                    **({"camera": args.camera} if camera else {}), "sources": {}}
    for source in [s.strip() for s in args.sources.split(",") if s.strip()]:
        fields = [f for f in realmetrics.heldout_fields(source, data) if f.rbc_diameter]
        chosen = realmetrics.select_fields(fields, args.per_source)
        rows, times = estimate_rows(seg, chosen, camera=camera)
        within, err_median = _within(rows)
        summary = {"n": len(rows), "within_15pct": within, "err_median": err_median}
        shared = ""
        if args.shared_batch > 0:
            key = f"within_15pct_shared{args.shared_batch}"
            summary[key] = _round3(realmetrics.shared_scale_within(
                [r["field"] for r in rows], [r["estimate"] for r in rows], [r["truth"] for r in rows], args.shared_batch))
            shared = f"  shared x{args.shared_batch} {summary[key]}"
        summary.update({"seconds_per_field": round(float(np.mean(times)), 3) if times else None,
                        "worst": sorted(rows, key=lambda r: -r["err"])[:5], "fields": rows})
        result["sources"][source] = summary
        print(f"{source:<15} n {summary['n']:>3}  within15 {summary['within_15pct']}{shared}"
              f"  median err {summary['err_median']}  {summary['seconds_per_field']} s/field", flush=True)
        for r in summary["worst"][:3]:
            print(f"    {r['field']}: truth {r['truth']} est {r['estimate']} ({r['cells']} cells, {r['method']})")
        for factor in args.rescale:
            within, err_median = _within(estimate_rows(seg, chosen, factor, camera)[0])
            result.setdefault("rescaled", {}).setdefault(source, {})[str(factor)] = {
                "within_15pct": within, "err_median": err_median}
            print(f"    resized x{factor}: within15 {within}  median err {err_median}", flush=True)
    if not args.no_cost:
        result["cost"] = cost_ratio(seg)
        print(f"cost: estimate {result['cost']['estimate_s']} s, segment 1000x1000 {result['cost']['segment_s']} s,"
              f" ratio {result['cost']['ratio']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
