"""`bloodseg train` and `bloodseg evaluate`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .argtypes import BACKEND_HELP, BACKENDS, names, positive_float, positive_int

PROCEDURAL = "procedural"


def init_distributed(device: str) -> str:
    """Under torchrun (WORLD_SIZE > 1): join the process group; one GPU per process (NCCL) or gloo on CPUs."""
    import os

    import torch
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return device
    use_cuda = torch.cuda.is_available() and device in ("auto", "cuda")
    dist.init_process_group("nccl" if use_cuda else "gloo")
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return f"cuda:{local}"
    return "cpu" if device == "auto" else device


def cmd_fine_tune(args: argparse.Namespace) -> int:
    """`bloodseg train --minutes M`: time-budgeted fine-tuning on corrected pairs (see finetune.py)."""
    from ..finetune import PROCEDURAL as SYNTH_PROCEDURAL
    from ..finetune import fine_tune, report_text

    try:
        if args.resume:
            raise ValueError("--resume does not apply to a --minutes fine-tune; start it again in a new --out folder")
        last = {"t": 0.0}

        def progress(ev: dict) -> None:
            if ev["kind"] == "phase":
                print(ev["text"] + "…", flush=True)
            elif ev["kind"] == "batch" and ev["elapsed"] - last["t"] >= 15:
                last["t"] = ev["elapsed"]
                print(f"  {ev['elapsed']:.0f}/{ev['budget']:.0f} s, loss {ev['loss']:.3f}", flush=True)

        given = {k: v for k, v in (("mix_fraction", args.mix_fraction), ("holdout", args.holdout),
                                   ("batch_size", args.batch_size), ("lr", args.lr), ("workers", args.workers))
                 if v is not None}
        report = fine_tune(args.init, args.data, args.out, args.minutes, synth_dir=args.mix_synth or SYNTH_PROCEDURAL,
                           device=args.device, seed=args.seed, overwrite=args.overwrite, on_progress=progress,
                           freeze_encoder=not args.train_encoder, **given)
    except (ValueError, FileExistsError, OSError) as e:
        print(f"bloodseg: error: {e}", file=sys.stderr)
        return 2
    print(report_text(report))
    print(f"checkpoint: {report['checkpoint']}; report: {Path(args.out) / 'fine_tune.json'}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    if args.minutes is not None:
        return cmd_fine_tune(args)
    only = [f"--{k.replace('_', '-')}" for k in ("mix_synth", "mix_fraction", "holdout") if getattr(args, k) is not None]
    if args.overwrite:
        only.append("--overwrite")
    if only:
        print(f"bloodseg: error: {', '.join(only)} work only with --minutes M (a fine-tune on corrections)", file=sys.stderr)
        return 2
    args.batch_size = 8 if args.batch_size is None else args.batch_size
    args.lr = 1e-3 if args.lr is None else args.lr

    from ..train import TrainConfig, train

    try:
        args.device = init_distributed(args.device)
        from ..train import datasets_for

        train_set, val_set = datasets_for(args.data, not args.no_augment, args.procedural_tiles, args.seed,
                                          (args.bank_tiles, args.bank_val_tiles))
        config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, lr_late=args.lr_late,
                             lr_drop_epoch=args.lr_drop_epoch, width=args.width, workers=args.workers or 0,
                             seed=args.seed, device=args.device, init=args.init, precision=args.precision)
        bar = None

        def progress(ev: dict) -> None:
            nonlocal bar
            if ev["kind"] == "batch":
                if bar is None:
                    bar = tqdm(total=ev["steps"], desc=f"epoch {ev['epoch'] + 1}/{config.epochs}", unit="batch", leave=False)
                bar.update(1)
                bar.set_postfix(loss=f"{ev['loss']:.3f}")
            else:
                if bar is not None:
                    bar.close()
                    bar = None
                tqdm.write(f"epoch {ev['epoch']}: loss {ev['train_loss']:.4f} acc {ev['train_accuracy']:.4f} | "
                           f"val loss {ev['val_loss']:.4f} acc {ev['val_accuracy']:.4f} mIoU {ev['val_miou']:.4f} "
                           f"| lr {ev['lr']:g} | {ev['seconds']:.0f} s" + (" *best*" if ev["improved"] else ""))

        state = train(train_set, val_set, args.out, config, resume=args.resume, on_progress=progress)
    except (ValueError, FileExistsError, OSError) as e:
        print(f"bloodseg: error: {e}", file=sys.stderr)
        return 2
    print(f"best validation mIoU {state.best_miou:.4f} (pixel accuracy {state.best_accuracy:.4f}); "
          f"checkpoint: {Path(args.out) / 'best.safetensors'}")
    return 0


def _evaluate_boxes(args: argparse.Namespace) -> int:
    """`bloodseg evaluate --boxes FORMAT`: the real-field benchmark's metrics on a lab's box set."""
    from ..bank.importers import LayoutError
    from ..bank.scale import ScaleError
    from ..boxsets import evaluate_box_set
    from ..checkpoint import CheckpointError
    from ..infer import Segmenter

    out = Path(args.out) if args.out else None
    try:
        seg = Segmenter.from_file(args.model, args.device, backend=args.backend, tta=args.tta)
        res = evaluate_box_set(seg, args.boxes, args.data, box_classes=args.box_classes, rbc_diameter=args.rbc_diameter,
                               rbcs_complete=args.rbcs_complete, limit=args.limit,
                               sheet=out / "sheet.png" if out else None,
                               log=lambda m: print(f"bloodseg: warning: {m.strip()}", file=sys.stderr))
    except (CheckpointError, LayoutError, ScaleError, ValueError, OSError) as e:
        print(f"bloodseg: error: {e}", file=sys.stderr)
        return 2
    res = {"model": str(args.model), "data": str(args.data), "format": args.boxes, **res}
    print(f"{res['n']} fields, RBC diameter {res['rbc_diameter']:.1f} px ({res['rbc_diameter_from']}); "
          "automatic / given / shared scale:")
    for key, label in (("wbc_found", "WBCs found"), ("false_wbc_per_field", "false WBCs per field"),
                       ("wbc_type_balanced_acc", "WBC type, balanced accuracy"),
                       ("rbc_count_err_median", "RBC count error (median)"), ("platelets_found", "platelets found"),
                       ("scale_within_15pct", "automatic diameter within 15 %")):
        vals = [res.get(f"{key}_{m}") for m in ("auto", "given", "shared")]
        if any(v is not None for v in vals):
            print(f"  {label:<32} " + " / ".join("-" if v is None else f"{v:.2f}" for v in vals))
    recall = res.get("wbc_type_recall_given") or {}
    if recall:
        print("  WBC type recall (given scale):  " + ", ".join(f"{k} {v:.2f}" for k, v in recall.items()))
    if out:
        out.mkdir(parents=True, exist_ok=True)
        (out / "evaluation.json").write_text(json.dumps(res, indent=1))
        print(f"wrote {out / 'evaluation.json'} and {out / 'sheet.png'}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    if args.boxes:
        return _evaluate_boxes(args)
    if args.box_classes or args.rbc_diameter or args.rbcs_complete or args.limit:
        print("bloodseg: error: --box-classes, --rbc-diameter, --rbcs-complete and --limit go with --boxes",
              file=sys.stderr)
        return 2
    from torch.utils.data import DataLoader

    from ..checkpoint import CheckpointError, load_checkpoint
    from ..infer import Backend, inference_module, resolve_device
    from ..train import FolderDataset, RenderedDataset, _collate, evaluate_model

    try:
        openvino = args.backend == Backend.OPENVINO.value and args.device == "auto"
        device = resolve_device("cpu" if openvino else args.device)  # OpenVINO asked for by name runs on the CPU
        model, info = load_checkpoint(args.model, device)
        model, backend, _ = inference_module(model, device, args.backend, precision="fp32")
        if args.data == PROCEDURAL:
            ds = RenderedDataset(args.procedural_tiles, seed=args.seed)
        else:
            root = Path(args.data)
            ds = FolderDataset(root / args.split if (root / args.split).is_dir() else root)
        res = evaluate_model(model, DataLoader(ds, batch_size=args.batch_size, collate_fn=_collate), info, device,
                             tta=args.tta)
    except (CheckpointError, ValueError, OSError) as e:
        print(f"bloodseg: error: {e}", file=sys.stderr)
        return 2
    res.pop("loss", None)
    res["model"], res["data"], res["items"], res["tta"] = str(args.model), str(args.data), len(ds), args.tta
    res["backend"] = backend.value
    tta = "" if args.tta == "none" else f", test-time augmentation {args.tta}"
    print(f"pixel accuracy {res['pixel_accuracy']:.4f}  mIoU {res['miou']:.4f}  ({len(ds)} images{tta})")
    for name, iou in res["iou"].items():
        d = res["dice"][name]
        print(f"  {name:<16} IoU {'-' if iou is None else f'{iou:.4f}':>7}  Dice {'-' if d is None else f'{d:.4f}':>7}")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "evaluation.json").write_text(json.dumps(res, indent=1))
        from ..plots import plot_confusion

        plot_confusion(res["confusion_matrix"], out / "confusion_matrix.png")
        print(f"wrote {out / 'evaluation.json'} and {out / 'confusion_matrix.png'}")
    return 0


def add_parser(sub) -> None:
    t = sub.add_parser("train", help="train a U-Net on a synthesized set",
                       description="Class-weighted cross-entropy, Adam, flips/rotations/colour jitter. Keeps "
                       "RUN/best.safetensors (best validation mIoU), last.safetensors, state.pt and history.json.")
    t.add_argument("--data", required=True, help="folder with train/ and val/ (from `bloodseg synth`), corrected pairs, "
                   f"a sample bank (tiles composed on the fly), or '{PROCEDURAL}'")
    t.add_argument("--out", required=True, metavar="RUN", help="run folder: best/last checkpoints, state, history")
    t.add_argument("--epochs", type=int, default=20, metavar="N", help="passes over the training set (default: %(default)s)")
    t.add_argument("--batch-size", type=int, default=None, metavar="N",
                   help="tiles per optimizer step (default: 8; 4 with --minutes)")
    t.add_argument("--lr", type=float, default=None,
                   help="learning rate for the first --lr-drop-epoch epochs (default: 1e-3; with --minutes for 70%% "
                   "of the budget, then a fifth of it)")
    t.add_argument("--lr-late", type=float, default=1e-4, help="learning rate afterwards (default: %(default)s)")
    t.add_argument("--lr-drop-epoch", type=int, default=5, metavar="N",
                   help="epoch after which --lr-late is used (default: %(default)s)")
    t.add_argument("--width", type=int, default=32,
                   help="first-level channels; 32 = the reference U-Net, 16 = the shipped model (default: %(default)s)")
    t.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                   help="auto = CUDA GPU, else Apple MPS, else CPU (default: %(default)s)")
    t.add_argument("--workers", type=int, default=None, metavar="N",
                   help="data loader processes; 0 loads in the training process (default: 0; with --minutes: "
                   "4 on a CUDA GPU, else 0)")
    t.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="auto: AMP on CUDA, bf16 on CPUs with native bf16, else fp32 (default: %(default)s)")
    t.add_argument("--seed", type=int, default=0, help="random seed for weights, order and augmentation (default: %(default)s)")
    t.add_argument("--init", default=None, metavar="CKPT",
                   help="start from this checkpoint, e.g. to fine-tune (default: random weights; with --minutes "
                   "the shipped model)")
    f = t.add_argument_group("fine-tuning on corrections within a time budget (--minutes)")
    f.add_argument("--minutes", type=float, default=None, metavar="M",
                   help="fine-tune on the corrected pairs in --data (images/ + masks/, or an 'Add to training set' "
                   "folder) for at most M minutes of wall-clock time, then write RUN/fine_tuned.safetensors and "
                   "RUN/fine_tune.json (held-out score before/after); mask pixels 255 are ignored "
                   "(default: no budget, an ordinary run of --epochs)")
    f.add_argument("--mix-synth", default=None, metavar="SYNTH_DIR",
                   help="synthesized tiles mixed into each batch so classes missing from the corrections are not "
                   f"forgotten: a `bloodseg synth` set (its train/ split), an images/ + masks/ folder, or "
                   f"'{PROCEDURAL}' (cells drawn on the fly; nothing to prepare). A set made from a sample bank "
                   "keeps the rest of the model better: 96.8 %% synthetic pixel accuracy after 5 minutes on 10 "
                   "corrected fields, against 87.6 %% with drawn cells (README, fine-tuning) "
                   f"(default: {PROCEDURAL})")
    f.add_argument("--mix-fraction", type=float, default=None, metavar="F",
                   help="share of each batch taken from --mix-synth, in [0, 1); 0 = corrections only (default: 0.5)")
    f.add_argument("--holdout", type=int, default=None, metavar="N",
                   help="corrected fields held out of training and scored before and after (pixel accuracy and "
                   "WBC Dice on labelled pixels): the val/ pairs if any, else the last N by name; 0 = none "
                   "(default: 1)")
    f.add_argument("--train-encoder", action="store_true",
                   help="with --minutes: adapt the encoder too; the checkpoint then loses the size model behind the "
                   "automatic RBC diameter (default: decoder only, the size model stays valid)")
    f.add_argument("--overwrite", action="store_true",
                   help="replace the checkpoint already in --out (never allowed for the package's models/ folder) "
                   "(default: refuse)")
    t.add_argument("--resume", action="store_true", help="continue an interrupted run in --out from its last finished epoch")
    t.add_argument("--no-augment", action="store_true", help="no flips, rotations or colour jitter (default: augment)")
    t.add_argument("--bank-tiles", type=int, default=2000, metavar="N",
                   help="with a sample bank as --data: tiles composed per epoch from train-split samples (default: %(default)s)")
    t.add_argument("--bank-val-tiles", type=int, default=200, metavar="N",
                   help="with a sample bank as --data: validation tiles from val-split samples (default: %(default)s)")
    t.add_argument("--procedural-tiles", type=int, default=2000, help=argparse.SUPPRESS)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="pixel accuracy, per-class IoU/Dice, mIoU, confusion matrix")
    e.add_argument("--model", required=True, metavar="CKPT", help="checkpoint (.safetensors) to evaluate")
    e.add_argument("--data", required=True, help=f"a synthesized set (its --split is used) or an images/masks folder, or '{PROCEDURAL}'")
    e.add_argument("--split", default="test", help="split of a synthesized set to score (default: %(default)s)")
    e.add_argument("--out", default=None, metavar="DIR",
                   help="write evaluation.json and confusion_matrix.png here (default: print only)")
    e.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                   help="auto = CUDA GPU, else Apple MPS, else CPU (default: %(default)s)")
    e.add_argument("--backend", default="auto", choices=BACKENDS, help=BACKEND_HELP)
    e.add_argument("--batch-size", type=int, default=8, metavar="N", help="images per forward pass (default: %(default)s)")
    e.add_argument("--tta", default="none", choices=["none", "flip", "d4"],
                   help="test-time augmentation: average over a mirror (flip, 2x time) or all 8 flips/rotations "
                        "(d4, 8x) (default: %(default)s)")
    e.add_argument("--seed", type=int, default=12345, help=f"random seed of the '{PROCEDURAL}' tiles (default: %(default)s)")
    e.add_argument("--procedural-tiles", type=int, default=100, help=argparse.SUPPRESS)
    b = e.add_argument_group("your own annotated fields (--boxes): the real-field benchmark's metrics on them")
    b.add_argument("--boxes", default=None, choices=("yolo", "boxes-csv"),
                   help="--data is a box-annotated set in this layout (as `bloodseg bank import`): score WBCs found, "
                   "false WBCs, WBC types against the box types, RBC counts and platelets, at automatic, given and "
                   "shared scale; --out gets evaluation.json and sheet.png")
    b.add_argument("--box-classes", type=names, default=None, metavar="NAMES",
                   help="yolo: the class of each YOLO id 0, 1, ... in order (default: data.yaml or classes.txt)")
    b.add_argument("--rbc-diameter", type=positive_float, default=None, metavar="PX",
                   help="the RBC diameter for 'given' scale (default: from the RBC boxes, else measured)")
    b.add_argument("--rbcs-complete", action="store_true",
                   help="every RBC of every field is boxed: score the RBC count")
    b.add_argument("--limit", type=positive_int, default=None, metavar="N", help="at most N fields, evenly spread")
    e.set_defaults(func=cmd_evaluate)
