#!/usr/bin/env bash
# Gateway throughput with 1,000 vs 1,000,000 keys in PostgreSQL (issue 7, point 6).
#
# Two schemas: `small` holds HOT keys, `large` holds LARGE - HOT cold keys plus HOT keys; wrk
# (bench/pg_keys.lua) sends GET /fact with one of the HOT keys at random per request. Both
# gateways run side by side (one store each) and are measured in turn, A B A B, for every
# `cache.ttl` in TTLS: `60s` is the normal path (cache hits), `1ms` makes nearly every request
# read PostgreSQL (the cache-miss path at full load).
#
#   bench/pg_keys.sh                         # defaults below
#   ROUNDS=3 DURATION=20s bench/pg_keys.sh
#
# Environment (all optional):
#   PG_URL       PostgreSQL (default postgres://postgres@127.0.0.1:5432/test)
#   LARGE        keys in the large schema (default 1000000); HOT keys used by wrk (default 1000)
#   REUSE        1 (default): keep the schemas kw_bench_small / kw_bench_large when they already
#                hold the right number of keys (seeding 1M keys takes ~35 s); 0: seed again
#   TTLS         cache.ttl values to measure (default "60s 1ms")
#   ROUNDS, DURATION, CONNECTIONS, WRK_THREADS, WARMUP   as in bench/gateway.sh
#   WORKERS      keyward [server] worker_threads (default 1)
#   SKIP_BUILD   1 to use the existing target/release/keyward
#   GATEWAY_BIN  use this keyward binary (no build)
set -euo pipefail
cd "$(dirname "$0")/.."

PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432/test}
LARGE=${LARGE:-1000000}
HOT=${HOT:-1000}
REUSE=${REUSE:-1}
TTLS=${TTLS:-"60s 1ms"}
ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
WRK_THREADS=${WRK_THREADS:-1}
WARMUP=${WARMUP:-3s}
WORKERS=${WORKERS:-1}
BIN=${GATEWAY_BIN:-${CARGO_TARGET_DIR:-target}/release/keyward}

if [ "${SKIP_BUILD:-0}" != 1 ] && [ -z "${GATEWAY_BIN:-}" ]; then
  cargo build --release -p keyward
fi

tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

"$BIN" init --dir "$tmp" >/dev/null
sep='?'; case "$PG_URL" in *\?*) sep='&';; esac
url_of() { echo "${PG_URL}${sep}options=-csearch_path%3D$1"; }
count_of() { psql -qtA "$PG_URL" -c "SELECT count(*) FROM $1.keys" 2>/dev/null || echo 0; }

seed_schema() { # name total
  local name=$1 total=$2
  if [ "$REUSE" = 1 ] && [ "$(count_of "$name")" = "$total" ] && [ -s "$tmp/../kw_bench_$name.keys" ]; then
    cp "$tmp/../kw_bench_$name.keys" "$tmp/$name.keys"
    echo "== $name: reusing $total keys"
    return
  fi
  psql -q "$PG_URL" -c "DROP SCHEMA IF EXISTS $name CASCADE" -c "CREATE SCHEMA $name" 2>&1 | grep -v NOTICE || true
  local cold=$((total - HOT))
  if [ "$cold" -gt 0 ]; then
    KEYWARD_STORE__URL=$(url_of "$name") "$BIN" dev seed --config "$tmp/keyward.toml" --keys "$cold" --app cold --quiet
  fi
  KEYWARD_STORE__URL=$(url_of "$name") "$BIN" dev seed --config "$tmp/keyward.toml" --keys "$HOT" --app hot \
    --sample-out "$tmp/$name.keys" --samples "$HOT" --batch "$HOT" --quiet
  # The keys only match this run's pepper: keep both for REUSE.
  cp "$tmp/$name.keys" "$tmp/../kw_bench_$name.keys"
  cp "$tmp/keyward.pepper" "$tmp/../kw_bench_pepper"
  chmod 600 "$tmp/../kw_bench_$name.keys" "$tmp/../kw_bench_pepper"
}

# One pepper for both schemas (and for reuse across runs).
if [ "$REUSE" = 1 ] && [ -s "$tmp/../kw_bench_pepper" ]; then
  cp "$tmp/../kw_bench_pepper" "$tmp/keyward.pepper"
fi
seed_schema kw_bench_small "$HOT"
seed_schema kw_bench_large "$LARGE"
echo "== keys: small $(count_of kw_bench_small), large $(count_of kw_bench_large)"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
up_port=$(free_port)
"$BIN" cat-facts --listen "127.0.0.1:$up_port" 2>"$tmp/upstream.log" &
pids+=($!)

start_gateway() { # name ttl -> sets $port
  local name=$1 ttl=$2 ad
  port=$(free_port); ad=$(free_port)
  KEYWARD_STORE__URL=$(url_of "$name") KEYWARD_GATEWAY__LISTEN="127.0.0.1:$port" \
    KEYWARD_ADMIN__LISTEN="127.0.0.1:$ad" KEYWARD_CACHE__TTL="$ttl" KEYWARD_SERVER__WORKER_THREADS="$WORKERS" \
    KEYWARD_ROUTES="[{name=\"fact\", path_prefix=\"/fact\", upstream=\"http://127.0.0.1:$up_port\"}]" \
    KEYWARD_OAUTH__ENABLED=false KEYWARD_LOG=warn "$BIN" serve --config "$tmp/keyward.toml" >"$tmp/gw-$name-$ttl.out" 2>"$tmp/gw-$name-$ttl.log" &
  pids+=($!)
  for _ in $(seq 100); do
    curl -s -o /dev/null "http://127.0.0.1:$port/" && return 0
    sleep 0.1
  done
  echo "gateway $name did not start:" >&2
  cat "$tmp/gw-$name-$ttl.log" >&2
  exit 1
}

run_wrk() { # port keys duration
  KW_KEYS=$2 wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"$3" --latency -s bench/pg_keys.lua "http://127.0.0.1:$1" 2>&1
}

printf '\n| cache.ttl | keys in store | runs req/s | median req/s | p50 ms | p99 ms | non-2xx |\n|---|---|---|---|---|---|---|\n' >"$tmp/report.md"
for ttl in $TTLS; do
  start_gateway kw_bench_small "$ttl"; small_port=$port; small_pid=${pids[-1]}
  start_gateway kw_bench_large "$ttl"; large_port=$port; large_pid=${pids[-1]}
  run_wrk "$small_port" "$tmp/kw_bench_small.keys" "$WARMUP" >/dev/null
  run_wrk "$large_port" "$tmp/kw_bench_large.keys" "$WARMUP" >/dev/null
  declare -A rps=() p50=() p99=() bad=()
  for r in $(seq "$ROUNDS"); do
    for s in small large; do
      port_var=${s}_port
      out=$(run_wrk "${!port_var}" "$tmp/kw_bench_$s.keys" "$DURATION")
      rps[$s]="${rps[$s]:-} $(awk '/Requests\/sec/ {printf "%.0f", $2}' <<<"$out")"
      p50[$s]="${p50[$s]:-} $(awk '$1=="50%" {print $2}' <<<"$out")"
      p99[$s]="${p99[$s]:-} $(awk '$1=="99%" {print $2}' <<<"$out")"
      bad[$s]="${bad[$s]:-} $(awk '/Non-2xx/ {print $5}' <<<"$out")"
      echo "ttl $ttl round $r $s: $(awk '/Requests\/sec/ {print $2}' <<<"$out") req/s $(grep -h 'Socket errors' <<<"$out" || true)"
    done
  done
  for s in small large; do
    n=$(count_of "kw_bench_$s")
    python3 - "$ttl" "$n" "${rps[$s]}" "${p50[$s]}" "${p99[$s]}" "${bad[$s]}" >>"$tmp/report.md" <<'PY'
import statistics, sys
ttl, n, rps, p50, p99, bad = sys.argv[1:]
def ms(v):
    v = v.strip()
    for suf, f in (("us", 1e-3), ("ms", 1.0), ("s", 1e3)):
        if v.endswith(suf):
            return float(v[: -len(suf)]) * f
    return float("nan")
r = [int(x) for x in rps.split()]
print(f"| {ttl} | {int(n):,} | {', '.join(map(str, r))} | {statistics.median(r):.0f} | "
      f"{statistics.median(ms(x) for x in p50.split()):.2f} | {statistics.median(ms(x) for x in p99.split()):.2f} | "
      f"{sum(int(x) for x in bad.split()) if bad.strip() else 0} |")
PY
  done
  unset rps p50 p99 bad
  kill "$small_pid" "$large_pid" 2>/dev/null || true
  wait "$small_pid" "$large_pid" 2>/dev/null || true
done
cat "$tmp/report.md"
