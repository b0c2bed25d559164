"""Checkpoints: safetensors weights (no code runs on load) with JSON metadata in the header."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .classes import NUM_CLASSES, check_class_table, class_table
from .model import UNet

FORMAT = "bloodseg-checkpoint"
VERSION = 1
META_KEY = "bloodseg"
DEFAULT_MODEL = Path(__file__).parent / "models" / "default.safetensors"

# ImageNet statistics are meaningless for stained smears; these are the mean/std of RGB/255
# over synthetic training tiles, overwritten by training with the measured values.
DEFAULT_MEAN = (0.80, 0.70, 0.72)
DEFAULT_STD = (0.12, 0.16, 0.13)
TRAINING_RBC_DIAMETER = 36.0


class CheckpointError(ValueError):
    """A file that is not a usable napari-bloodseg checkpoint."""


@dataclass
class ModelInfo:
    """Everything besides the weights that inference and training need to know."""

    width: int = 32
    mean: tuple[float, float, float] = DEFAULT_MEAN
    std: tuple[float, float, float] = DEFAULT_STD
    rbc_diameter_px: float = TRAINING_RBC_DIAMETER
    training: dict[str, Any] = field(default_factory=dict)
    scale_head: Any = None  # scalehead.ScaleHead fitted to these weights, or None

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "classes": class_table(),
            "architecture": {"name": "unet", "width": self.width, "depth": 4, "num_classes": NUM_CLASSES},
            "normalization": {"mean": list(self.mean), "std": list(self.std), "scale": "rgb/255"},
            "rbc_diameter_px": self.rbc_diameter_px,
            "training": self.training,
        }

    @classmethod
    def from_json(cls, meta: dict[str, Any]) -> "ModelInfo":
        if meta.get("format") != FORMAT:
            raise CheckpointError(f"not a {FORMAT} (format={meta.get('format')!r})")
        if int(meta.get("version", 0)) > VERSION:
            raise CheckpointError(f"checkpoint version {meta['version']} is newer than this napari-bloodseg supports ({VERSION})")
        try:
            check_class_table(meta["classes"])
        except (KeyError, TypeError) as e:
            raise CheckpointError("checkpoint has no class table") from e
        except ValueError as e:
            raise CheckpointError(str(e)) from e
        arch = meta.get("architecture", {})
        if arch.get("name") != "unet":
            raise CheckpointError(f"unknown architecture {arch.get('name')!r}; allowed: 'unet'")
        norm = meta.get("normalization", {})
        return cls(
            width=int(arch["width"]),
            mean=tuple(norm.get("mean", DEFAULT_MEAN)),
            std=tuple(norm.get("std", DEFAULT_STD)),
            rbc_diameter_px=float(meta.get("rbc_diameter_px", TRAINING_RBC_DIAMETER)),
            training=dict(meta.get("training", {})),
        )


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes files private; checkpoints are ordinary files
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_checkpoint(path: str | os.PathLike, model: UNet, info: ModelInfo) -> None:
    from safetensors.torch import save_file

    info.width = model.width
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if info.scale_head is not None:
        tensors.update(info.scale_head.tensors())
    meta = {META_KEY: json.dumps(info.to_json())}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON metadata of a checkpoint, without loading weights."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"model file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(META_KEY)
    except Exception as e:  # safetensors raises its own error types for foreign/corrupt files
        raise CheckpointError(f"{path.name} is not a readable napari-bloodseg checkpoint (corrupted or another format)") from e
    if raw is None:
        raise CheckpointError(f"{path.name} is a safetensors file but not a napari-bloodseg checkpoint (no '{META_KEY}' metadata)")
    try:
        return json.loads(raw)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path.name}: metadata is not valid JSON") from e


def load_checkpoint(path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> tuple[UNet, ModelInfo]:
    """Load a checkpoint (default: the model shipped with the package) → (model in eval mode, info)."""
    from safetensors.torch import load_file

    path = Path(path) if path is not None else DEFAULT_MODEL
    info = ModelInfo.from_json(read_metadata(path))
    try:
        state = load_file(str(path), device="cpu")
    except Exception as e:
        raise CheckpointError(f"{path.name}: weights are corrupted") from e
    from .scalehead import PREFIX, ScaleHead

    head = {k: state.pop(k) for k in [k for k in state if k.startswith(PREFIX)]}
    if head:
        try:
            info.scale_head = ScaleHead.from_tensors(head)
        except ValueError as e:
            raise CheckpointError(f"{path.name}: {e}") from e
    model = UNet(width=info.width)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{path.name}: weights do not match a width-{info.width} U-Net") from e
    return model.to(device).eval(), info


def average_checkpoints(base: str | os.PathLike | None, tuned: str | os.PathLike, alpha: float = 0.5) -> tuple[UNet, ModelInfo]:
    """Weights ``(1 - alpha) * base + alpha * tuned`` (WiSE-FT, Wortsman et al. 2022) of two
    checkpoints of the same network, ``tuned`` fine-tuned from ``base`` (None: the shipped model).
    Batch-norm statistics are averaged too; integer buffers come from ``tuned``. The size model reads
    the encoder's features, which averaging changes: the result has none (automatic scale falls
    back) until one is fitted to it (scripts/fit_scale_head.py)."""
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1] (the weight of the fine-tuned checkpoint), got {alpha}")
    base_model, base_info = load_checkpoint(base)
    model, info = load_checkpoint(tuned)
    b, t = base_model.state_dict(), model.state_dict()
    if base_info.width != info.width:
        raise CheckpointError(f"not the same network: width {base_info.width} against {info.width}")
    model.load_state_dict({k: (1 - alpha) * b[k] + alpha * v if v.is_floating_point() else v for k, v in t.items()})
    info.scale_head = None
    tuned_training, base_training = info.training, base_info.training
    info.training = {"averaged": {"base": str(base if base is not None else DEFAULT_MODEL.name), "tuned": str(tuned),
                                  "alpha": alpha}, "tuned_training": tuned_training, "base_training": base_training}
    wb, wt = base_training.get("class_weights"), tuned_training.get("class_weights")
    if wb and wt and len(wb) == len(wt):  # the loss balance a later fine-tune starts from
        info.training["class_weights"] = [round((1 - alpha) * x + alpha * y, 4) for x, y in zip(wb, wt)]
    return model, info
