#!/usr/bin/env python3
"""Summarise the token-endpoint runs of bench/tokens.sh.

usage: tokens_report.py [--goal TOKENS_PER_S] FILE...

FILE names are tokens-c<connections>-<round>.txt (wrk --latency outputs, each followed by a
"Proxy CPU user seconds:" and "Proxy CPU system seconds:" lines). Prints a Markdown table per connection count (tokens/s, p50, p99,
keyward CPU per token, responses, non-2xx) with the median over rounds, and the best median
against the goal. Exits 2 when a run had non-2xx responses or socket errors.
"""

import os
import re
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wrk_report import parse  # noqa: E402


def main(argv):
    goal = 20000.0
    if len(argv) > 2 and argv[1] == "--goal":
        goal = float(argv[2])
        argv = argv[:1] + argv[3:]
    files = argv[1:]
    if not files:
        print(__doc__, file=sys.stderr)
        return 64
    runs = {}
    for path in files:
        m = re.fullmatch(r"tokens-c(\d+)-(\d+)\.txt", os.path.basename(path))
        if not m:
            raise SystemExit(f"unexpected file name {path}")
        r = parse(path)
        with open(path, encoding="utf-8") as f:
            out = f.read()
        n = re.search(r"^\s*(\d+) requests in", out, re.M)
        r["requests"] = int(n.group(1)) if n else 0
        runs.setdefault(int(m.group(1)), {})[int(m.group(2))] = r

    print(f"| {'conns':>5} | {'round':>6} | {'tokens/s':>9} | {'p50 ms':>7} | {'p99 ms':>7} | {'µs CPU/token':>12} | {'responses':>9} | {'non-2xx':>7} |")
    print(f"|{'-' * 7}|{'-' * 8}|{'-' * 11}|{'-' * 9}|{'-' * 9}|{'-' * 14}|{'-' * 11}|{'-' * 9}|")
    medians = {}
    bad = []
    for c in sorted(runs):
        for rnd in sorted(runs[c]):
            r = runs[c][rnd]
            non2xx = sum(int(x.split()[0]) for x in r["problems"] if x.endswith("non-2xx responses"))
            print(
                f"| {c:>5} | {rnd:>6} | {r['rps']:>9.0f} | {r['p50']:>7.2f} | {r['p99']:>7.2f} "
                f"| {r['cpu']:>12.1f} | {r['requests']:>9} | {non2xx:>7} |"
            )
            if r["problems"]:
                bad.append(f"c{c} round {rnd}: {', '.join(r['problems'])}")
        med = {f: statistics.median(x[f] for x in runs[c].values()) for f in ("rps", "p50", "p99", "cpu")}
        medians[c] = med
        print(
            f"| {c:>5} | {'median':>6} | **{med['rps']:>5.0f}** | {med['p50']:>7.2f} | {med['p99']:>7.2f} "
            f"| {med['cpu']:>12.1f} | {'':>9} | {'':>7} |"
        )
    print()
    best_c = max(medians, key=lambda c: medians[c]["rps"])
    best = medians[best_c]["rps"]
    verdict = "met" if best >= goal else "NOT met"
    print(f"best median: {best:.0f} tokens/s at {best_c} connections; goal >= {goal:.0f}/s: {verdict}")
    if bad:
        print("\nWARNING: these runs had errors, their numbers are not comparable:")
        for line in bad:
            print("  " + line)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
