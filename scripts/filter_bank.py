"""Copy a sample bank keeping only samples whose licence is allowed (the shipped model's rule:
permissive sources only, no GPL-3.0 Zheng sets).

    python scripts/filter_bank.py SRC_BANK DST_BANK [--exclude-licence GPL-3.0]
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
from collections import Counter
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--exclude-licence", action="append", default=None)
    args = ap.parse_args()
    excluded = set(args.exclude_licence or ["GPL-3.0"])
    src, dst = Path(args.src), Path(args.dst)
    if dst.exists():
        raise SystemExit(f"{dst} exists; choose a new folder")
    rows = list(csv.DictReader(open(src / "manifest.csv", newline="")))
    keep = [r for r in rows if r["licence"] not in excluded]
    dst.mkdir(parents=True)
    shutil.copy(src / "bank.json", dst / "bank.json")
    for r in keep:
        (dst / r["path"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src / r["path"], dst / r["path"])
    with open(dst / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(keep)
    print(json.dumps({"kept": len(keep), "dropped": len(rows) - len(keep),
                      "licences": Counter(r["licence"] for r in keep), "sources": Counter(r["source"] for r in keep)}))


if __name__ == "__main__":
    main()
