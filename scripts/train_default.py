"""Train the shipped default model: procedurally rendered smears, optionally together with a set
synthesized from a permissively licensed sample bank (see models/MODEL_CARD.md for the exact run).

    python scripts/train_default.py --out runs/default --tiles 2000 --epochs 8 --width 8
    python scripts/train_default.py --out runs/real --synth SYNTH_DIR --tiles 500 --init CKPT --epochs 8
then copy <out>/best.safetensors to src/napari_bloodseg/models/default.safetensors.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from napari_bloodseg.train import CachedDataset, FolderDataset, RenderedDataset, TrainConfig, train


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--tiles", type=int, default=2000)
    ap.add_argument("--val-tiles", type=int, default=100)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--width", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--lr-drop-epoch", type=int, default=5)
    ap.add_argument("--synth", default=None, help="a set from `bloodseg synth` (train/ val/): trained on together with "
                    "--tiles rendered tiles, validated on its val/ split")
    ap.add_argument("--init", default=None, help="checkpoint to start from")
    args = ap.parse_args()
    t0 = time.time()
    train_set = CachedDataset(RenderedDataset(args.tiles, seed=0), augment=True)
    val_set = CachedDataset(RenderedDataset(args.val_tiles, seed=1))
    if args.synth:
        from torch.utils.data import ConcatDataset

        real = CachedDataset(FolderDataset(f"{args.synth}/train"), augment=True)
        train_set = ConcatDataset([real, train_set]) if args.tiles else real
        val_set = CachedDataset(FolderDataset(f"{args.synth}/val"))
    print(f"rendered {len(train_set)}+{len(val_set)} tiles in {time.time() - t0:.0f} s", flush=True)

    def log(ev):
        if ev["kind"] == "epoch":
            print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in ev.items()}), flush=True)
        elif ev["step"] % 50 == 0:
            print(f"  epoch {ev['epoch'] + 1} step {ev['step']}/{ev['steps']} loss {ev['loss']:.4f} ({time.time() - t0:.0f} s)", flush=True)

    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, width=args.width, device="cpu", init=args.init,
                      lr_drop_epoch=args.lr_drop_epoch)
    state = train(train_set, val_set, args.out, cfg, resume=args.resume, on_progress=log)
    print(f"done in {time.time() - t0:.0f} s on {torch.get_num_threads()} CPU threads; best val mIoU {state.best_miou:.4f} acc {state.best_accuracy:.4f}")


if __name__ == "__main__":
    main()
