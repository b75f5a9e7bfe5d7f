#!/usr/bin/env bash
# Six keyward nodes against a Redis Cluster and one PostgreSQL, on loopback (issue 23, point 5).
#
#   bench/cluster6.sh                       # 3 masters + 3 replicas, then 1 master + 1 replica
#   KEYWARD_BIN=/tmp/keyward ROUNDS=3 DURATION=20 bench/cluster6.sh
#   MASTERS_LIST=3 FAILOVER=0 bench/cluster6.sh
#
# For each cluster size of MASTERS_LIST (3 masters: `redis-cli --cluster create … --cluster-replicas
# 1`; 1 master: its replica joined by hand, as --cluster create wants three masters), on free
# ports in a temporary directory, `cluster-node-timeout 1000`:
#
#   - NODES `keyward serve` release nodes (WORKERS worker threads each) share a fresh PostgreSQL
#     database (created in KEYWARD_TEST_POSTGRES_URL's server, dropped on exit) and
#     `[redis] cluster_nodes` (all seeds; `nodes_hint` = NODES, the product's default timeout and
#     breaker unless REDIS_TIMEOUT is set), one `keyward cat-facts` upstream;
#   - APPS apps, each with a rate (10000000/s), and one key per app with a rate (10000000/s) and
#     a quota (1000000000/day): three limits per request, one EVALSHA in the app's slot, never
#     tripped; the apps' slots spread over the masters (checked: limit state on every master);
#   - load: one `wrk -t1 -cCONNECTIONS --latency` per node, all at once, DURATION seconds, each
#     cycling over all the keys (bench/cluster6-keys.lua), ROUNDS rounds after a warm-up;
#   - reported per round: aggregate and per-node RPS, p50 / p99 (median and worst of the nodes),
#     limit decisions per master (`INFO commandstats`, cmdstat_evalsha, reset before each round),
#     CPU per request of the keyward nodes, per decision of the masters and of the replicas, per
#     request of the upstream (user + system from /proc/PID/stat), the machine's busy share
#     (/proc/stat), and the Redis calls that timed out or were decided by a failure mode
#     (/metrics of every node).
#
# With FAILOVER=1 (default) and 3 masters, after the throughput rounds: three routes
# (`on_limiter_failure` = fail_open, fail_closed, local), one key each with a quota, all three
# keys in one app, i.e. one slot on one master; one wrk per route, its threads spread over the
# nodes (bench/cluster6-modes.lua counts the statuses); that master is killed (SIGKILL)
# KILL_AFTER seconds into the run, its replica is promoted; reported: the time until the replica
# serves the slot, and per mode the requests admitted against the quota (over-admission), 429s,
# 503s and any other 5xx. The quota is QUOTA, or what the throughput rounds suggest the route
# gets in (KILL_AFTER + 4) seconds, so that it runs out after the failover.
#
# With SHARDS=1 (default), last: the shards alone, without keyward: for each cluster size,
# `redis-benchmark --cluster -c 32 -P 16` sends the limit script (three limits, the arguments
# keyward sends) to every master at once, SHARD_REQUESTS calls per round, ROUNDS rounds;
# reported: decisions/s, per master, CPU per decision of the masters and of the replicas.
#
# Environment (all optional): NODES (6; 0: the shards alone only), MASTERS_LIST ("3 1"), WORKERS (1), ROUNDS (2),
# DURATION (15, seconds), WARMUP (4), CONNECTIONS (8, per node), APPS (12), FAILOVER (1),
# FAILOVER_DURATION (14), KILL_AFTER (4), QUOTA (auto), REDIS_TIMEOUT (product default),
# KEYWARD_BIN (default: build $CARGO_TARGET_DIR/release/keyward), SKIP_BUILD (1: use the built
# binary), SHARDS (1), SHARD_REQUESTS (300000), KEYWARD_TEST_POSTGRES_URL (postgres://postgres@127.0.0.1:5432/test), REDIS_SERVER
# (redis-server), REDIS_CLI (redis-cli), RESULTS_DIR (copy the raw outputs and the report there).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NODES=${NODES:-6}
MASTERS_LIST=${MASTERS_LIST:-"3 1"}
WORKERS=${WORKERS:-1}
ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-15}
WARMUP=${WARMUP:-4}
CONNECTIONS=${CONNECTIONS:-8}
APPS=${APPS:-12}
FAILOVER=${FAILOVER:-1}
FAILOVER_DURATION=${FAILOVER_DURATION:-14}
KILL_AFTER=${KILL_AFTER:-4}
QUOTA=${QUOTA:-}
REDIS_TIMEOUT=${REDIS_TIMEOUT:-}
SHARDS=${SHARDS:-1}
SHARD_REQUESTS=${SHARD_REQUESTS:-300000}
PG=${KEYWARD_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}
SERVER=${REDIS_SERVER:-redis-server}
CLI=${REDIS_CLI:-redis-cli}
SKIP_BUILD=${SKIP_BUILD:-0}
RESULTS_DIR=${RESULTS_DIR:-}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
GIVEN_BIN=${KEYWARD_BIN:-} # read before bench_init, which unsets every KEYWARD_* variable
KEYWARD=${GIVEN_BIN:-$TARGET/release/keyward}
BENCH_DIR=$ROOT/bench

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
bench_init cluster6

for tool in wrk psql curl python3 redis-benchmark "$SERVER" "$CLI"; do
    command -v "$tool" >/dev/null || die "$tool is needed (apt-get install -y wrk redis-server postgresql-client)"
done
CLK_TCK=$(getconf CLK_TCK)
if ((NODES > 0)); then
    if [[ -z "$GIVEN_BIN" && "$SKIP_BUILD" != 1 ]]; then
        (cd "$ROOT" && cargo build --release -p keyward --bin keyward)
    fi
    [[ -x "$KEYWARD" ]] || die "no keyward binary at $KEYWARD"

    DB=keyward_cluster6_$$
    psql "$PG" -qc "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB" >/dev/null ||
        die "PostgreSQL at $PG is not reachable"
    ON_EXIT="psql '$PG' -qc 'DROP DATABASE IF EXISTS $DB' >/dev/null 2>&1"
    STORE_URL="${PG%/*}/$DB"
    # One pepper, KEK and admin token for every node (they share the store).
    export KEYWARD_PEPPER KEYWARD_KEK KEYWARD_ADMIN_TOKEN
    KEYWARD_PEPPER=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
    KEYWARD_KEK=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
    KEYWARD_ADMIN_TOKEN=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')

    UP_PORT=$(free_ports 1)
    start_upstream "$UP_PORT"
    UP_PID=${PIDS[-1]}
fi
REPORT=$TMP/report.md
RESULTS=$TMP/rounds.tsv
: >"$RESULTS"

rcli() { "$CLI" -h 127.0.0.1 -p "$@"; }
field() { tr -d '\r' | sed -n "s/^$1:\(.*\)/\1/p"; }

# ---- Redis Cluster -----------------------------------------------------------------------

declare -A REDIS_PID=()
REDIS_PORTS=()
MASTER_PORTS=()
REPLICA_PORTS=()

start_cluster() { # MASTERS: MASTERS masters, one replica each
    local masters=$1 n=$(($1 * 2)) i port bus
    local ports
    mapfile -t ports < <(free_ports $((n * 2)))
    REDIS_PORTS=() MASTER_PORTS=() REPLICA_PORTS=() REDIS_PID=()
    for ((i = 0; i < n; i++)); do
        port=${ports[$i]} bus=${ports[$((n + i))]}
        mkdir -p "$TMP/redis-$port"
        "$SERVER" --port "$port" --cluster-port "$bus" --bind 127.0.0.1 --cluster-enabled yes \
            --cluster-config-file nodes.conf --cluster-node-timeout 1000 --dir "$TMP/redis-$port" \
            --save "" --appendonly no --repl-diskless-sync-delay 0 >"$TMP/redis-$port.log" 2>&1 &
        PIDS+=($!)
        REDIS_PID[$port]=$!
        REDIS_PORTS+=("$port")
        BUS[$port]=$bus
    done
    for port in "${REDIS_PORTS[@]}"; do
        for _ in $(seq 100); do rcli "$port" ping >/dev/null 2>&1 && break; sleep 0.05; done
    done
    if ((masters >= 3)); then
        local addrs=()
        for port in "${REDIS_PORTS[@]}"; do addrs+=("127.0.0.1:$port"); done
        "$CLI" --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes >"$TMP/cluster-create.log" 2>&1 ||
            die "redis-cli --cluster create failed: $(tail -5 "$TMP/cluster-create.log")"
        grep -q "All 16384 slots covered" "$TMP/cluster-create.log" || die "not all slots covered"
    elif ((masters == 1)); then
        local a=${REDIS_PORTS[0]} b=${REDIS_PORTS[1]} id
        rcli "$a" cluster addslotsrange 0 16383 >/dev/null
        rcli "$b" cluster meet 127.0.0.1 "$a" "${BUS[$a]}" >/dev/null
        id=$(rcli "$a" cluster myid | tr -d '\r')
        for _ in $(seq 100); do rcli "$b" cluster nodes | grep -q "^$id" && break; sleep 0.1; done
        rcli "$b" cluster replicate "$id" >/dev/null || die "CLUSTER REPLICATE failed"
    else
        die "MASTERS_LIST: 1 or at least 3 masters"
    fi
    local deadline=$((SECONDS + 30))
    for port in "${REDIS_PORTS[@]}"; do
        until rcli "$port" cluster info | grep -q "cluster_state:ok" &&
            { rcli "$port" role | head -1 | grep -q master || rcli "$port" info replication | grep -q "master_link_status:up"; }; do
            ((SECONDS < deadline)) || die "the cluster did not settle"
            sleep 0.1
        done
    done
    for port in "${REDIS_PORTS[@]}"; do
        if rcli "$port" role | head -1 | grep -q master; then MASTER_PORTS+=("$port"); else REPLICA_PORTS+=("$port"); fi
    done
    ((${#MASTER_PORTS[@]} == masters)) || die "expected $masters masters, found ${MASTER_PORTS[*]}"
    log "redis cluster: masters ${MASTER_PORTS[*]}, replicas ${REPLICA_PORTS[*]}"
}
declare -A BUS=()

stop_pids() { # PID...: SIGTERM, then wait
    local p
    for p in "$@"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "$@"; do wait "$p" 2>/dev/null || true; done
}

# ---- keyward nodes -----------------------------------------------------------------------

NODE_PIDS=()
NODE_GW=()
NODE_ADMIN=()

start_nodes() { # PREFIX
    local prefix=$1 i seeds="" port redis_toml
    for port in "${REDIS_PORTS[@]}"; do seeds+="\"redis://127.0.0.1:$port\", "; done
    redis_toml="[metrics]
public = true

[redis]
cluster_nodes = [${seeds%, }]
prefix = \"$prefix\"
nodes_hint = $NODES
$([[ -z "$REDIS_TIMEOUT" ]] || echo "timeout = \"$REDIS_TIMEOUT\"")
"
    for mode in fail_open fail_closed local; do
        redis_toml+="
[[routes]]
name = \"$mode\"
path_prefix = \"/$mode\"
strip_prefix = true
methods = [\"GET\"]
upstream = \"http://127.0.0.1:$UP_PORT\"
scopes = [\"facts:read\"]
on_limiter_failure = \"$mode\"
"
    done
    NODE_PIDS=() NODE_GW=() NODE_ADMIN=()
    local ports
    mapfile -t ports < <(free_ports $((NODES * 2)))
    for ((i = 0; i < NODES; i++)); do
        GW_PORT=${ports[$((2 * i))]} ADMIN_PORT=${ports[$((2 * i + 1))]}
        bench_config "$TMP/node$i.toml" "$STORE_URL" "$WORKERS" "http://127.0.0.1:$GW_PORT" "" "$redis_toml"
        KEYWARD_LOG=warn "$KEYWARD" serve --config "$TMP/node$i.toml" >"$TMP/node$i.log" 2>&1 &
        PIDS+=($!)
        NODE_PIDS+=($!)
        NODE_GW+=("$GW_PORT")
        NODE_ADMIN+=("$ADMIN_PORT")
        # The first node migrates the new database before the others start.
        ((i > 0)) || wait_http "http://127.0.0.1:$ADMIN_PORT/healthz" "$!"
    done
    for ((i = 0; i < NODES; i++)); do wait_http "http://127.0.0.1:${NODE_ADMIN[$i]}/healthz" "${NODE_PIDS[$i]}"; done
    export KEYWARD_ADMIN_URL="http://127.0.0.1:${NODE_ADMIN[0]}"
    log "$NODES keyward nodes: gateways ${NODE_GW[*]}"
}

json_key() { python3 -c 'import json, sys; print(json.load(sys.stdin)["key"])'; }

# Sums a counter of every node's /metrics (a name with its labels, e.g.
# 'keyward_redis_failures_total{kind="timeout"}').
metric_sum() {
    local i total=0 v
    for ((i = 0; i < NODES; i++)); do
        v=$(curl -s "http://127.0.0.1:${NODE_ADMIN[$i]}/metrics" | awk -v m="$1" '$1 == m { print $2 }')
        total=$((total + ${v:-0}))
    done
    echo "$total"
}

ticks_of() { # PID...: the sum of their user + system ticks
    local p t=0
    for p in "$@"; do t=$((t + $(cpu_ticks "$p"))); done
    echo "$t"
}
machine_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6 }' /proc/stat; } # busy idle

evalsha_calls() { # PORT
    local v
    v=$(rcli "$1" info commandstats | tr -d '\r' | sed -n 's/^cmdstat_evalsha:calls=\([0-9]*\).*/\1/p')
    echo "${v:-0}"
}

# ---- the throughput runs -----------------------------------------------------------------

throughput() { # MASTERS
    local masters=$1 r i prefix="c6-$$-m$masters" keys_file="$TMP/keys-m$masters.txt"
    start_cluster "$masters"
    start_nodes "$prefix"
    : >"$keys_file"
    for ((i = 0; i < APPS; i++)); do
        "$KEYWARD" app create "m$masters-app$i" --json >/dev/null
        "$KEYWARD" app update "m$masters-app$i" --rate 10000000/s --json >/dev/null
        "$KEYWARD" key create --app "m$masters-app$i" --scope facts:read --rate 10000000/s \
            --quota 1000000000/day --json | json_key >>"$keys_file"
    done
    # Every key through every node once: the nodes cache the keys, and the limit state exists.
    local k
    while read -r k; do
        for ((i = 0; i < NODES; i++)); do
            [[ "$(curl -s -o /dev/null -w '%{http_code}' -H "x-api-key: $k" "http://127.0.0.1:${NODE_GW[$i]}/fact")" == 200 ]] ||
                die "a limited key was not admitted by node $i"
        done
    done <"$keys_file"
    local held=() port n empty=0
    for port in "${MASTER_PORTS[@]}"; do
        n=$("$CLI" -h 127.0.0.1 -p "$port" --scan --pattern "kw:{$prefix:*" | wc -l)
        held+=("$port:$n")
        ((n > 0)) || empty=1
    done
    log "limit state per master (keys): ${held[*]}"
    ((empty == 0)) || die "a master holds no limit state: use more APPS"

    export CLUSTER6_KEYS=$keys_file CLUSTER6_PATH=/fact
    log "warm-up ${WARMUP}s"
    for ((i = 0; i < NODES; i++)); do
        wrk -t1 -c"$CONNECTIONS" -d"${WARMUP}s" -s "$BENCH_DIR/cluster6-keys.lua" "http://127.0.0.1:${NODE_GW[$i]}/fact" >/dev/null &
    done
    wait_wrk
    for ((r = 1; r <= ROUNDS; r++)); do
        for port in "${REDIS_PORTS[@]}"; do rcli "$port" config resetstat >/dev/null; done
        local kw0 ma0 re0 up0 mach0 to0 fb0
        kw0=$(ticks_of "${NODE_PIDS[@]}")
        ma0=$(ticks_of $(for p in "${MASTER_PORTS[@]}"; do echo "${REDIS_PID[$p]}"; done))
        re0=$(ticks_of $(for p in "${REPLICA_PORTS[@]}"; do echo "${REDIS_PID[$p]}"; done))
        up0=$(cpu_ticks "$UP_PID")
        mach0=$(machine_ticks)
        to0=$(metric_sum 'keyward_redis_failures_total{kind="timeout"}')
        fb0=$(metric_sum 'keyward_redis_fallback_decisions_total{mode="local"}')
        for ((i = 0; i < NODES; i++)); do
            wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$BENCH_DIR/cluster6-keys.lua" \
                "http://127.0.0.1:${NODE_GW[$i]}/fact" >"$TMP/wrk-m$masters-r$r-n$i.txt" &
        done
        wait_wrk
        local kw1 ma1 re1 up1 mach1 to1 fb1 calls=()
        kw1=$(ticks_of "${NODE_PIDS[@]}")
        ma1=$(ticks_of $(for p in "${MASTER_PORTS[@]}"; do echo "${REDIS_PID[$p]}"; done))
        re1=$(ticks_of $(for p in "${REPLICA_PORTS[@]}"; do echo "${REDIS_PID[$p]}"; done))
        up1=$(cpu_ticks "$UP_PID")
        mach1=$(machine_ticks)
        to1=$(metric_sum 'keyward_redis_failures_total{kind="timeout"}')
        fb1=$(metric_sum 'keyward_redis_fallback_decisions_total{mode="local"}')
        for port in "${MASTER_PORTS[@]}"; do calls+=("$(evalsha_calls "$port")"); done
        printf 'throughput\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$masters" "$r" \
            "$(cut -d' ' -f1 /proc/loadavg)" "$((kw1 - kw0))" "$((ma1 - ma0))" "$((re1 - re0))" \
            "$((up1 - up0))" "$mach0" "$mach1" "$((to1 - to0))" "$((fb1 - fb0))" "${calls[*]}" \
            "$TMP/wrk-m$masters-r$r-n" >>"$RESULTS"
        log "masters $masters round $r done"
    done
    if ((masters >= 3)) && [[ "$FAILOVER" == 1 ]]; then failover "$prefix"; fi
    stop_pids "${NODE_PIDS[@]}"
    stop_pids "${REDIS_PID[@]}"
}

wait_wrk() { # waits for the wrk processes started in the background (not the servers)
    local j
    for j in $(jobs -rp); do
        if [[ "$(cat "/proc/$j/comm" 2>/dev/null)" == wrk ]]; then wait "$j" || die "wrk failed"; fi
    done
}

# ---- a master killed mid-load ------------------------------------------------------------

failover() { # PREFIX
    local prefix=$1 quota mode i port victim="" heir
    if [[ -n "$QUOTA" ]]; then
        quota=$QUOTA
    else
        # What one of three routes got through in (KILL_AFTER + 4) s at the throughput rounds' rate.
        quota=$(python3 "$BENCH_DIR/cluster6_report.py" --rate "$RESULTS" 3 |
            awk -v s=$((KILL_AFTER + 4)) '{ printf "%d", $1 / 3 * s }')
        ((quota >= 300)) || quota=300
    fi
    "$KEYWARD" app create victim --json >/dev/null
    declare -A KEY=()
    for mode in fail_open fail_closed local; do
        KEY[$mode]=$("$KEYWARD" key create --app victim --scope facts:read --quota "$quota/day" --json | json_key)
    done
    # Only the victim app's state from here on: find the master of its slot.
    for port in "${MASTER_PORTS[@]}"; do rcli "$port" flushall >/dev/null; done
    for mode in fail_open fail_closed local; do
        for ((i = 0; i < NODES; i++)); do
            # Each node caches the key (a request that counts against the quota: added below).
            [[ "$(curl -s -o /dev/null -w '%{http_code}' -H "x-api-key: ${KEY[$mode]}" "http://127.0.0.1:${NODE_GW[$i]}/$mode/fact")" == 200 ]] ||
                die "the $mode route did not admit its key on node $i"
        done
    done
    for port in "${MASTER_PORTS[@]}"; do
        [[ -z "$("$CLI" -h 127.0.0.1 -p "$port" --scan --pattern "kw:{$prefix:*}:q:*" | head -1)" ]] || victim=$port
    done
    [[ -n "$victim" ]] || die "no master holds the victim app's quotas"
    heir=$(rcli "$victim" info replication | field slave0 | sed 's/.*port=\([0-9]*\).*/\1/')
    # The replica has the quotas before the kill (what it lacks at the kill is the point).
    local deadline=$((SECONDS + 10))
    until [[ "$("$CLI" -h 127.0.0.1 -p "$heir" --scan --pattern "kw:{$prefix:*}:q:*" | wc -l)" == 3 ]]; do
        ((SECONDS < deadline)) || die "the replica did not receive the quota state"
        sleep 0.1
    done
    log "failover: quota $quota/day per mode; master $victim holds the slot, replica $heir; kill after ${KILL_AFTER}s"
    local to0 fb0
    to0=$(metric_sum 'keyward_redis_failures_total{kind="timeout"}')
    ports_csv=$(IFS=,; echo "${NODE_GW[*]}")
    for mode in fail_open fail_closed local; do
        CLUSTER6_PORTS=$ports_csv CLUSTER6_KEY=${KEY[$mode]} \
            wrk -t"$NODES" -c$((NODES * 2)) -d"${FAILOVER_DURATION}s" -s "$BENCH_DIR/cluster6-modes.lua" \
            "http://127.0.0.1:${NODE_GW[0]}/$mode/fact" >"$TMP/failover-$mode.txt" &
    done
    sleep "$KILL_AFTER"
    kill -KILL "${REDIS_PID[$victim]}"
    local killed=$EPOCHREALTIME promoted=""
    while :; do
        if rcli "$heir" role 2>/dev/null | head -1 | grep -q master &&
            rcli "$heir" cluster info | grep -q cluster_state:ok; then
            promoted=$(python3 -c "print(f'{$EPOCHREALTIME - $killed:.2f}')")
            break
        fi
        python3 -c "import sys; sys.exit(0 if $EPOCHREALTIME - $killed < 30 else 1)" || die "the replica was not promoted"
        sleep 0.05
    done
    log "replica $heir promoted ${promoted}s after the kill"
    wait_wrk
    local to1
    to1=$(metric_sum 'keyward_redis_failures_total{kind="timeout"}')
    for mode in fail_open fail_closed local; do
        printf 'failover\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$mode" "$quota" "$NODES" "$promoted" \
            "$KILL_AFTER" "$((to1 - to0))" "$TMP/failover-$mode.txt" >>"$RESULTS"
    done
}

# ---- the shards alone: redis-benchmark against the cluster -------------------------------

# The limit script straight to the cluster (no keyward): `redis-benchmark --cluster`, its
# clients spread over the masters (it puts each master's own hash tag in place of "{tag}"; one
# master: without --cluster, one tag), the
# arguments keyward sends for three limits (bench/redis_shard.sh's first shape), 10,000 keys per
# tag. What several shards decide together when nothing else runs, CPU of the masters and the
# replicas per decision.
shards_alone() { # MASTERS
    local masters=$1 r port sha before after calls
    start_cluster "$masters"
    local src=$ROOT/crates/keyward-limit/src
    for port in "${REDIS_PORTS[@]}"; do
        sha=$(rcli "$port" script load "$(cat "$src/clock.lua" "$src/gcra.lua")" | tr -d '\r')
    done
    local rate='100000.000000 10 1' quota='d 86400 1000000 1'
    for ((r = 1; r <= ROUNDS; r++)); do
        for port in "${REDIS_PORTS[@]}"; do rcli "$port" config resetstat >/dev/null; done
        local ma0 re0 ma1 re1 mach0 mach1 rps counts=()
        ma0=$(ticks_of $(for p in "${MASTER_PORTS[@]}"; do echo "${REDIS_PID[$p]}"; done))
        re0=$(ticks_of $(for p in "${REPLICA_PORTS[@]}"; do echo "${REDIS_PID[$p]}"; done))
        mach0=$(machine_ticks)
        # redis-benchmark --cluster wants three masters at least; one master takes the same
        # commands with one tag of its own, without --cluster.
        local mode=(--cluster) tag='{tag}'
        ((masters > 1)) || { mode=() tag='{b}'; }
        # shellcheck disable=SC2086
        rps=$(redis-benchmark "${mode[@]}" -h 127.0.0.1 -p "${MASTER_PORTS[0]}" -c 32 -P 16 -n "$SHARD_REQUESTS" -r 10000 -q \
            evalsha "$sha" 3 "kw:$tag:r:__rand_int__" "kw:$tag:a:__rand_int__" "kw:$tag:q:__rand_int__" '' 2 1 \
            $rate $rate $quota 2>&1 | tr '\r' '\n' | { grep 'requests per second' || true; } | tail -1 |
            sed 's/.*: \([0-9.]*\) requests per second.*/\1/')
        ma1=$(ticks_of $(for p in "${MASTER_PORTS[@]}"; do echo "${REDIS_PID[$p]}"; done))
        re1=$(ticks_of $(for p in "${REPLICA_PORTS[@]}"; do echo "${REDIS_PID[$p]}"; done))
        mach1=$(machine_ticks)
        for port in "${MASTER_PORTS[@]}"; do counts+=("$(evalsha_calls "$port")"); done
        printf 'shards\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$masters" "$r" "$(cut -d' ' -f1 /proc/loadavg)" \
            "${rps:-0}" "$((ma1 - ma0))" "$((re1 - re0))" "$mach0" "$mach1" "${counts[*]}" >>"$RESULTS"
        log "shards alone, masters $masters round $r: ${rps:-?} decisions/s"
    done
    stop_pids "${REDIS_PID[@]}"
}

if ((NODES > 0)); then
    for masters in $MASTERS_LIST; do
        throughput "$masters"
    done
fi
if [[ "$SHARDS" == 1 ]]; then
    for masters in $MASTERS_LIST; do
        shards_alone "$masters"
    done
fi

{
    echo "$( ((NODES == 0)) || "$KEYWARD" --version 2>/dev/null | head -1), redis $("$SERVER" --version | sed 's/.*v=\([^ ]*\).*/\1/'), $(nproc) cores, $NODES nodes × $WORKERS worker thread(s), wrk -t1 -c$CONNECTIONS per node, ${DURATION}s × $ROUNDS rounds, $APPS apps"
    echo
    python3 "$BENCH_DIR/cluster6_report.py" "$RESULTS" "$CLK_TCK"
} | tee "$REPORT"
if [[ -n "$RESULTS_DIR" ]]; then
    mkdir -p "$RESULTS_DIR"
    cp "$TMP"/wrk-*.txt "$TMP"/failover-*.txt "$RESULTS" "$REPORT" "$RESULTS_DIR"/ 2>/dev/null || true
fi
