"""Real-field benchmark: the model on annotated real fields it never trained on (DESIGN.md,
"Real-world evaluation").

    python benchmarks/bench_real.py [--model CKPT] [--data DIR] [--out real.json] [--sheet DIR]
                                    [--per-source N] [--sources a,b] [--tta none] [--quick]
                                    [--tile PX] [--shared-batch B] [--camera phone]

For every source of napari_bloodseg.realfields (held-out fields only; an evenly spread subset,
stratified by WBC type for wbc_rpi) each field is segmented at automatic and at given (truth) RBC
scale and scored (napari_bloodseg.realmetrics), and then in runs of B fields (name order) at one
shared scale, the median of the run's automatic estimates (``bloodseg segment --shared-scale``).
Writes one JSON ``{"model": ..., "tile": px, "sources": {NAME: {METRIC_auto: v, METRIC_given: v,
METRIC_shared: v, ..., "n": N}}, "seconds": s}``,
a picture sheet per source (``<sheet>/<source>.png``: image | auto | given | shared overlay) and
prints a table. The default subset sizes take about 10 minutes on 2 CPU cores. ``--camera phone``
scores the same fields as a phone through the eyepiece would take them (realmetrics.phone_camera:
light fall-off, warm cast, noise, JPEG 40; the truth unchanged): robustness to cheap cameras.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from napari_bloodseg import realmetrics
from napari_bloodseg.cli.argtypes import BACKEND_HELP, BACKENDS
from napari_bloodseg.realfields import SOURCES, default_data_dir

TABLE = [  # (column, metric key)
    ("dice", "wbc_dice"), ("found", "wbc_found"), ("falseW", "false_wbc_per_field"),
    ("typeBA", "wbc_type_balanced_acc"), ("rbcErr", "rbc_count_err_median"),
    ("rbcWhole", "rbc_whole_count_err_median"), ("falseInf", "false_infected_rate"), ("pltFound", "platelets_found"),
    ("rbcSize", "rbc_size_ratio_median"),
]


def run_source(segmenter, source: str, data: Path, per_source: int | None, sheet_dir: Path | None,
               shared_batch: int | None = realmetrics.SHARED_BATCH, camera: str = "none") -> dict:
    """Metrics of one source (and its sheet PNG in ``sheet_dir``)."""
    sheet = sheet_dir / f"{source}.png" if sheet_dir is not None else None
    return realmetrics.evaluate_source(segmenter, source, data, per_source, sheet, log=print, shared_batch=shared_batch,
                                       camera=realmetrics.CAMERAS[camera])


def format_table(result: dict) -> str:
    def cell(v) -> str:
        return "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)

    shared = any(k.endswith("_shared") for m in result["sources"].values() for k in m)
    modes = ("auto", "given", "shared") if shared else ("auto", "given")
    tag, width = ("a/g/sh", 23) if shared else ("a/g", 17)
    head = (f"{'source':<15}" + "".join(f"{c + ' ' + tag:>{width}}" for c, _ in TABLE)
            + f"{'scale15 a' + ('/sh' if shared else ''):>15}{'n':>5}{'err':>5}{'s':>6}")
    lines = [head]
    for name, m in result["sources"].items():
        line = f"{name:<15}"
        for _, key in TABLE:
            vals = [m.get(f"{key}_{mode}", "x") for mode in modes]
            line += f"{'' if vals[0] == 'x' else '/'.join(cell(v) for v in vals):>{width}}"
        scale = cell(m.get("scale_within_15pct_auto")) + (f"/{cell(m.get('scale_within_15pct_shared'))}" if shared else "")
        line += f"{scale:>15}{m.get('n', 0):>5}{m.get('errors', 0):>5}{m.get('seconds', 0):>6.0f}"
        lines.append(line)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="checkpoint (default: the shipped model)")
    ap.add_argument("--data", type=Path, default=None, help="shared data folder (default ../shared/data)")
    ap.add_argument("--out", type=Path, default=Path("real.json"))
    ap.add_argument("--sheet", type=Path, default=None, help="picture sheet folder (default: real_sheet/ next to --out)")
    ap.add_argument("--per-source", type=int, default=None,
                    help="fields per source (default: per-source sizes for ~10 min on 2 cores)")
    ap.add_argument("--sources", default=",".join(SOURCES), help="comma-separated subset of " + ",".join(SOURCES))
    ap.add_argument("--tta", default="none", choices=["none", "flip", "d4"])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--tile", type=int, default=None,
                    help="largest segmentation tile (default: the Segmenter's; 224 is the layout before issue 14)")
    ap.add_argument("--quick", action="store_true", help=f"{realmetrics.QUICK_PER_SOURCE} fields per source")
    ap.add_argument("--backend", default="auto", choices=BACKENDS, help=BACKEND_HELP)
    ap.add_argument("--shared-batch", type=int, default=realmetrics.SHARED_BATCH,
                    help="also segment runs of this many fields (name order) at one shared scale, the median of their "
                         "automatic estimates (keys METRIC_shared); 0: not (default: %(default)s)")
    ap.add_argument("--camera", default="none", choices=sorted(realmetrics.CAMERAS),
                    help="score the fields as this camera takes them: 'phone' = through the eyepiece (light fall-off, "
                         "warm cast, noise, JPEG 40); default: as recorded")
    args = ap.parse_args(argv)

    from napari_bloodseg.infer import Segmenter

    data = args.data or default_data_dir()
    if not data.is_dir():
        ap.error(f"no data folder {data}")
    sources = [s.strip() for s in args.sources.split(",") if s.strip()]
    bad = [s for s in sources if s not in SOURCES]
    if bad:
        ap.error(f"unknown source(s) {', '.join(bad)}; allowed: {', '.join(SOURCES)}")
    per_source = realmetrics.QUICK_PER_SOURCE if args.quick and args.per_source is None else args.per_source
    sheet_dir = args.sheet or args.out.parent / "real_sheet"
    t0 = time.perf_counter()
    seg = Segmenter.from_file(args.model, args.device, tta=args.tta, backend=args.backend,
                              **({"tile": args.tile} if args.tile else {}))
    result: dict = {"model": str(args.model) if args.model else "default", "tile": seg.tile, "backend": seg.backend_text,
                    **({"camera": args.camera} if args.camera != "none" else {}), "sources": {}, "seconds": 0.0}
    for s in sources:
        print(f"{s} ...", flush=True)
        result["sources"][s] = run_source(seg, s, data, per_source, sheet_dir, args.shared_batch or None,
                                          args.camera)
        print(f"  {result['sources'][s]}", flush=True)
    result["seconds"] = round(time.perf_counter() - t0, 4)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(f".{args.out.name}.tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(args.out)
    print(format_table(result))
    print(f"total {result['seconds']:.0f} s; JSON {args.out}; sheets {sheet_dir}")
    return result


if __name__ == "__main__":
    main()
