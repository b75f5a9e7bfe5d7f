#!/usr/bin/env python3
"""Print the median (and its 95% confidence interval) of every criterion benchmark under
target/criterion, read from <bench>/new/estimates.json. Criterion's console line shows the
slope/mean estimate; the goals in docs/BENCHMARKS.md are stated against the median.

usage: bench/criterion_medians.py [TARGET_CRITERION_DIR]
"""

import json
import pathlib
import sys


def fmt(ns):
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.3f} µs"
    return f"{ns:.1f} ns"


def main():
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target/criterion")
    rows = []
    for est in sorted(root.glob("**/new/estimates.json")):
        name = str(est.parent.parent.relative_to(root))
        med = json.loads(est.read_text())["median"]
        ci = med["confidence_interval"]
        rows.append((name, med["point_estimate"], ci["lower_bound"], ci["upper_bound"]))
    if not rows:
        raise SystemExit(f"no criterion results under {root}")
    width = max(len(r[0]) for r in rows)
    print(f"| {'bench':<{width}} | {'median':>10} | {'95% CI':>23} |")
    print(f"|{'-' * (width + 2)}|{'-' * 12}|{'-' * 25}|")
    for name, m, lo, hi in rows:
        print(f"| {name:<{width}} | {fmt(m):>10} | {fmt(lo) + ' – ' + fmt(hi):>23} |")


if __name__ == "__main__":
    main()
