#!/usr/bin/env bash
# Limit decisions per Redis shard (issue 23, point 5): one redis-server of its own on a free
# port (one core: Redis runs scripts on one thread), the real limit script of
# crates/keyward-limit (clock.lua + gcra.lua, as keyward sends it), driven by redis-benchmark
# with the argument shapes keyward sends. Two figures per shape:
#
#   - CPU µs/call: the redis-server process's CPU time (user + system, INFO cpu) per call,
#     network handling included: the shard's cost per decision, robust to a busy machine (time
#     the process was not running is not counted); 1e6 / µs is the ceiling of one shard core;
#   - script µs/call: Redis' own wall time inside the command (INFO commandstats
#     usec_per_call; inflated when the machine is busy);
#   - rps: what redis-benchmark got through (client on the same machine: a lower bound).
#
#   bench/redis_shard.sh                 # 3 rounds
#   ROUNDS=5 REQUESTS=300000 bench/redis_shard.sh
#
# Environment: ROUNDS (3), REQUESTS per shape and round (200000), CLIENTS (32), PIPELINE (16),
# REDIS_SERVER (redis-server), REDIS_BENCHMARK (redis-benchmark), REDIS_CLI (redis-cli).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
REQUESTS=${REQUESTS:-200000}
CLIENTS=${CLIENTS:-32}
PIPELINE=${PIPELINE:-16}
SERVER=${REDIS_SERVER:-redis-server}
BENCH=${REDIS_BENCHMARK:-redis-benchmark}
CLI=${REDIS_CLI:-redis-cli}

dir=$(mktemp -d)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$SERVER" --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" >"$dir/log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 50); do "$CLI" -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done

src=crates/keyward-limit/src
sha=$("$CLI" -p "$port" SCRIPT LOAD "$(cat "$src/clock.lua" "$src/gcra.lua")")
refund=$("$CLI" -p "$port" SCRIPT LOAD "$(cat "$src/clock.lua" "$src/refund.lua")")

# One request's arguments: a key rate (10/s, burst 10), an app rate, a key quota (daily).
rate='100000.000000 10 1'
quota='d 86400 1000000 1'

# shape name | keyspace (-r) | command …
shapes() {
  echo "3 limits (key rate, app rate, key quota), 10k active keys, allowed|10000|evalsha $sha 3 kw:{b:__rand_int__}:r:1 kw:{b:__rand_int__}:r:2 kw:{b:__rand_int__}:q:3 '' 2 1 $rate $rate $quota"
  echo "3 limits, 1M keys (mostly new state), allowed|1000000|evalsha $sha 3 kw:{b:__rand_int__}:r:1 kw:{b:__rand_int__}:r:2 kw:{b:__rand_int__}:q:3 '' 2 1 $rate $rate $quota"
  echo "3 limits, one hot key, refused (reads only)|1|evalsha $sha 3 kw:{b:1}:r:1 kw:{b:1}:r:2 kw:{b:1}:q:3 '' 2 1 $rate $rate $quota"
  echo "1 limit (key quota), 10k keys, allowed|10000|evalsha $sha 1 kw:{b:__rand_int__}:q:3 '' 0 1 $quota"
  echo "refund of 3 limits (Cluster, a later slot refused)|10000|evalsha $refund 3 kw:{b:__rand_int__}:r:1 kw:{b:__rand_int__}:r:2 kw:{b:__rand_int__}:q:3 '' 2 1 100000.000000 1 100000.000000 1 d 86400 1"
  echo "DPoP claim (SET NX PX)|1000000|set kw:{b:__rand_int__}:j:x 1 NX PX 60000"
}

echo "redis $("$SERVER" --version | sed 's/.*v=\([^ ]*\).*/\1/'), $(nproc) cores, clients $CLIENTS, pipeline $PIPELINE, $REQUESTS requests per shape and round"
cpu() { "$CLI" -p "$port" INFO cpu | tr -d '\r' | awk -F: '/^used_cpu_(user|sys):/ { t += $2 } END { printf "%.6f", t }'; }
printf '| round | load | shape | rps | CPU µs/call | script µs/call |\n|---|---|---|---|---|---|\n'
for round in $(seq "$ROUNDS"); do
  while IFS='|' read -r name keyspace cmd; do
    "$CLI" -p "$port" FLUSHALL >/dev/null
    "$CLI" -p "$port" CONFIG RESETSTAT >/dev/null
    # Pre-fill the keyspace (a steady state updates existing keys; the 1M shape starts empty).
    if [ "$keyspace" = 10000 ]; then
      eval "$BENCH -p $port -c $CLIENTS -n 20000 -P $PIPELINE -r $keyspace -q $cmd" >/dev/null 2>&1
      "$CLI" -p "$port" CONFIG RESETSTAT >/dev/null
    fi
    before=$(cpu)
    rps=$(eval "$BENCH -p $port -c $CLIENTS -n $REQUESTS -P $PIPELINE -r $keyspace -q $cmd" 2>&1 |
      tr '\r' '\n' | grep 'requests per second' | tail -1 | sed 's/.*: \([0-9.]*\) requests per second.*/\1/')
    after=$(cpu)
    verb=$(echo "$cmd" | cut -d' ' -f1)
    us=$("$CLI" -p "$port" INFO commandstats | tr -d '\r' | grep "^cmdstat_$verb:" | sed 's/.*usec_per_call=\([0-9.]*\).*/\1/')
    cpu_us=$(python3 -c "print(f'{($after - $before) * 1e6 / $REQUESTS:.1f}')")
    printf '| %s | %s | %s | %.0f | %s | %s |\n' "$round" "$(cut -d' ' -f1 /proc/loadavg)" "$name" "$rps" "$cpu_us" "$us"
  done < <(shapes)
done
