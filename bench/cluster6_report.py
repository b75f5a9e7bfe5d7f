#!/usr/bin/env python3
"""Report of bench/cluster6.sh (six keyward nodes against a Redis Cluster).

usage: cluster6_report.py ROUNDS_TSV CLK_TCK
       cluster6_report.py --rate ROUNDS_TSV MASTERS   (median aggregate RPS of that cluster size)

ROUNDS_TSV has one line per throughput round:
  throughput MASTERS ROUND LOAD KW_TICKS MASTER_TICKS REPLICA_TICKS UPSTREAM_TICKS
             "BUSY IDLE" (before) "BUSY IDLE" (after) TIMEOUTS LOCAL_FALLBACKS
             "EVALSHA CALLS PER MASTER" WRK_PREFIX (files WRK_PREFIX<i>.txt, one per node)
and one line per failure mode of the failover run:
  failover MODE QUOTA NODES PROMOTED_S KILL_AFTER TIMEOUTS STATUS_FILE
"""

import glob
import re
import statistics
import sys

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def latency_ms(text):
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError(f"unknown latency {text!r}")
    return float(m.group(1)) * UNITS[m.group(2)]


def wrk(path):
    with open(path, encoding="utf-8") as f:
        out = f.read()
    rps = re.search(r"^Requests/sec:\s+([0-9.]+)", out, re.M)
    n = re.search(r"^\s*(\d+) requests in ([0-9.]+)(\w+)", out, re.M)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    if not (rps and n):
        raise ValueError(f"{path}: not a wrk output:\n{out}")
    secs = float(n.group(2)) * {"s": 1, "ms": 1e-3, "m": 60}.get(n.group(3), 1)
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors:\s+(.*)", out)
    return {
        "rps": float(rps.group(1)),
        "requests": int(n.group(1)),
        "secs": secs,
        "p50": latency_ms(p50.group(1)) if p50 else float("nan"),
        "p99": latency_ms(p99.group(1)) if p99 else float("nan"),
        "non2xx": int(bad.group(1)) if bad else 0,
        "socket": sock.group(1).strip() if sock else "",
        "statuses": {int(c): int(k) for c, k in re.findall(r"^status (\d+) (\d+)$", out, re.M)},
    }


def rounds(path):
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            f_ = line.rstrip("\n").split("\t")
            if f_[0] != "throughput":
                continue
            masters, rnd, load = int(f_[1]), int(f_[2]), f_[3]
            kw, ma, re_, up = (int(x) for x in f_[4:8])
            b0, i0 = (int(x) for x in f_[8].split())
            b1, i1 = (int(x) for x in f_[9].split())
            timeouts, fallbacks = int(f_[10]), int(f_[11])
            calls = [int(x) for x in f_[12].split()]
            nodes = [wrk(p) for p in sorted(glob.glob(f_[13] + "*.txt"), key=lambda p: int(re.findall(r"(\d+)\.txt$", p)[0]))]
            out.append(
                {
                    "masters": masters,
                    "round": rnd,
                    "load": load,
                    "kw": kw,
                    "ma": ma,
                    "re": re_,
                    "up": up,
                    "busy": (b1 - b0) / max(1, (b1 + i1) - (b0 + i0)),
                    "timeouts": timeouts,
                    "fallbacks": fallbacks,
                    "calls": calls,
                    "nodes": nodes,
                }
            )
    return out


def main(argv):
    if len(argv) == 4 and argv[1] == "--rate":
        rs = [sum(n["rps"] for n in r["nodes"]) for r in rounds(argv[2]) if r["masters"] == int(argv[3])]
        print(f"{statistics.median(rs):.0f}" if rs else "0")
        return 0
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 64
    path, tck = argv[1], int(argv[2])
    us = 1e6 / tck
    rs = rounds(path)
    problems = []
    if rs:
        print(
            "| masters | round | load | aggregate RPS | per-node RPS | p50 ms (median node) | p99 ms (worst node) "
            "| decisions/s per master | decisions / request | keyward µs/rq | masters µs/decision | replicas µs/decision "
            "| upstream µs/rq | machine busy | Redis timeouts | local fallbacks |"
        )
        print("|" + "---|" * 16)
    summary = {}
    for r in rs:
        nodes = r["nodes"]
        reqs = sum(n["requests"] for n in nodes)
        secs = statistics.median(n["secs"] for n in nodes)
        agg = sum(n["rps"] for n in nodes)
        calls = sum(r["calls"])
        per_master = [c / secs for c in r["calls"]]
        row = {
            "agg": agg,
            "dps": calls / secs,
            "per_master": per_master,
            "kw": r["kw"] * us / max(1, reqs),
            "ma": r["ma"] * us / max(1, calls),
            "re": r["re"] * us / max(1, calls),
            "redis_rq": (r["ma"] + r["re"]) * us / max(1, reqs),
            "up": r["up"] * us / max(1, reqs),
            "p50": statistics.median(n["p50"] for n in nodes),
            "p99": max(n["p99"] for n in nodes),
        }
        summary.setdefault(r["masters"], []).append(row)
        print(
            f"| {r['masters']} | {r['round']} | {r['load']} | {agg:.0f} | {' / '.join('%.0f' % n['rps'] for n in nodes)} "
            f"| {row['p50']:.2f} | {row['p99']:.2f} | {' / '.join(f'{x:.0f}' for x in per_master)} "
            f"| {calls / max(1, reqs):.3f} | {row['kw']:.1f} | {row['ma']:.1f} | {row['re']:.1f} | {row['up']:.1f} "
            f"| {r['busy'] * 100:.0f} % | {r['timeouts']} | {r['fallbacks']} |"
        )
        for i, n in enumerate(nodes):
            if n["non2xx"] or n["socket"]:
                problems.append(f"masters {r['masters']} round {r['round']} node {i}: {n['non2xx']} non-2xx, socket errors: {n['socket'] or 'none'}")
    print()
    if summary:
        print("| masters | aggregate RPS (median) | decisions/s (median) | per master | keyward µs/rq | Redis µs/rq (masters + replicas) | masters µs/decision |")
        print("|---|---|---|---|---|---|---|")
        for m, rows in sorted(summary.items(), reverse=True):
            med = lambda k: statistics.median(x[k] for x in rows)  # noqa: E731
            pm = [statistics.median(x["per_master"][i] for x in rows) for i in range(len(rows[0]["per_master"]))]
            print(
                f"| {m} | {med('agg'):.0f} | {med('dps'):.0f} | {' / '.join(f'{x:.0f}' for x in pm)} "
                f"| {med('kw'):.1f} | {med('redis_rq'):.1f} | {med('ma'):.1f} |"
            )
        print()
    shards = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            f_ = line.rstrip("\n").split("\t")
            if f_[0] == "shards":
                shards.append(f_)
    if shards:
        print("The shards alone (redis-benchmark --cluster -c 32 -P 16, the three-limit script, no keyward):")
        print()
        print("| masters | round | load | decisions/s | per master | masters µs/decision | replicas µs/decision | machine busy |")
        print("|---|---|---|---|---|---|---|---|")
        per = {}
        for _, m, rnd, load, rps, ma, re_, m0, m1, counts in shards:
            cs = [int(x) for x in counts.split()]
            calls = max(1, sum(cs))
            b0, i0 = (int(x) for x in m0.split())
            b1, i1 = (int(x) for x in m1.split())
            busy = (b1 - b0) / max(1, (b1 + i1) - (b0 + i0))
            share = " / ".join(f"{c * 100 / calls:.0f} %" for c in cs)
            per.setdefault(int(m), []).append(float(rps))
            print(
                f"| {m} | {rnd} | {load} | {float(rps):.0f} | {share} | {int(ma) * us / calls:.1f} "
                f"| {int(re_) * us / calls:.1f} | {busy * 100:.0f} % |"
            )
        print()
        meds = {m: statistics.median(v) for m, v in per.items()}
        line = ", ".join(f"{m} master(s): {v:.0f} decisions/s" for m, v in sorted(meds.items()))
        if 1 in meds and len(meds) > 1:
            top = max(meds)
            line += f"; {top} masters / 1 master: {meds[top] / meds[1]:.2f}x"
        print(f"Medians: {line}.")
        print()
    fo = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            f_ = line.rstrip("\n").split("\t")
            if f_[0] == "failover":
                fo.append(f_)
    if fo:
        _, _, quota, nodes, promoted, kill_after, timeouts, _ = fo[0]
        print(
            f"Failover: the master of the keys' slot killed {kill_after} s into the run, its replica serving "
            f"the slot {promoted} s later; {timeouts} Redis calls timed out on the nodes meanwhile. "
            f"Admitted = the run's 200s + {nodes} (one request per node before the run)."
        )
        print()
        print("| on_limiter_failure | quota | admitted | over-admission | 429 | 503 | other 5xx | other | requests |")
        print("|---|---|---|---|---|---|---|---|---|")
        for _, mode, quota, nodes, _, _, _, file in fo:
            st = wrk(file)["statuses"]
            q, ok = int(quota), st.get(200, 0) + int(nodes)
            five = sum(v for k, v in st.items() if k >= 500 and k != 503)
            other = sum(v for k, v in st.items() if k not in (200, 429) and k < 500)
            print(
                f"| {mode} | {q} | {ok} | {ok - q:+d} ({(ok - q) * 100 / q:+.1f} %) | {st.get(429, 0)} | {st.get(503, 0)} "
                f"| {five} | {other} | {sum(st.values())} |"
            )
            if 429 not in st:
                problems.append(f"failover, {mode}: the quota was not reached (no 429): raise FAILOVER_DURATION or lower QUOTA")
            if five or (mode != "fail_closed" and st.get(503, 0)):
                problems.append(f"failover, {mode}: 5xx outside the documented 503 of fail_closed: {st}")
        print()
    if problems:
        print("WARNING:")
        for p in problems:
            print("  " + p)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
