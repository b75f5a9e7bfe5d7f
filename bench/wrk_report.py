#!/usr/bin/env python3
"""Summarise wrk --latency outputs of an A/B run (used by bench/gateway.sh).

usage: wrk_report.py [--rps-goal RATIO] A_LABEL B_LABEL FILE...

FILE names are <label>-<round>.txt. Prints, as a Markdown table, RPS, p50, p99 and the proxy's
CPU per request (user and system apart, from /proc/PID/stat) per round for both labels, the
medians over the rounds and the ratios A/B for RPS (higher is better for A), p99 (A p99 / B
p99, lower is better for A) and CPU per request (user, system, total). Exits 2 when a run had non-2xx
responses or socket errors (those numbers would not be comparable). --rps-goal states the goal
for the RPS ratio A/B (default 1.00; e.g. 0.90 for "at most 10% slower").
"""

import os
import re
import statistics
import sys

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def latency_ms(text):
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError(f"unknown latency {text!r}")
    return float(m.group(1)) * UNITS[m.group(2)]


def parse(path):
    with open(path, encoding="utf-8") as f:
        out = f.read()
    rps = re.search(r"^Requests/sec:\s+([0-9.]+)", out, re.M)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    if not (rps and p50 and p99):
        raise ValueError(f"{path}: not a wrk --latency output:\n{out}")
    reqs = re.search(r"^\s*(\d+) requests in", out, re.M)
    n = int(reqs.group(1)) if reqs else 0

    def per_request(label):
        m = re.search(rf"^Proxy CPU {label} seconds:\s+([0-9.]+)", out, re.M)
        return float(m.group(1)) * 1e6 / n if m and n else float("nan")

    user_us, sys_us = per_request("user"), per_request("system")
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors:\s+(.*)", out)
    problems = []
    if non2xx:
        problems.append(f"{non2xx.group(1)} non-2xx responses")
    if sock:
        problems.append(f"socket errors: {sock.group(1).strip()}")
    return {
        "rps": float(rps.group(1)),
        "p50": latency_ms(p50.group(1)),
        "p99": latency_ms(p99.group(1)),
        "user": user_us,
        "sys": sys_us,
        "cpu": user_us + sys_us,
        "problems": problems,
    }


def main(argv):
    goal = 1.0
    if len(argv) > 2 and argv[1] == "--rps-goal":
        goal = float(argv[2])
        argv = argv[:1] + argv[3:]
    if len(argv) < 4:
        print(__doc__, file=sys.stderr)
        return 64
    a, b, files = argv[1], argv[2], argv[3:]
    runs = {a: {}, b: {}}
    for path in files:
        m = re.fullmatch(r"(.+)-(\d+)\.txt", os.path.basename(path))
        if not m or m.group(1) not in runs:
            raise SystemExit(f"unexpected file name {path}")
        runs[m.group(1)][int(m.group(2))] = parse(path)
    rounds = sorted(set(runs[a]) & set(runs[b]))
    if not rounds:
        raise SystemExit("no complete round")

    wa, wb = max(11, len(a) + 4), max(11, len(b) + 4)

    def row(name, ra, rb):
        return (
            f"| {name:>6} | {ra['rps']:>{wa}.0f} | {ra['p50']:>8.2f} | {ra['p99']:>8.2f} "
            f"| {rb['rps']:>{wb}.0f} | {rb['p50']:>8.2f} | {rb['p99']:>8.2f} "
            f"| {ra['user']:>6.1f} | {ra['sys']:>6.1f} | {rb['user']:>6.1f} | {rb['sys']:>6.1f} |"
        )

    print(
        f"| {'round':>6} | {a + ' RPS':>{wa}} | {'p50 ms':>8} | {'p99 ms':>8} "
        f"| {b + ' RPS':>{wb}} | {'p50 ms':>8} | {'p99 ms':>8} "
        f"| {'A usr':>6} | {'A sys':>6} | {'B usr':>6} | {'B sys':>6} |"
    )
    print(
        f"|{'-' * 8}|{'-' * (wa + 2)}|{'-' * 10}|{'-' * 10}|{'-' * (wb + 2)}|{'-' * 10}|{'-' * 10}"
        f"|{'-' * 8}|{'-' * 8}|{'-' * 8}|{'-' * 8}|"
    )
    for r in rounds:
        print(row(str(r), runs[a][r], runs[b][r]))
    med = {
        k: {f: statistics.median(runs[k][r][f] for r in rounds) for f in ("rps", "p50", "p99", "user", "sys", "cpu")}
        for k in (a, b)
    }
    print(row("median", med[a], med[b]))
    print()
    rps_ratio = med[a]["rps"] / med[b]["rps"]
    p99_ratio = med[a]["p99"] / med[b]["p99"]
    p50_ratio = med[a]["p50"] / med[b]["p50"]
    print(f"RPS {a}/{b}: {rps_ratio:.2f}x   (goal >= {goal:.2f}, higher is better)")
    print(f"p99 {a}/{b}: {p99_ratio:.2f}x   (goal <= 1.00, lower is better)")
    print(f"p50 {a}/{b}: {p50_ratio:.2f}x")
    print("CPU per request, µs (the proxy processes only, from /proc/PID/stat, medians over the rounds):")
    for label, f in (("user", "user"), ("system", "sys"), ("total", "cpu")):
        ratio = med[a][f] / med[b][f] if med[b][f] else float("nan")
        print(f"  {label:>6}: {a} {med[a][f]:.1f}, {b} {med[b][f]:.1f}, ratio {a}/{b} {ratio:.2f}x")

    bad = [
        f"{k} round {r}: {', '.join(runs[k][r]['problems'])}"
        for k in (a, b)
        for r in rounds
        if runs[k][r]["problems"]
    ]
    if bad:
        print("\nWARNING: these runs had errors, their numbers are not comparable:")
        for line in bad:
            print("  " + line)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
