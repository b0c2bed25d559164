"""Inference speed, memory and agreement, all measured in one run on this machine.

    python benchmarks/bench_infer.py                 # reference-width (32) U-Net, random weights
    python benchmarks/bench_infer.py --model default # the shipped model
    python benchmarks/bench_infer.py --large         # adds a 100-megapixel field (minutes)

Reports tiles/s of naive eager fp32 (no fusion, NCHW) and of the default path (batch norm folded,
channels-last, bf16 where the CPU has native bf16 / AMP on CUDA), their ratio, whole-field times
for 1000x1000 and 2048x2048, peak resident memory of each field run (child processes), and the
agreement of the default path with fp32 on rendered fields with ground truth.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import time

import numpy as np
import torch

from napari_bloodseg.checkpoint import ModelInfo, load_checkpoint
from napari_bloodseg.infer import Segmenter
from napari_bloodseg.metrics import confusion_matrix, scores
from napari_bloodseg.model import UNet
from napari_bloodseg.render import render_smear


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


def tiles_per_s(seg: Segmenter, batch: int, seconds: float) -> float:
    stack = np.stack([render_smear((224, 224), seed=i).image for i in range(batch)])
    seg.predict_tiles(stack)  # warm-up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        seg.predict_tiles(stack)
        n += batch
    return n / (time.perf_counter() - t0)


def _field_child(spec: str, fast: bool, size: int, q) -> None:
    torch.set_num_threads(torch.get_num_threads())
    model, info = build_model(spec)
    seg = Segmenter(model, info, "auto", fast=fast, precision="auto" if fast else "fp32", batch_size=4)
    img = render_smear((size, size), seed=1).image if size <= 4096 else np.tile(render_smear((1000, 1000), seed=1).image, (size // 1000 + 1, size // 1000 + 1, 1))[:size, :size]
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    res = seg.segment(img, rbc_diameter=36.0)
    dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    n_tiles = len(range(0, max(1, size - 224), 192)) + 1
    q.put({"size": size, "fast": fast, "seconds": dt, "peak_rss_mb": peak / 1024, "rss_before_mb": base / 1024,
           "tiles": n_tiles**2, "labels_shape": list(res.labels.shape)})


def field(spec: str, fast: bool, size: int) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_field_child, args=(spec, fast, size, q))
    p.start()
    out = q.get()
    p.join()
    return out


def agreement(spec: str, n: int) -> dict:
    model, info = build_model(spec)
    naive = Segmenter(model, info, "auto", fast=False, precision="fp32")
    fast = Segmenter(model, info, "auto", fast=True, precision="auto")
    cm_n = np.zeros((10, 10), np.int64)
    cm_f = np.zeros((10, 10), np.int64)
    same = total = 0
    for i in range(n):
        s = render_smear((448, 448), seed=100 + i)
        a = naive.segment(s.image, rbc_diameter=36.0).labels
        b = fast.segment(s.image, rbc_diameter=36.0).labels
        same += int((a == b).sum())
        total += a.size
        cm_n += confusion_matrix(a, s.mask)
        cm_f += confusion_matrix(b, s.mask)
    mi_n, mi_f = scores(cm_n)["miou"], scores(cm_f)["miou"]
    return {"pixel_agreement": same / total, "miou_fp32": mi_n, "miou_fast": mi_f, "miou_change": mi_f - mi_n, "fields": n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="32", help="'default' or a U-Net width for random weights (32 = reference)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--large", action="store_true", help="also a 10000x10000 field (100 megapixels)")
    ap.add_argument("--agreement-fields", type=int, default=4)
    args = ap.parse_args()

    model, info = build_model(args.model)
    naive = Segmenter(model, info, "auto", fast=False, precision="fp32")
    fast = Segmenter(model, info, "auto", fast=True, precision="auto")
    report = {"model": args.model, "device": str(fast.device), "threads": torch.get_num_threads(),
              "fast_dtype": str(fast.dtype), "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    report["naive_tiles_per_s"] = tiles_per_s(naive, args.batch, args.seconds)
    report["fast_tiles_per_s"] = tiles_per_s(fast, args.batch, args.seconds)
    report["speedup"] = report["fast_tiles_per_s"] / report["naive_tiles_per_s"]
    print(json.dumps(report), flush=True)
    sizes = [1000, 2048] + ([10000] if args.large else [])
    report["fields"] = [field(args.model, True, s) for s in sizes] + [field(args.model, False, 1000)]
    for f in report["fields"]:
        f["seconds_per_tile"] = f["seconds"] / f["tiles"]
        print(json.dumps(f), flush=True)
    report["agreement"] = agreement(args.model, args.agreement_fields)
    print(json.dumps(report["agreement"]), flush=True)
    print("\nsummary")
    print(f"  naive eager fp32   {report['naive_tiles_per_s']:.2f} tiles/s")
    print(f"  default path       {report['fast_tiles_per_s']:.2f} tiles/s  ({report['fast_dtype']}), x{report['speedup']:.2f}")
    for f in report["fields"]:
        kind = "default" if f["fast"] else "naive"
        print(f"  {f['size']}x{f['size']} {kind:<8} {f['seconds']:.2f} s  ({f['tiles']} tiles, peak RSS {f['peak_rss_mb']:.0f} MB)")
    a = report["agreement"]
    print(f"  agreement with fp32: {100 * a['pixel_agreement']:.3f} % pixels, mIoU change {a['miou_change']:+.4f}")


if __name__ == "__main__":
    main()
