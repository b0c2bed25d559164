"""Inference speed, memory and agreement of each backend, all measured in one run on this machine.

    python benchmarks/bench_infer.py                 # reference-width (32) U-Net, random weights
    python benchmarks/bench_infer.py --model default # the shipped model
    python benchmarks/bench_infer.py --large         # adds a 100-megapixel field (minutes)

Paths measured (tiles/s on one batch of 224x224 tiles, ratio to torch eager fp32): torch eager
fp32 (no fusion, NCHW), the torch default path (batch norm folded, channels-last, bf16 where the
CPU has native bf16 / AMP on CUDA), OpenVINO fp32 and bf16 (when installed; bf16 only where the
CPU runs it), and which one the default backend 'auto' picks. Then whole-field times for 1000x1000
and 2048x2048 with peak resident memory (child processes; in each, the median of three calls after
two warm-up calls, the first call's time beside it; each field configuration run --repeats times,
interleaved, median), with the segmentation tile of each ('tile' column: the naive reference
keeps the tile of 224 px the code used before issue 14, the default paths the Segmenter's default,
and 'default (auto), tile 224' separates what the tiles and the backend each give), the ratio of
each to the naive reference, the marginal time per 2016x2016 field of a `bloodseg segment` batch
run (pipelined: the next field is read while one runs) and the time to write one such field's
class-id and colour PNGs (the colour map indexed, as written, and as RGB), and pixel agreement
with torch fp32 on rendered fields with ground truth (mIoU change): at the same tiles (what the
backend changes) and against the tile-224 reference (what the tiles change). The machine's load average is recorded
with each measurement: compare ratios within one run, not times across runs.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from napari_bloodseg.checkpoint import ModelInfo, load_checkpoint
from napari_bloodseg.infer import SEGMENT_TILE, Segmenter
from napari_bloodseg.metrics import confusion_matrix, scores
from napari_bloodseg.model import UNet
from napari_bloodseg.render import render_smear

REFERENCE = "torch eager fp32"
OLD_TILE = 224  # the segmentation tile before issue 14 (the naive reference keeps it)
PATHS = {
    REFERENCE: dict(backend="torch", fast=False, precision="fp32", tile=OLD_TILE),
    "torch default": dict(backend="torch", fast=True, precision="auto"),
    "openvino fp32": dict(backend="openvino", precision="fp32"),
    "openvino bf16": dict(backend="openvino", precision="bf16"),
    "default (auto)": dict(),
    "default (auto), tile 224": dict(tile=OLD_TILE),
}
TILE_PATHS = ("default (auto), tile 224",)  # whole-field rows only: same network as 'default (auto)'


def load() -> float:
    """The 1-minute load average (other jobs on the machine skew the times)."""
    return round(os.getloadavg()[0], 2)


def build_model(spec: str) -> tuple[UNet, ModelInfo]:
    if spec == "default":
        return load_checkpoint(None)
    torch.manual_seed(0)
    model = UNet(width=int(spec)).eval()
    for m in model.modules():  # non-trivial batch-norm statistics, as after training
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    return model, ModelInfo(width=int(spec))


def segmenters(spec: str, batch: int) -> dict[str, Segmenter]:
    """One segmenter per path this machine can run (OpenVINO bf16 only where the CPU runs bf16)."""
    model, info = build_model(spec)
    out = {}
    for name, kw in PATHS.items():
        if name in TILE_PATHS:
            continue
        try:
            seg = Segmenter(model, info, "auto", batch_size=batch, **kw)
        except ValueError as e:  # OpenVINO not installed, or asked for on a GPU machine
            print(f"# {name}: skipped ({e})", flush=True)
            continue
        if name.startswith("openvino") and not seg.backend_text.endswith(name.split()[-1]):
            print(f"# {name}: skipped (this CPU runs it as {seg.backend_text})", flush=True)
            continue
        out[name] = seg
    return out


def tiles_per_s(seg: Segmenter, batch: int, seconds: float) -> float:
    stack = np.stack([render_smear((224, 224), seed=i).image for i in range(batch)])
    seg.predict_tiles(stack)  # warm-up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        seg.predict_tiles(stack)
        n += batch
    return n / (time.perf_counter() - t0)


def _field_child(spec: str, path: str, size: int, q) -> None:
    model, info = build_model(spec)
    seg = Segmenter(model, info, "auto", batch_size=4, **PATHS[path])
    if size <= 4096:
        img = render_smear((size, size), seed=1).image
    else:  # a contiguous image, as read from a file (a view into a larger array would be copied)
        img = np.ascontiguousarray(np.tile(render_smear((1000, 1000), seed=1).image, (size // 1000 + 1, size // 1000 + 1, 1))[:size, :size])
    seg.segment(img[:224, :224], rbc_diameter=36.0)  # compile/warm-up outside the timing
    seg.segment(img[:min(size, seg.tile), :min(size, seg.tile)], rbc_diameter=36.0)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # the first calls at a new field size run slower (OpenVINO's shape-specific buffers, the
    # allocator growing its heap: up to 2-3x on 2 cores); a batch run or a napari session sees the
    # steady state, so the median of three calls is reported, and the first call beside it
    times = []
    for _ in range(3 if size <= 4096 else 1):
        t0 = time.perf_counter()
        res = seg.segment(img, rbc_diameter=36.0)
        times.append(time.perf_counter() - t0)
    dt = float(np.median(times))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    q.put({"size": size, "path": path, "backend": seg.backend_text, "tile": seg.tile, "seconds": dt,
           "seconds_first": times[0],
           "peak_rss_mb": peak / 1024, "rss_before_mb": base / 1024, "tiles": seg.count_tiles(size, size),
           "labels_shape": list(res.labels.shape), "load": load()})


def field(spec: str, path: str, size: int) -> dict:
    """One whole-field run in a fresh process (peak memory of that field alone)."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_field_child, args=(spec, path, size, q))
    p.start()
    out = q.get()
    p.join()
    return out


def batch_marginal(spec: str, n: int, size: int = 2016, rbc_diameter: float | None = 36.0) -> dict:
    """Seconds per extra field of `bloodseg segment` over n fields (default backend); a given RBC
    diameter keeps the tiles per field fixed (None: estimated per field, by the network)."""
    import imageio.v3 as iio

    from napari_bloodseg.checkpoint import save_checkpoint
    from napari_bloodseg.cli import main

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = []
        if spec != "default":
            save_checkpoint(tmp / "model.safetensors", *build_model(spec))
            model = ["--model", str(tmp / "model.safetensors")]
        for i in range(n):
            iio.imwrite(tmp / f"f{i}.png", render_smear((size, size), seed=20 + i).image)
        if rbc_diameter:
            model += ["--rbc-diameter", str(rbc_diameter)]
        main(["segment", str(tmp / "f0.png"), "--out", str(tmp / "warm"), "-q", *model])  # compile once
        times = {}
        for k in (1, n):
            args = ["segment", *[str(tmp / f"f{i}.png") for i in range(k)], "--out", str(tmp / f"o{k}"), "-q", *model]
            t0 = time.perf_counter()
            assert main(args) == 0
            times[k] = time.perf_counter() - t0
    return {"size": size, "fields": n, "rbc_diameter": rbc_diameter or "estimated",
            "seconds_1": times[1], f"seconds_{n}": times[n],
            "marginal_seconds_per_field": (times[n] - times[1]) / (n - 1), "tile": SEGMENT_TILE, "load": load()}


def write_cost(size: int = 2016, repeats: int = 3) -> dict:
    """Seconds to write one field's outputs as `bloodseg segment` does: the class-id PNG and the
    colour map as an indexed-colour PNG, against the colour map as an RGB PNG (before session 16).
    Medians of ``repeats``, on the default model's map of a rendered field."""
    from napari_bloodseg.classes import color_palette, colorize
    from napari_bloodseg.io import write_png

    labels = Segmenter.from_file(None, "cpu").segment(render_smear((size, size), seed=20).image, 36.0).labels
    ways = {"labels": lambda p: write_png(p, labels, overwrite=True),
            "colour, indexed": lambda p: write_png(p, labels, overwrite=True, palette=color_palette()),
            "colour, RGB": lambda p: write_png(p, colorize(labels), overwrite=True)}
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, fn in ways.items():
            times = []
            for _ in range(repeats):
                t = time.perf_counter()
                fn(Path(tmp) / "x.png")
                times.append(time.perf_counter() - t)
            out[name] = {"seconds": float(np.median(times)), "kb": (Path(tmp) / "x.png").stat().st_size // 1024}
    out["size"] = size
    return out


def agreement(segs: dict[str, Segmenter], n: int) -> dict:
    """Pixel agreement with torch fp32 on ``n`` rendered 1000x1000 fields: at each path's own tiles
    ('pixel_agreement_same_tiles': what the backend changes) and against the tile-224 reference
    ('pixel_agreement_vs_tile_224': what the tiles change), and mIoU against the rendered truth."""
    model, info = segs[REFERENCE].unet, segs[REFERENCE].info
    ref = segs[REFERENCE]
    fp32 = {}  # torch fp32 at each other tile size
    for k, seg in segs.items():
        if seg.tile != ref.tile and seg.tile not in fp32:
            fp32[seg.tile] = Segmenter(model, info, ref.device, tile=seg.tile, backend="torch", fast=False, precision="fp32")
    fp32[ref.tile] = ref
    cms = {k: np.zeros((10, 10), np.int64) for k in segs}
    same = {k: 0 for k in segs}
    vs_old = {k: 0 for k in segs}
    total = 0
    for i in range(n):
        s = render_smear((1000, 1000), seed=100 + i)
        ref_labels = {t: r.segment(s.image, rbc_diameter=36.0).labels for t, r in fp32.items()}
        old = ref_labels[ref.tile]
        total += old.size
        for k, seg in segs.items():
            b = ref_labels[seg.tile] if seg in fp32.values() else seg.segment(s.image, rbc_diameter=36.0).labels
            same[k] += int((ref_labels[seg.tile] == b).sum())
            vs_old[k] += int((old == b).sum())
            cms[k] += confusion_matrix(b, s.mask)
    mi_ref = scores(cms[REFERENCE])["miou"]
    return {k: {"tile": segs[k].tile, "pixel_agreement_same_tiles": same[k] / total,
                "pixel_agreement_vs_tile_224": vs_old[k] / total, "miou": scores(cms[k])["miou"],
                "miou_change": scores(cms[k])["miou"] - mi_ref} for k in segs if k != REFERENCE} | {"fields": n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="32", help="'default' or a U-Net width for random weights (32 = reference)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--large", action="store_true", help="also a 10000x10000 field (100 megapixels)")
    ap.add_argument("--agreement-fields", type=int, default=4)
    ap.add_argument("--batch-fields", type=int, default=4, help="2016x2016 fields of the batch run (0: skip it)")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each whole-field configuration (interleaved; median)")
    args = ap.parse_args()

    segs = segmenters(args.model, args.batch)
    report = {"model": args.model, "device": str(segs[REFERENCE].device), "threads": torch.get_num_threads(),
              "segment_tile": SEGMENT_TILE, "load_start": load(),
              "cpu_capability": torch.backends.cpu.get_cpu_capability(),
              "backends": {k: s.backend_text for k, s in segs.items()}, "tiles_per_s": {}}
    for name, seg in segs.items():
        report["tiles_per_s"][name] = tiles_per_s(seg, args.batch, args.seconds)
    ref_rate = report["tiles_per_s"][REFERENCE]
    report["ratio_to_eager_fp32"] = {k: v / ref_rate for k, v in report["tiles_per_s"].items()}
    report["load_after_tiles"] = load()
    print(json.dumps(report), flush=True)
    fast_paths = [k for k in ("torch default", "default (auto)", *TILE_PATHS) if k in segs or k in TILE_PATHS]
    configs = [(p, s) for s in (1000, 2048) for p in fast_paths] + [(REFERENCE, 1000), (REFERENCE, 2048)]
    runs: dict[tuple[str, int], list[dict]] = {c: [] for c in configs}
    for _ in range(max(1, args.repeats)):  # interleaved: a load change hits every configuration alike
        for p, s in configs:
            runs[p, s].append(field(args.model, p, s))
            print(json.dumps(runs[p, s][-1]), flush=True)
    report["fields"] = []
    for (p, s), rs in runs.items():
        f = dict(rs[0], seconds=float(np.median([r["seconds"] for r in rs])), seconds_all=[r["seconds"] for r in rs],
                 peak_rss_mb=max(r["peak_rss_mb"] for r in rs), loads=[r["load"] for r in rs])
        f["seconds_per_tile"] = f["seconds"] / f["tiles"]
        f["ratio_to_eager_fp32"] = float(np.median([runs[REFERENCE, s][i]["seconds"] / r["seconds"] for i, r in enumerate(rs)]))
        report["fields"].append(f)
    if args.large:
        f = field(args.model, "default (auto)", 10000)
        f["seconds_per_tile"] = f["seconds"] / f["tiles"]
        print(json.dumps(f), flush=True)
        report["fields"].append(f)
    if args.batch_fields > 1:
        report["batch"] = batch_marginal(args.model, args.batch_fields)
        print(json.dumps(report["batch"]), flush=True)
        report["write"] = write_cost()
        print(json.dumps(report["write"]), flush=True)
    report["agreement"] = agreement({k: v for k, v in segs.items() if k != "default (auto)"}, args.agreement_fields)
    print(json.dumps(report["agreement"]), flush=True)
    print("\nsummary")
    for name, rate in report["tiles_per_s"].items():
        print(f"  {name:<17} {rate:6.2f} tiles/s  x{report['ratio_to_eager_fp32'][name]:.2f}  ({report['backends'][name]})")
    for f in report["fields"]:
        ratio = f" x{f['ratio_to_eager_fp32']:.2f}" if "ratio_to_eager_fp32" in f else ""
        print(f"  {f['size']}x{f['size']} {f['path']:<24} tile {f['tile']:<5} {f['seconds']:.2f} s{ratio}  "
              f"({f['tiles']} tiles, peak RSS {f['peak_rss_mb']:.0f} MB, load {f.get('loads', f['load'])})")
    if "batch" in report:
        b = report["batch"]
        print(f"  batch of {b['fields']} {b['size']}x{b['size']} fields (default backend, RBC diameter {b['rbc_diameter']}): "
              f"{b['marginal_seconds_per_field']:.2f} s marginal per field")
    if "write" in report:
        w = report["write"]
        print(f"  writing a {w['size']}x{w['size']} field's maps: " + ", ".join(
            f"{k} {v['seconds']:.3f} s ({v['kb']} KB)" for k, v in w.items() if k != "size"))
    for name, a in report["agreement"].items():
        if name != "fields":
            print(f"  {name:<24} tile {a['tile']}: vs torch fp32 same tiles {100 * a['pixel_agreement_same_tiles']:.3f} %, "
                  f"vs tile 224 {100 * a['pixel_agreement_vs_tile_224']:.3f} % pixels, mIoU change {a['miou_change']:+.4f}")


if __name__ == "__main__":
    main()
