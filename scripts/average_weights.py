"""Average two checkpoints of the same network weight by weight (WiSE-FT):
``(1 - alpha) * BASE + alpha * TUNED`` (checkpoint.average_checkpoints). A fine-tune that gained one
thing (other cameras) and lost another (another lab's WBC types) often keeps most of both part-way.

    python scripts/average_weights.py --tuned fine_tuned.safetensors --alpha 0.3 --out averaged.safetensors
    python scripts/fit_scale_head.py --model averaged.safetensors ...   # the average has no size model

BASE defaults to the shipped model. An existing OUT is kept unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from napari_bloodseg.checkpoint import CheckpointError, average_checkpoints, save_checkpoint


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", default=None, help="checkpoint at alpha 0 (default: the shipped model)")
    ap.add_argument("--tuned", required=True, help="checkpoint at alpha 1, fine-tuned from BASE")
    ap.add_argument("--alpha", type=float, default=0.5, help="weight of TUNED, in [0, 1]")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args(argv)
    if args.out.exists() and not args.overwrite:
        ap.error(f"{args.out} exists; pass --overwrite to replace it")
    try:
        model, info = average_checkpoints(args.base, args.tuned, args.alpha)
    except (ValueError, CheckpointError) as e:
        ap.error(str(e))
    save_checkpoint(args.out, model, info)
    print(f"wrote {args.out} ({1 - args.alpha:g} x base + {args.alpha:g} x {args.tuned}); fit its size model next")
    return 0


if __name__ == "__main__":
    sys.exit(main())
