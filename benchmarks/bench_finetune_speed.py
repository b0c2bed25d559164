"""Fine-tuning speed: optimizer steps per second of the correction fine-tune (napari_bloodseg.finetune)
on this machine, for its loader and epoch settings, measured back to back in one run.

    python benchmarks/bench_finetune_speed.py [--device auto|cpu|cuda] [--seconds 30] [--repeats 2] [--out speed.json]

Variants (same six rendered 300x300 corrected fields, drawn cells mixed in, the shipped model):
``plain``: no loader processes, 8-step epochs (the CPU default, and the GPU's before session 26);
``default``: what fine_tune picks for the device (on a CUDA GPU 4 loader processes and 32-step
epochs, so the end-of-epoch validation and checkpoint writes no longer dominate); on a CPU also
``bf16``: the default with bf16 autocast instead of fp32. The rates are comparable only within one
run (noisy machines): report ratios.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--seconds", type=float, default=30.0, help="fine-tuning budget per variant (default: %(default)s)")
    ap.add_argument("--repeats", type=int, default=2, help="rounds over the variants, interleaved (default: %(default)s)")
    ap.add_argument("--out", default=None, help="JSON file to write")
    args = ap.parse_args(argv)

    import napari_bloodseg.finetune as ft
    import napari_bloodseg.train as tr
    from napari_bloodseg.infer import resolve_device
    from napari_bloodseg.io import write_png
    from napari_bloodseg.render import render_smear

    device = resolve_device(args.device).type
    variants = {"plain": dict(workers=0, epoch_factor=1), "default": dict(workers=None, epoch_factor=ft.GPU_EPOCH_FACTOR)}
    if device == "cpu":
        variants["bf16"] = dict(workers=None, epoch_factor=ft.GPU_EPOCH_FACTOR, precision="auto")
    train, factor = tr.train, ft.GPU_EPOCH_FACTOR
    rates: dict[str, list[float]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for i in range(6):
            s = render_smear((300, 300), counts={3: 1}, seed=i)
            write_png(tmp / "pairs" / "images" / f"f{i}.png", s.image)
            write_png(tmp / "pairs" / "masks" / f"f{i}.png", s.mask)
        ft.fine_tune(None, tmp / "pairs", tmp / "warm-up", 0.2, device=device, workers=0)  # CUDA start, kernel choice
        for r in range(args.repeats):
            for name, v in variants.items():
                precision = v.get("precision")

                def patched(train_set, val_set, out, cfg, precision=precision, **kw):
                    if precision:
                        cfg.precision = precision
                    return train(train_set, val_set, out, cfg, **kw)

                tr.train, ft.GPU_EPOCH_FACTOR = patched, v["epoch_factor"]
                try:
                    rep = ft.fine_tune(None, tmp / "pairs", tmp / f"{name}{r}", args.seconds / 60, device=device,
                                       workers=v["workers"])
                finally:
                    tr.train, ft.GPU_EPOCH_FACTOR = train, factor
                rates[name].append(rep["steps"] / rep["seconds_training"])
                print(f"{name}: {rep['workers']} loader processes, {rep['steps']} steps in {rep['seconds_training']} s"
                      f" = {rates[name][-1]:.2f} steps/s", flush=True)
    mean = {name: sum(v) / len(v) for name, v in rates.items()}
    ratios = {name: round(m / mean["plain"], 2) for name, m in mean.items()}
    print("ratio to plain: " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items()))
    if args.out:
        Path(args.out).write_text(json.dumps({"device": device, "seconds": args.seconds, "steps_per_s": rates,
                                              "ratio_to_plain": ratios}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
