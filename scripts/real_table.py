"""Markdown table of a real-field benchmark JSON (benchmarks/bench_real.py), for the model card.

    python scripts/real_table.py real.json [--baseline shipped.json]
"""

from __future__ import annotations

import argparse
import json

METRICS = ("wbc_dice", "wbc_found", "false_wbc_per_field", "wbc_type_balanced_acc", "rbc_count_err_median",
           "false_infected_rate", "rbc_size_ratio_median", "scale_within_15pct")


def cell(src: dict, base: dict | None, key: str) -> str:
    if key not in src:
        return ""
    v = f"{src[key]:.2f}" if isinstance(src[key], float) else str(src[key])
    if base is not None and key in base and isinstance(base[key], float):
        v += f" ({base[key]:.2f})"
    return v


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("json")
    ap.add_argument("--baseline", default=None, help="a second JSON whose figures go in brackets")
    args = ap.parse_args()
    res = json.load(open(args.json))["sources"]
    base = json.load(open(args.baseline))["sources"] if args.baseline else {}
    cols = [m for m in METRICS if any(f"{m}_auto" in s or f"{m}_given" in s for s in res.values())]
    print("| source | n | " + " | ".join(f"{c} auto / given" if c != "scale_within_15pct" else c for c in cols) + " |")
    print("|---" * (len(cols) + 2) + "|")
    for name, s in res.items():
        b = base.get(name)
        row = [name, str(s.get("n", ""))]
        for c in cols:
            a, g = cell(s, b, f"{c}_auto"), cell(s, b, f"{c}_given")
            row.append(a if c == "scale_within_15pct" else (f"{a} / {g}" if a or g else ""))
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
