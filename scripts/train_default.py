"""Train the shipped default model: a set synthesized from a permissively licensed sample bank,
together with procedurally rendered smears (see models/MODEL_CARD.md for the exact run).

    python scripts/train_default.py --out runs/default --tiles 2000 --epochs 8 --width 8
    python scripts/train_default.py --out runs/real --synth SYNTH_DIR --tiles 500 --init CKPT --epochs 8
    # on a GPU, with a time budget (learning rate drops to 1e-4 after --drop-at of it):
    python scripts/train_default.py --out runs/gpu --synth SYNTH_DIR --tiles 4000 --width 16 \\
        --device cuda --batch-size 32 --workers 14 --epochs 100 --minutes 7
    # for unseen labs (CPU, resumable): synthesized tiles + real fields with derived labels
    # (scripts/make_real_pairs.py), the wide appearance randomisation, from the shipped weights:
    python scripts/train_default.py --out runs/real --synth SYNTH_DIR --synth-tiles 5000 --tiles 0 \\
        --real REAL_PAIRS --real-repeat 4 --init src/napari_bloodseg/models/default.safetensors \\
        --lr 5e-4 --lr-drop-epoch 3 --epochs 8 --workers 2 --resume
then copy <out>/best.safetensors to src/napari_bloodseg/models/default.safetensors.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from multiprocessing import get_context

import numpy as np
import torch

from napari_bloodseg.augment import augment_level
from napari_bloodseg.train import CachedDataset, FolderDataset, RenderedDataset, TrainConfig, train


@dataclass
class BudgetConfig(TrainConfig):
    """The reference schedule (1e-3, then 1e-4) with the drop placed in time rather than epochs."""

    drop_time: float = 0.0  # time.time() after which the late rate applies; 0: by epoch

    def lr_at(self, epoch: int) -> float:
        if self.drop_time:
            return self.lr if time.time() < self.drop_time else self.lr_late
        return super().lr_at(epoch)


def _render(args):
    n, seed, start, stop = args
    ds = RenderedDataset(n, seed=seed)
    return [ds[i] for i in range(start, stop)]


def rendered(n: int, seed: int, procs: int) -> CachedDataset:
    """n rendered tiles, drawn in ``procs`` processes (identical to RenderedDataset(n, seed))."""
    cached = CachedDataset(RenderedDataset(0, seed=seed))
    if procs <= 1 or n < 64:
        cached.items = [RenderedDataset(n, seed=seed)[i] for i in range(n)]
        return cached
    bounds = [round(n * k / (procs * 4)) for k in range(procs * 4 + 1)]
    with get_context("spawn").Pool(procs) as pool:
        parts = pool.map(_render, [(n, seed, a, b) for a, b in zip(bounds, bounds[1:])])
    cached.items = [it for part in parts for it in part]
    return cached


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--tiles", type=int, default=2000, help="rendered training tiles")
    ap.add_argument("--val-tiles", type=int, default=100)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--width", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--lr-drop-epoch", type=int, default=5)
    ap.add_argument("--synth", default=None, help="a set from `bloodseg synth` (train/ val/): trained on together with "
                    "--tiles rendered tiles, validated on its val/ split")
    ap.add_argument("--init", default=None, help="checkpoint to start from")
    ap.add_argument("--synth-tiles", type=int, default=0, help="use only this many --synth training tiles (0: all)")
    ap.add_argument("--real", default=None, help="real-field pairs (images/, masks/ from scripts/make_real_pairs.py)")
    ap.add_argument("--real-repeat", type=int, default=4, help="random windows per real field and epoch")
    ap.add_argument("--augment", default="wide", choices=["mild", "wide"], help="augmentation level (see augment.py)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0, help="order of the training tiles (another seed: a sibling run to average)")
    ap.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    ap.add_argument("--render-procs", type=int, default=1, help="processes drawing the rendered tiles")
    ap.add_argument("--minutes", type=float, default=0, help="stop after this many minutes of training (0: no limit)")
    ap.add_argument("--lr", type=float, default=1e-3, help="learning rate before the drop")
    ap.add_argument("--lr-late", type=float, default=1e-4, help="learning rate after the drop")
    ap.add_argument("--drop-at", type=float, default=0.6, help="with --minutes: fraction of the budget at --lr, the rest at --lr-late")
    ap.add_argument("--freeze-encoder", action="store_true",
                    help="with --init: only the decoder learns, so the size model in the checkpoint stays valid")
    ap.add_argument("--distill", type=float, default=0.0,
                    help="with --init: weight of the pull toward the starting model's predictions (0: none)")
    ap.add_argument("--distill-where", default="all", choices=["all", "unlabelled"],
                    help="pixels the pull applies to: all, or only those without a full label (ignored, partial)")
    ap.add_argument("--distill-classes", default="all", choices=["all", "wbc"],
                    help="what the pull keeps: every class, or the WBC classes only (RBC, platelets and "
                         "background free to move among themselves)")
    args = ap.parse_args()
    t0 = time.time()
    from torch.utils.data import ConcatDataset, Subset

    train_set = rendered(args.tiles, 0, args.render_procs)
    train_set.augment = augment_level(args.augment)
    val_set = rendered(args.val_tiles, 1, args.render_procs)
    parts = [train_set] if args.tiles else []
    if args.synth:
        # read from disk in the loader workers (a GPU run's set is too large to decode up front)
        synth = FolderDataset(f"{args.synth}/train", augment=args.augment)
        if args.workers == 0:
            synth = CachedDataset(FolderDataset(f"{args.synth}/train"), augment=args.augment)
        if args.synth_tiles:
            idx = np.random.default_rng(0).permutation(len(synth))[: args.synth_tiles]
            synth = Subset(synth, idx.tolist())
        parts.insert(0, synth)
        val_set = CachedDataset(FolderDataset(f"{args.synth}/val"))
    if args.real:
        parts.append(FolderDataset(args.real, augment=args.augment, repeat=args.real_repeat))
    train_set = parts[0] if len(parts) == 1 else ConcatDataset(parts)
    print(f"prepared {len(train_set)}+{len(val_set)} tiles in {time.time() - t0:.0f} s", flush=True)

    t_start = time.time()
    deadline = t_start + 60 * args.minutes if args.minutes else None

    def log(ev):
        if ev["kind"] == "epoch":
            print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in ev.items()}), flush=True)
        elif ev["step"] % 200 == 0:
            print(f"  epoch {ev['epoch'] + 1} step {ev['step']}/{ev['steps']} loss {ev['loss']:.4f} ({time.time() - t0:.0f} s)", flush=True)

    cfg = BudgetConfig(epochs=args.epochs, batch_size=args.batch_size, width=args.width, device=args.device, seed=args.seed,
                       init=args.init, lr=args.lr, lr_late=args.lr_late, lr_drop_epoch=args.lr_drop_epoch, workers=args.workers, freeze_encoder=args.freeze_encoder,
                       distill=args.distill, distill_where=args.distill_where, distill_classes=args.distill_classes,
                       drop_time=t_start + 60 * args.minutes * args.drop_at if args.minutes else 0.0)
    state = train(train_set, val_set, args.out, cfg, resume=args.resume, on_progress=log,
                  should_stop=(lambda: time.time() > deadline) if deadline else None)
    hw = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"{torch.get_num_threads()} CPU threads"
    print(f"done in {time.time() - t0:.0f} s on {hw}; {state.epoch} epochs; best val mIoU {state.best_miou:.4f} acc {state.best_accuracy:.4f}")


if __name__ == "__main__":
    main()
