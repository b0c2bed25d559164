"""Cross-source check on real cells a model never trained on: segmentation_wbc (Zheng et al.)
Dataset 2 fields — WBC mask Dice against the expert mask, and WBC type accuracy (majority of
the predicted WBC classes inside the expert mask).

    python scripts/eval_zheng.py [--model CKPT] [--data ../shared/data/segmentation_wbc] [--rbc-diameter PX] [--tta flip]
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np

from napari_bloodseg.classes import CLASS_NAMES, WBC_CLASSES, BloodClass
from napari_bloodseg.infer import Segmenter
from napari_bloodseg.io import read_image
from napari_bloodseg.metrics import dice

ZHENG_TYPES = {1: BloodClass.NEUTROPHIL, 2: BloodClass.LYMPHOCYTE, 3: BloodClass.MONOCYTE,
               4: BloodClass.EOSINOPHIL, 5: BloodClass.BASOPHIL}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "segmentation_wbc"))
    ap.add_argument("--dataset", default="2", choices=["1", "2"])
    ap.add_argument("--rbc-diameter", type=float, default=None, help="default: estimated per image")
    ap.add_argument("--tta", default="none", choices=["none", "flip", "d4"], help="test-time augmentation")
    args = ap.parse_args()
    root = Path(args.data)
    labels = {int(r["image ID"]): int(r["class"]) for r in csv.DictReader(open(root / f"Class Labels of Dataset {args.dataset}.csv"))}
    seg = Segmenter.from_file(args.model, device="auto", tta=args.tta)
    dices, correct, confusion = [], 0, Counter()
    wbc_ids = np.array([int(c) for c in WBC_CLASSES])
    for img_path in sorted((root / f"Dataset {args.dataset}").glob("*.bmp")):
        truth = read_image(img_path.with_suffix(".png"))
        truth = (truth[..., 0] if truth.ndim == 3 else truth) > 64  # 128 cytoplasm, 255 nucleus
        res = seg.segment(read_image(img_path), rbc_diameter=args.rbc_diameter)
        pred_wbc = np.isin(res.labels, wbc_ids)
        dices.append(dice(pred_wbc, truth))
        votes = np.bincount(res.labels[truth], minlength=len(CLASS_NAMES))[wbc_ids]
        guess = int(wbc_ids[votes.argmax()]) if votes.sum() else -1
        want = int(ZHENG_TYPES[labels[int(img_path.stem)]])
        correct += guess == want
        confusion[(CLASS_NAMES[want], CLASS_NAMES[guess] if guess >= 0 else "none")] += 1
    d = np.array(dices)
    out = {"images": len(d), "wbc_dice_mean": round(float(d.mean()), 4), "wbc_dice_median": round(float(np.median(d)), 4),
           "wbc_type_accuracy": round(correct / len(d), 4),
           "type_confusion": {f"{t} -> {p}": n for (t, p), n in sorted(confusion.items())}}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
