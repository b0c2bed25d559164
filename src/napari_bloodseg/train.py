"""Training: the reference recipe (class-weighted softmax cross-entropy, Adam 1e-3 → 1e-4),
best-on-validation checkpoints, and resume after an interruption."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .augment import AugmentLevel, augment_level, augment_pair
from .checkpoint import ModelInfo, atomic_write, load_checkpoint, save_checkpoint
from .classes import IGNORE_INDEX, NUM_CLASSES, WBC_CLASSES
from .losses import PartialCrossEntropy, distillation_loss
from .metrics import confusion_matrix, scores
from .model import TILE, UNet

# ----------------------------------------------------------------------------- data
Augment = bool | str | AugmentLevel  # True: the wide randomisation, False: none


def _level(augment: Augment) -> AugmentLevel:
    if isinstance(augment, bool):
        return AugmentLevel.WIDE if augment else AugmentLevel.NONE
    return augment_level(augment)


class FolderDataset(Dataset):
    """A synthesized or exported split: ``images/<id>.png`` with ``masks/<id>.png`` (class ids).

    Images larger than a tile (whole real fields) give a random tile-sized window per access when
    augmenting (else the centre); ``repeat`` lists each pair that many times per epoch."""

    def __init__(self, root: str | Path, augment: Augment = False, repeat: int = 1):
        self.root = Path(root)
        img_dir, mask_dir = self.root / "images", self.root / "masks"
        if not img_dir.is_dir() or not mask_dir.is_dir():
            raise ValueError(f"{self.root}: expected 'images/' and 'masks/' folders (a synthesized split or exported pairs)")
        self.items = [(p, mask_dir / f"{p.stem}.png") for p in sorted(img_dir.glob("*.png")) if (mask_dir / f"{p.stem}.png").is_file()]
        if not self.items:
            raise ValueError(f"{self.root}: no image/mask pairs found")
        self.augment = _level(augment)
        self.repeat = max(1, int(repeat))

    def __len__(self) -> int:
        return len(self.items) * self.repeat

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        from .io import imread

        img_path, mask_path = self.items[i % len(self.items)]
        img = imread(img_path)[..., :3]
        mask = imread(mask_path)
        if mask.ndim == 3:
            mask = mask[..., 0]
        rng = np.random.default_rng()
        img, mask = _fit_tile(img, mask, rng=rng if self.augment is not AugmentLevel.NONE else None)
        return augment_pair(img, mask, rng, self.augment)


class RenderedDataset(Dataset):
    """Tiles drawn by the procedural renderer: index → seed, so every worker sees the same data."""

    def __init__(self, n: int, seed: int = 0, size: int = TILE, augment: Augment = False):
        self.n, self.seed, self.size, self.augment = n, seed, size, _level(augment)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        from .render import render_smear

        rng = np.random.default_rng([self.seed, i])
        counts = {int(c): int(rng.integers(0, 2)) for c in range(1, 6)}
        counts[6] = int(rng.integers(0, 4))
        counts[7] = int(rng.integers(0, 2))
        kw = dict(rbc_diameter=float(rng.uniform(33, 39)), seed=int(rng.integers(2**31)),
                  rbc_density=float(rng.uniform(0.25, 0.6)), infected_fraction=float(rng.choice([0.0, 0.3, 1.0])))
        while True:
            try:
                s = render_smear((self.size, self.size), counts=counts, **kw)
                break
            except ValueError:  # small tiles: drop the largest requested cell until the rest fit
                big = [c for c in (5, 3, 1, 2, 4, 7, 6) if counts.get(c)]
                if not big:
                    raise
                counts[big[0]] -= 1
        return augment_pair(s.image, s.mask, rng, self.augment)


class CachedDataset(Dataset):
    """Holds a dataset's items in memory (rendered or decoded once); augments afresh on each access."""

    def __init__(self, base: Dataset, augment: Augment = False):
        self.items = [base[i] for i in range(len(base))]
        self.augment = _level(augment)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        img, mask = self.items[i]
        return augment_pair(img, mask, np.random.default_rng(), self.augment)


class AugmentedDataset(Dataset):
    """Augmentation (see :mod:`augment`) on top of another dataset's (image, mask) pairs."""

    def __init__(self, base: Dataset, augment: Augment = True):
        self.base, self.augment = base, _level(augment)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        img, mask = self.base[i]
        return augment_pair(img, mask, np.random.default_rng(), self.augment)

    def grouped_order(self, epoch: int = 0) -> list[int]:
        return self.base.grouped_order(epoch)


class _EpochOrder(torch.utils.data.Sampler):
    """A dataset's own per-epoch order (``grouped_order``: composed tiles of one field together,
    so that each field is built once per worker rather than once per tile)."""

    def __init__(self, dataset):
        self.dataset, self.epoch = dataset, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        return iter(self.dataset.grouped_order(self.epoch))

    def __len__(self) -> int:
        return len(self.dataset)


def _fit_tile(img: np.ndarray, mask: np.ndarray, size: int = TILE,
              rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pad (mask → ignore) or crop to size x size so any pair can be batched: the centre, or a
    random window when ``rng`` is given."""
    h, w = mask.shape
    if h < size or w < size:
        ph, pw = max(0, size - h), max(0, size - w)
        img = np.pad(img, ((0, ph), (0, pw), (0, 0)), mode="reflect")
        mask = np.pad(mask, ((0, ph), (0, pw)), constant_values=IGNORE_INDEX)
        h, w = mask.shape
    if rng is not None:
        y, x = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    else:
        y, x = (h - size) // 2, (w - size) // 2
    return img[y : y + size, x : x + size], mask[y : y + size, x : x + size]


def correct_pixels(logits: torch.Tensor, masks: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Labelled pixels whose true class has the highest logit: arg-max accuracy (ties aside) without
    the arg-max over the class axis, which on CPU costs about a tenth of a fine-tuning step."""
    true_logit = logits.gather(1, torch.where(valid, masks, 0).unsqueeze(1))
    return ((true_logit >= logits.amax(1, keepdim=True)).squeeze(1) & valid).sum()


def _collate(batch):
    imgs = torch.from_numpy(np.stack([b[0] for b in batch])).permute(0, 3, 1, 2).contiguous()
    masks = torch.from_numpy(np.stack([b[1] for b in batch]).astype(np.int64))
    return imgs, masks


def class_pixel_counts(dataset: Dataset, max_items: int = 200) -> np.ndarray:
    counts = np.zeros(NUM_CLASSES, np.int64)
    step = max(1, len(dataset) // max_items)
    for i in range(0, len(dataset), step):
        m = dataset[i][1]
        counts += np.bincount(m[m < NUM_CLASSES].ravel(), minlength=NUM_CLASSES)[:NUM_CLASSES]
    return counts


def class_weights(pixel_counts: np.ndarray) -> torch.Tensor:
    """Inverse-frequency weights (median-normalised) so every class contributes alike;
    classes absent from the counts get the largest weight present."""
    freq = pixel_counts / max(1, pixel_counts.sum())
    present = freq > 0
    w = np.ones(NUM_CLASSES)
    if present.any():
        w[present] = np.median(freq[present]) / freq[present]
        w[~present] = w[present].max()
    return torch.tensor(np.clip(w, 0.01, 100.0), dtype=torch.float32)


def dataset_stats(dataset: Dataset, max_items: int = 100) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean/std of RGB/255 over a sample of the training set."""
    step = max(1, len(dataset) // max_items)
    px = np.concatenate([dataset[i][0].reshape(-1, 3)[::7] for i in range(0, len(dataset), step)]).astype(np.float64) / 255
    return tuple(px.mean(0).round(4).tolist()), tuple(np.maximum(px.std(0), 1e-3).round(4).tolist())


# ----------------------------------------------------------------------------- loop
@dataclass
class TrainConfig:
    epochs: int = 20
    batch_size: int = 8
    lr: float = 1e-3
    lr_late: float = 1e-4
    lr_drop_epoch: int = 5  # reference: 1e-3 for the first 5 epochs, then 1e-4
    width: int = 32
    workers: int = 0
    seed: int = 0
    device: str = "auto"
    init: str | None = None  # checkpoint to start from (fine-tuning); None = random init
    precision: str = "auto"  # auto: bf16 autocast on CPUs with native bf16, AMP on CUDA; else fp32
    freeze_bn: bool = False  # batch norms keep their running statistics (fine-tuning with small batches)
    freeze_encoder: bool = False  # only the decoder learns: the encoder's features (and the size model) stay
    class_weights: tuple[float, ...] | None = None  # loss weights per class; None: from the training set
    distill: float = 0.0  # with init: weight of the pull toward the starting model's own predictions (0: none)
    distill_where: Literal["all", "unlabelled"] = "all"  # unlabelled: only pixels without a full label
    distill_classes: Literal["all", "wbc"] = "all"  # wbc: only the WBC classes are kept (the rest as one bin)

    def lr_at(self, epoch: int) -> float:
        return self.lr if epoch < self.lr_drop_epoch else self.lr_late


@dataclass
class EpochResult:
    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    val_miou: float
    lr: float
    seconds: float


@dataclass
class TrainState:
    epoch: int = 0  # epochs completed
    best_accuracy: float = -1.0
    best_miou: float = -1.0
    lowest_val_loss: float = math.inf
    history: list[dict[str, Any]] = field(default_factory=list)


def training_autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype:
    """Mixed precision where it pays: AMP (bf16 or fp16) on CUDA, bf16 on CPUs with native bf16."""
    from .infer import resolve_precision

    return resolve_precision(precision, device)


def _to_input(imgs: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (imgs.float().div_(255) - mean) / std


def evaluate_model(model: nn.Module, loader: DataLoader, info: ModelInfo, device: torch.device,
                   loss_fn: nn.Module | None = None, tta: str = "none") -> dict[str, Any]:
    """Loss (if a loss is given; of the plain pass) and the confusion matrix over a loader,
    predictions averaged over the test-time augmentation ``tta`` (see :class:`infer.TTA`)."""
    from .infer import predict_probs

    mean = torch.tensor(info.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(info.std, device=device).view(1, 3, 1, 1)
    cm = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    total_loss, n = 0.0, 0
    model.eval()
    with torch.inference_mode():
        for imgs, masks in loader:
            imgs, masks = imgs.to(device), masks.to(device)
            x = _to_input(imgs, mean, std)
            logits = model(x)
            if loss_fn is not None:
                total_loss += float(loss_fn(logits, masks)) * len(imgs)
                n += len(imgs)
            pred = logits.argmax(1) if tta == "none" else predict_probs(model, x, tta, first_logits=logits).argmax(1)
            cm += confusion_matrix(pred.cpu().numpy(), masks.cpu().numpy())
    out = scores(cm)
    out["loss"] = total_loss / max(1, n)
    return out


def train(
    train_set: Dataset,
    val_set: Dataset,
    out: str | Path,
    config: TrainConfig,
    resume: bool = False,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainState:
    """Train and write ``out/best.safetensors`` (best validation mIoU), ``out/last.safetensors``,
    ``out/state.pt`` (optimizer + counters, for ``resume``) and ``out/history.json``.

    ``on_progress`` receives {"kind": "batch"|"epoch", ...}; ``should_stop`` is polled each batch and
    stops after saving what the finished epochs earned."""
    from .infer import resolve_device

    if config.distill < 0:
        raise ValueError(f"distill must be >= 0, got {config.distill}")
    if config.distill_where not in ("all", "unlabelled"):
        raise ValueError(f"distill_where must be 'all' or 'unlabelled', got {config.distill_where!r}")
    if config.distill_classes not in ("all", "wbc"):
        raise ValueError(f"distill_classes must be 'all' or 'wbc', got {config.distill_classes!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    state = TrainState()
    state_path = out / "state.pt"
    if resume and state_path.is_file():
        model, info = load_checkpoint(out / "last.safetensors")
        saved = torch.load(state_path, map_location="cpu", weights_only=True)
        state = TrainState(**json.loads(saved["state"]))
        t = info.training
        if t.get("epoch", 0) > state.epoch:
            # stopped between writing the checkpoint and the state: the checkpoint is the newer, and it
            # carries the counters (the optimizer's moments stay one epoch old)
            state = TrainState(epoch=t["epoch"], best_accuracy=t["best_val_accuracy"], best_miou=t["best_val_miou"],
                               lowest_val_loss=t["lowest_val_loss"], history=list(t["history"]))
        weights = saved["class_weights"]
        config = type(config)(**{**asdict(config), **json.loads(saved["config"]), "epochs": config.epochs})
    else:
        if any(out.glob("*.safetensors")) and not resume:
            raise FileExistsError(f"{out} already holds a training run; use resume or another folder")
        if config.init:
            model, info = load_checkpoint(config.init)
            info.training = {"fine_tuned_from": str(config.init)}
            if not config.freeze_encoder:
                info.scale_head = None  # fitted to the encoder before training: refit with scripts/fit_scale_head.py
        else:
            mean, std = dataset_stats(train_set)
            model, info = UNet(width=config.width), ModelInfo(width=config.width, mean=mean, std=std)
        if config.class_weights is not None:
            if len(config.class_weights) != NUM_CLASSES:
                raise ValueError(f"class_weights needs {NUM_CLASSES} values, got {len(config.class_weights)}")
            weights = torch.tensor(config.class_weights, dtype=torch.float32)
        else:
            weights = class_weights(class_pixel_counts(train_set))
    kept_classes = torch.tensor([int(c) for c in WBC_CLASSES]) if config.distill_classes == "wbc" else None
    teacher = None
    if config.distill > 0:
        if not config.init:
            raise ValueError("distill needs init: the starting model whose predictions are kept")
        teacher = load_checkpoint(config.init)[0].to(device).eval().requires_grad_(False)
    model = model.to(device)
    if config.freeze_encoder:
        model.down.requires_grad_(False)
    cuda = device.type == "cuda"
    if cuda:  # fixed tile size: let cuDNN pick its fastest kernels; NHWC suits tensor cores
        torch.backends.cudnn.benchmark = True
        model = model.to(memory_format=torch.channels_last)
        if teacher is not None:
            teacher = teacher.to(memory_format=torch.channels_last)
    dist = torch.distributed
    ddp = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    rank = dist.get_rank() if ddp else 0
    net = model
    if ddp:  # launched by torchrun: one process per GPU (or CPU slot); rank 0 writes
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    autocast_dtype = training_autocast_dtype(device, config.precision)
    scaler = torch.amp.GradScaler("cuda") if autocast_dtype == torch.float16 else None
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config.lr_at(state.epoch))
    if resume and state_path.is_file():
        opt.load_state_dict(saved["optimizer"])
    loss_fn = PartialCrossEntropy(weights).to(device)
    g = torch.Generator().manual_seed(config.seed)
    if ddp:
        sampler = torch.utils.data.DistributedSampler(train_set, shuffle=True, seed=config.seed)
    elif hasattr(train_set, "grouped_order"):
        sampler = _EpochOrder(train_set)
    else:
        sampler = None
    loader_kw = dict(num_workers=config.workers, collate_fn=_collate, pin_memory=cuda,
                     persistent_workers=config.workers > 0)
    train_loader = DataLoader(train_set, batch_size=config.batch_size, shuffle=sampler is None, sampler=sampler,
                              drop_last=len(train_set) > config.batch_size, generator=g, **loader_kw)
    val_loader = DataLoader(val_set, batch_size=config.batch_size, **loader_kw)
    mean = torch.tensor(info.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(info.std, device=device).view(1, 3, 1, 1)

    for epoch in range(state.epoch, config.epochs):
        t0 = time.time()
        lr = config.lr_at(epoch)
        for group in opt.param_groups:
            group["lr"] = lr
        if sampler is not None:
            sampler.set_epoch(epoch)
        net.train()
        if config.freeze_bn or config.freeze_encoder:
            for m in (model if config.freeze_bn else model.down).modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        # running sums stay on the device: no host sync per batch unless progress is reported
        tot_loss, tot_correct, tot_px = (torch.zeros((), dtype=torch.float64, device=device) for _ in range(3))
        tot_n, stopped = 0, False
        for step, (imgs, masks) in enumerate(train_loader):
            if should_stop is not None and should_stop():
                stopped = True
                break
            imgs, masks = imgs.to(device, non_blocking=True), masks.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype != torch.float32):
                x = _to_input(imgs, mean, std)
                if cuda:
                    x = x.contiguous(memory_format=torch.channels_last)
                logits = net(x)
                loss = loss_fn(logits.float(), masks)
                if teacher is not None:
                    with torch.no_grad():
                        kept = teacher(x)
                    where = masks >= NUM_CLASSES if config.distill_where == "unlabelled" else None
                    loss = loss + config.distill * distillation_loss(logits, kept, where, kept_classes)
            opt.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
            valid = masks < NUM_CLASSES
            tot_loss += loss.detach() * len(imgs)
            tot_n += len(imgs)
            tot_correct += correct_pixels(logits.detach(), masks, valid)
            tot_px += valid.sum()
            if on_progress is not None:
                on_progress({"kind": "batch", "epoch": epoch, "step": step + 1, "steps": len(train_loader), "loss": float(loss.detach())})
        if stopped:
            break
        val = evaluate_model(model, val_loader, info, device, loss_fn)
        res = EpochResult(epoch + 1, float(tot_loss) / max(1, tot_n), float(tot_correct) / max(1.0, float(tot_px)),
                          val["loss"], val["pixel_accuracy"], val["miou"], lr, time.time() - t0)
        state.epoch = epoch + 1
        state.history.append(asdict(res))
        state.lowest_val_loss = min(state.lowest_val_loss, res.val_loss)
        improved = res.val_miou > state.best_miou
        if improved:
            state.best_miou, state.best_accuracy = res.val_miou, res.val_accuracy
        info.training = {
            **{k: v for k, v in info.training.items() if k == "fine_tuned_from"},
            "epoch": state.epoch, "batch_size": config.batch_size, "learning_rate": lr,
            "best_val_accuracy": state.best_accuracy, "best_val_miou": state.best_miou,
            "lowest_val_loss": state.lowest_val_loss, "history": state.history,
            "class_weights": [round(float(w), 4) for w in weights], "width": config.width,
            "train_items": len(train_set), "val_items": len(val_set),
        }
        if rank != 0:
            continue
        if improved:
            save_checkpoint(out / "best.safetensors", model, info)
        save_checkpoint(out / "last.safetensors", model, info)
        blob = {"optimizer": opt.state_dict(), "class_weights": weights,
                "state": json.dumps(asdict(state)), "config": json.dumps(asdict(config))}
        atomic_write(state_path, lambda tmp: torch.save(blob, tmp))
        atomic_write(out / "history.json", lambda tmp: Path(tmp).write_text(json.dumps(asdict(state), indent=1)))
        if on_progress is not None:
            on_progress({"kind": "epoch", **asdict(res), "improved": improved})
    state.model = model  # the trained network, for callers; not part of the saved state
    return state


PROCEDURAL = "procedural"  # datasets_for: tiles rendered on the fly


def datasets_for(data: str, augment: bool = True, n_procedural: int = 2000, seed: int = 0,
                 bank_tiles: tuple[int, int] = (2000, 200)):
    """(train, val) datasets from a synthesized set (train/ + val/), a folder of corrected pairs
    (train/ only, or images/ + masks/: validated on the same pairs), a sample bank (tiles composed
    on the fly from its train and val samples: ``bank_tiles`` per epoch and for validation), or
    'procedural'."""
    from .bank.store import is_bank

    if data == PROCEDURAL:
        return RenderedDataset(n_procedural, seed=seed, augment=augment), RenderedDataset(max(8, n_procedural // 10), seed=seed + 1)
    root = Path(data)
    if is_bank(root):
        from .synth import SamplePool, SynthDataset

        pool = SamplePool.from_bank_dir(root)
        for split in ("train", "val"):
            if not pool.samples(split=split):
                raise ValueError(f"{root}: the sample bank has no {split}-split samples to compose {split} tiles from")
        train = SynthDataset(pool, "train", n=bank_tiles[0], seed=seed)
        val = SynthDataset(pool, "val", n=bank_tiles[1], seed=seed)
        return (AugmentedDataset(train) if augment else train), val
    if (root / "images").is_dir():
        return FolderDataset(root, augment=augment), FolderDataset(root)
    if not (root / "train").is_dir():
        raise ValueError(f"{root}: expected 'train/' and 'val/' splits (from `bloodseg synth` or 'Add to training set'), "
                         f"an images/ + masks/ folder, or '{PROCEDURAL}'")
    val = root / "val" if (root / "val").is_dir() else root / "train"
    return FolderDataset(root / "train", augment=augment), FolderDataset(val)
