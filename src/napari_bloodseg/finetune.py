"""Fine-tune a model on a user's corrected fields within a wall-clock budget (Qt-free).

The corrections are training pairs as written by *Add to training set* (``<folder>/train|val/
images|masks``) or any ``images/`` + ``masks/`` folder, at the training scale (healthy RBC 36 px);
mask value 255 (and the partial codes of :data:`classes.PARTIAL_LABELS`) are not full labels.
One corrected field (or N) is held out and scored before and after, synthesized tiles are mixed in
so that classes absent from the corrections are not forgotten, and the result is a new checkpoint
in a run folder: never the shipped model.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import ConcatDataset, Dataset

from .classes import NUM_CLASSES, PARTIAL_LABELS, SOME_WBC, WBC_CLASSES
from .train import CachedDataset, FolderDataset, RenderedDataset, TrainConfig

Pair = tuple[Path, Path]  # (image PNG, mask PNG)
PROCEDURAL = "procedural"
CHECKPOINT_NAME = "fine_tuned.safetensors"
REPORT_NAME = "fine_tune.json"
TRAIN_SUBDIR = "train_run"  # train()'s own files (best/last by a tiny validation set, state, history)
STEPS_PER_EPOCH = 8  # on a CPU; GPU_EPOCH_FACTOR times more on a GPU, where 8 steps take a fraction of a second
GPU_EPOCH_FACTOR = 4  # so that the end-of-epoch validation and checkpoint writes do not dominate
GPU_WORKERS = 4  # loader processes on a GPU: with the longer epochs one H200 went from 8 to 34 steps/s
LEARNING_RATE = 1e-3  # 10 corrected Zheng DS2 fields, 5 min: type 0.72 -> 0.78 (1e-4: 0.74), no forgetting
MIX_FRACTION = 0.5  # share of synthesized tiles per batch
_WBC_IDS = np.array([int(c) for c in WBC_CLASSES] + [SOME_WBC])


# ----------------------------------------------------------------------------- inputs
def _folder_pairs(root: Path) -> list[Pair]:
    img_dir, mask_dir = root / "images", root / "masks"
    if not img_dir.is_dir() or not mask_dir.is_dir():
        return []
    return [(p, mask_dir / f"{p.stem}.png") for p in sorted(img_dir.glob("*.png")) if (mask_dir / f"{p.stem}.png").is_file()]


def find_pairs(root: str | Path) -> tuple[list[Pair], list[Pair]]:
    """(train, val) corrected pairs of ``root``: its ``images/`` + ``masks/`` (all train), or its
    ``train/`` and ``val/`` splits (an *Add to training set* folder; ``test/`` is left alone)."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root}: no such folder of corrected pairs")
    direct = _folder_pairs(root)
    train, val = (direct, []) if direct else (_folder_pairs(root / "train"), _folder_pairs(root / "val"))
    if not train and not val:
        raise ValueError(f"{root}: no corrected image/mask pairs (expected images/ + masks/, or train/ from 'Add to training set')")
    return train, val


def split_holdout(train: list[Pair], val: list[Pair], holdout: int) -> tuple[list[Pair], list[Pair]]:
    """(pairs to train on, pairs held out for the before/after score): the val/ pairs when there are
    any, else the last ``holdout`` training pairs by name; ``holdout`` 0 holds none out."""
    if holdout < 0:
        raise ValueError(f"holdout must be 0 or more fields, got {holdout}")
    if holdout == 0:
        return train, []
    if val:
        return train, val
    if len(train) <= holdout:
        raise ValueError(f"{len(train)} corrected field(s): need more than {holdout} to hold {holdout} out for the "
                         "before/after score (add corrections, or hold out 0)")
    return train[:-holdout], train[-holdout:]


def check_out_dir(out_dir: str | Path, overwrite: bool = False) -> Path:
    """The run folder for the new checkpoint; ValueError for the package's models/ folder (the
    shipped model is never replaced), a file, or a folder with a checkpoint unless ``overwrite``."""
    from .checkpoint import DEFAULT_MODEL

    out = Path(out_dir).expanduser()
    shipped = DEFAULT_MODEL.parent.resolve()
    res = out.resolve()
    if res == shipped or shipped in res.parents:
        raise ValueError(f"{out} is the models/ folder of the installed package: the shipped model is never "
                         "replaced; choose another output folder")
    if out.suffix == ".safetensors" or out.is_file():
        raise ValueError(f"{out} is a file: --out is a run folder that receives {CHECKPOINT_NAME} and {REPORT_NAME}")
    existing = sorted(out.glob("*.safetensors")) + sorted((out / TRAIN_SUBDIR).glob("*.safetensors"))
    if existing and not overwrite:
        raise ValueError(f"{out} already holds a checkpoint ({existing[0].name}); choose a new folder or pass --overwrite")
    if existing:
        shutil.rmtree(out / TRAIN_SUBDIR, ignore_errors=True)
        for name in (CHECKPOINT_NAME, REPORT_NAME):
            (out / name).unlink(missing_ok=True)
    return out


class PairsDataset(FolderDataset):
    """Chosen (image, mask) pairs; a random tile-sized window of each per access when augmenting."""

    def __init__(self, pairs: list[Pair], augment: bool | str = "mild", repeat: int = 1):
        if not pairs:
            raise ValueError("no image/mask pairs to train on")
        from .train import _level

        self.root, self.items = pairs[0][0].parent.parent, list(pairs)
        self.augment, self.repeat = _level(augment), max(1, int(repeat))


class MixedDataset(Dataset):
    """``n_own`` windows of the corrections then ``n_synth`` tiles drawn at random from ``synth``."""

    def __init__(self, own: Dataset, synth: Dataset | None, n_own: int, n_synth: int, seed: int = 0):
        self.own, self.synth, self.n_own = own, synth, n_own
        self.n_synth = n_synth if synth is not None else 0
        self.seed, self.rng = seed, np.random.default_rng(seed)
        self._worker: tuple[int, np.random.Generator] | None = None

    def __len__(self) -> int:
        return self.n_own + self.n_synth

    def _draw_rng(self) -> np.random.Generator:
        """This process's generator: each loader process draws its own tiles (a copied generator
        would make every process draw the same ones)."""
        from torch.utils.data import get_worker_info

        info = get_worker_info()
        if info is None:
            return self.rng
        if self._worker is None or self._worker[0] != info.seed:
            self._worker = (info.seed, np.random.default_rng([self.seed, info.seed]))
        return self._worker[1]

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if i < self.n_own:
            return self.own[i % len(self.own)]
        return self.synth[int(self._draw_rng().integers(len(self.synth)))]


def synth_dataset(synth: str | Path | None, seed: int = 0, augment: str = "mild") -> Dataset | None:
    """Synthesized tiles to mix in: a set from `bloodseg synth` (its train/ split) or an images/ +
    masks/ folder, 'procedural' (rendered on the fly), or None (no mixing)."""
    if synth is None:
        return None
    if str(synth) == PROCEDURAL:
        return RenderedDataset(100_000, seed=seed + 7, augment=augment)
    root = Path(synth)
    return FolderDataset(root / "train" if (root / "train" / "images").is_dir() else root, augment=augment)


# ----------------------------------------------------------------------------- scoring
def labelled_counts(pred: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """[correct, labelled, WBC overlap, predicted WBC, true WBC] over the labelled pixels of
    ``mask``: class ids, and partial codes (correct when the prediction is one they allow)."""
    pred, mask = np.asarray(pred), np.asarray(mask)
    full = mask < NUM_CLASSES
    correct = int((pred[full] == mask[full]).sum())
    for code, members in PARTIAL_LABELS.items():
        sel = mask == code
        correct += int(np.isin(pred[sel], members).sum())
    known = full | np.isin(mask, list(PARTIAL_LABELS))
    p_wbc = np.isin(pred, _WBC_IDS[:-1]) & known
    t_wbc = np.isin(mask, _WBC_IDS)
    return np.array([correct, int(known.sum()), int((p_wbc & t_wbc).sum()), int(p_wbc.sum()), int(t_wbc.sum())], np.int64)


def summarize_counts(c: np.ndarray, n: int) -> dict[str, Any]:
    """Pixel accuracy and WBC Dice (None when nothing is labelled / no WBC anywhere) of summed counts."""
    correct, labelled, inter, p, t = (int(v) for v in c)
    return {"pixel_accuracy": round(correct / labelled, 4) if labelled else None,
            "wbc_dice": round(2 * inter / (p + t), 4) if p + t else None,
            "labelled_pixels": labelled, "fields": n}


def score_pairs(model_path: str | Path | None, pairs: list[Pair], device: str = "cpu") -> dict[str, Any]:
    """Segment each pair's image (already at the training scale) with the checkpoint and score it
    against its mask's labelled pixels (see :func:`labelled_counts`)."""
    from .infer import Segmenter
    from .io import read_image

    if not pairs:
        return summarize_counts(np.zeros(5, np.int64), 0)
    seg = Segmenter.from_file(model_path, device=device, backend="torch", precision="fp32")
    total = np.zeros(5, np.int64)
    for img_path, mask_path in pairs:
        mask = read_image(mask_path)
        mask = mask[..., 0] if mask.ndim == 3 else mask
        labels = seg.segment(read_image(img_path), seg.info.rbc_diameter_px).labels
        total += labelled_counts(labels, mask)
    return summarize_counts(total, len(pairs))


# ----------------------------------------------------------------------------- training
@dataclass
class _TimedConfig(TrainConfig):
    """Fine-tuning rate until ``drop_time`` (time.time()), then the late rate."""

    drop_time: float = 0.0

    def lr_at(self, epoch: int) -> float:
        return self.lr if time.time() < self.drop_time else self.lr_late


def fine_tune(
    init: str | Path | None,
    pairs_dir: str | Path,
    out_dir: str | Path,
    minutes: float,
    synth_dir: str | Path | None = PROCEDURAL,
    mix_fraction: float = MIX_FRACTION,
    holdout: int = 1,
    batch_size: int = 4,
    lr: float = LEARNING_RATE,
    device: str = "auto",
    seed: int = 0,
    overwrite: bool = False,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    freeze_encoder: bool = True,
    workers: int | None = None,
) -> dict[str, Any]:
    """Fine-tune ``init`` (None: the shipped model) on the corrected pairs of ``pairs_dir`` for at
    most ``minutes`` of wall-clock time (preparation included; at least one step), ``mix_fraction``
    of each batch drawn from ``synth_dir`` (see :func:`synth_dataset`), holding out ``holdout``
    pairs (see :func:`split_holdout`) scored before and after. Writes ``out_dir/fine_tuned.
    safetensors`` and ``out_dir/fine_tune.json``; returns that report. ``freeze_encoder``: only the
    decoder learns, so the checkpoint keeps the size model of ``init`` (one that reads the bottleneck
    alone, as the shipped one, stays exact). ``workers``: loader processes (None: none on a CPU,
    :data:`GPU_WORKERS` on a CUDA GPU). ``on_progress`` receives
    train()'s events plus {"kind": "phase", "text"}; ``should_stop`` ends training early."""
    from .checkpoint import (
        DEFAULT_MODEL,
        atomic_write,
        load_checkpoint,
        save_checkpoint,
    )
    from .train import train

    t0 = time.time()
    if not (minutes > 0 and math.isfinite(minutes)):
        raise ValueError(f"minutes must be a positive number, got {minutes}")
    if not 0 <= mix_fraction < 1:
        raise ValueError(f"mix fraction must be in [0, 1): the share of synthesized tiles per batch, got {mix_fraction}")
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    if workers is not None and workers < 0:
        raise ValueError(f"workers must be 0 or more loader processes, got {workers}")
    from .infer import resolve_device

    device_type = resolve_device(device).type  # a bad device name fails here, before any work
    on_gpu = device_type == "cuda"
    if workers is None:
        workers = min(GPU_WORKERS, max(1, (os.cpu_count() or 2) - 1)) if on_gpu else 0
    steps_per_epoch = STEPS_PER_EPOCH * (GPU_EPOCH_FACTOR if on_gpu else 1)
    init_path = Path(init) if init is not None else DEFAULT_MODEL
    if not init_path.is_file():
        raise ValueError(f"{init_path}: no such checkpoint to start from")
    out = check_out_dir(out_dir, overwrite)
    train_pairs, held = split_holdout(*find_pairs(pairs_dir), holdout)
    emit = on_progress or (lambda ev: None)
    deadline = t0 + 60 * minutes

    synth = synth_dataset(synth_dir, seed) if mix_fraction > 0 else None  # a bad set fails before any work
    emit({"kind": "phase", "text": "scoring the held-out field(s) before"})
    before = score_pairs(init_path, held, "cpu")
    n_synth = round(steps_per_epoch * batch_size * mix_fraction) if synth is not None else 0
    n_own = steps_per_epoch * batch_size - n_synth
    own = PairsDataset(train_pairs, "mild")
    train_set = MixedDataset(own, synth, n_own, n_synth, seed)
    val_parts: list[Dataset] = [CachedDataset(PairsDataset(train_pairs[:2], "none"))]
    if synth is not None:
        val_parts.append(CachedDataset(MixedDataset(own, synth_dataset(synth_dir, seed + 1, "none"), 0, 2, seed + 1)))
    steps = {"n": 0}
    stop_event = threading.Event()

    def progress(ev: dict[str, Any]) -> None:
        if ev["kind"] == "batch":
            steps["n"] += 1
        emit({**ev, "elapsed": time.time() - t0, "budget": 60 * minutes})

    def stop() -> bool:
        if should_stop is not None and should_stop():
            stop_event.set()
        return stop_event.is_set() or (steps["n"] >= 1 and time.time() > deadline)

    emit({"kind": "phase", "text": "fine-tuning"})
    t_train = time.time()
    _, init_info = load_checkpoint(init_path)
    weights = init_info.training.get("class_weights")  # the loss balance the model was trained with
    cfg = _TimedConfig(epochs=10**6, batch_size=batch_size, lr=lr, lr_late=lr / 5, device=device, seed=seed, workers=workers,
                       init=str(init_path), precision="fp32", freeze_bn=True, freeze_encoder=freeze_encoder,
                       class_weights=tuple(weights) if weights and len(weights) == NUM_CLASSES else None,
                       drop_time=t_train + 0.7 * max(0.0, deadline - t_train))
    state = train(train_set, ConcatDataset(val_parts), out / TRAIN_SUBDIR, cfg, on_progress=progress, should_stop=stop)
    seconds_training = time.time() - t_train
    info = init_info
    if not freeze_encoder:
        info.scale_head = None  # the size model reads the old encoder: dropped (automatic scale falls back)
    info.training = {"fine_tuned_from": str(init_path), "fine_tune": {
        "pairs": [p[0].name for p in train_pairs], "held_out": [p[0].name for p in held], "steps": steps["n"],
        "batch_size": batch_size, "lr": lr, "mix_fraction": mix_fraction if synth is not None else 0.0,
        "synth": None if synth is None else str(synth_dir), "seconds": round(seconds_training, 1)}}
    ckpt = out / CHECKPOINT_NAME
    save_checkpoint(ckpt, state.model.cpu(), info)
    emit({"kind": "phase", "text": "scoring the held-out field(s) after"})
    after = score_pairs(ckpt, held, "cpu")
    report = {"init": str(init_path), "checkpoint": str(ckpt), "pairs_dir": str(pairs_dir),
              "train_fields": len(train_pairs), "held_out": [p[0].stem for p in held],
              "minutes": minutes, "steps": steps["n"], "epochs": state.epoch,
              "stopped_by_user": stop_event.is_set(),
              "seconds_training": round(seconds_training, 1), "seconds_total": round(time.time() - t0, 1),
              "batch_size": batch_size, "device": device_type, "workers": workers,
              "synth": None if synth is None else str(synth_dir),
              "mix_fraction": mix_fraction if synth is not None else 0.0, "before": before, "after": after}
    atomic_write(out / REPORT_NAME, lambda tmp: Path(tmp).write_text(json.dumps(report, indent=1)))
    emit({"kind": "done", "report": report})
    return report


def report_text(report: dict[str, Any]) -> str:
    """One line: the held-out score before → after, e.g. for a status bar."""
    b, a = report["before"], report["after"]
    if not b.get("fields"):
        return f"fine-tuned in {report['steps']} steps (no field held out to score)"

    def fmt(v: float | None) -> str:
        return "–" if v is None else f"{100 * v:.1f} %"

    return (f"held-out field{'s' if b['fields'] > 1 else ''} {', '.join(report['held_out'])}: "
            f"pixel accuracy {fmt(b['pixel_accuracy'])} → {fmt(a['pixel_accuracy'])}, "
            f"WBC Dice {fmt(b['wbc_dice'])} → {fmt(a['wbc_dice'])} ({report['steps']} steps)")
