"""Segmentation metrics as plain functions over class-id maps."""

from __future__ import annotations

import numpy as np

from .classes import CLASS_NAMES, NUM_CLASSES


def confusion_matrix(pred: np.ndarray, truth: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """cm[t, p] = pixels of true class t predicted as p; ignore (255) and partial-label pixels left out."""
    pred, truth = np.asarray(pred).ravel(), np.asarray(truth).ravel()
    keep = truth < num_classes
    idx = truth[keep].astype(np.int64) * num_classes + pred[keep].astype(np.int64)
    return np.bincount(idx, minlength=num_classes**2).reshape(num_classes, num_classes)


def scores(cm: np.ndarray) -> dict:
    """Pixel accuracy, per-class IoU and Dice, and mIoU over the classes present in the truth."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    truth, pred = cm.sum(1), cm.sum(0)
    union = truth + pred - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        dice = np.where(truth + pred > 0, 2 * tp / (truth + pred), np.nan)
    present = truth > 0
    return {
        "pixel_accuracy": float(tp.sum() / max(1.0, cm.sum())),
        "miou": float(np.nanmean(iou[present])) if present.any() else float("nan"),
        "iou": {CLASS_NAMES[i]: (None if np.isnan(iou[i]) else float(iou[i])) for i in range(len(tp))},
        "dice": {CLASS_NAMES[i]: (None if np.isnan(dice[i]) else float(dice[i])) for i in range(len(tp))},
        "pixels": {CLASS_NAMES[i]: int(truth[i]) for i in range(len(tp))},
        "confusion_matrix": cm.astype(np.int64).tolist(),
    }


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two binary masks (1.0 when both are empty)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else float(2 * (a & b).sum() / s)
