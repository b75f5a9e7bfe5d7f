#!/usr/bin/env bash
# Instructions per proxied request, counted by valgrind's callgrind: the same figure for the same
# binary and inputs whatever else the machine is doing (CPU seconds from /proc swing with the
# load of a shared 2-core machine; instruction counts do not). It complements bench/gateway.sh,
# which measures time; it is not a substitute for it (an instruction is not a fixed cost).
#
#   bench/instructions.sh                                   # target/release/keyward vs nginx
#   BINS="new=/tmp/kw-new base=/tmp/kw-base" bench/instructions.sh
#
# Environment (all optional):
#   BINS         space-separated NAME=PATH keyward binaries (default keyward=target/release/keyward)
#   NGINX        1 (default) to count nginx with the static-key config of bench/gateway.sh too
#   DURATION     wrk duration of the counted window (default 10s; under callgrind a proxy
#                serves a few hundred requests per second)
#   CONNECTIONS  wrk connections (default 4)
#   ROUNDS       counted windows per target, in turn A B A B (default 2)
#   LOG          KEYWARD_LOG of the keyward processes (default warn; info is the default of `serve`)
#   KEEP_TMP     1 to keep the callgrind dumps (callgrind_annotate --inclusive=yes FILE)
#   LIMITED_TARGETS  space-separated names of BINS whose key has limits on, never tripped (key
#                rate, key quota, IP allowlist, app rate: as COMPARE=limits in bench/gateway.sh);
#                the same binary twice counts limits on vs off:
#                BINS="off=target/release/keyward on=target/release/keyward" LIMITED_TARGETS=on NGINX=0
#
# For each target: start it under `valgrind --tool=callgrind --instr-atstart=no`, send 200
# warm-up requests (instrumentation off), switch instrumentation on (`callgrind_control -i on`),
# run wrk, switch it off, dump, and divide the instructions (Ir, every thread of the process) by
# the requests wrk completed. wrk's -c in-flight requests at the end are the error (< 1 %).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BINS=${BINS:-keyward=${CARGO_TARGET_DIR:-$ROOT/target}/release/keyward}
NGINX_ON=${NGINX:-1}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-4}
ROUNDS=${ROUNDS:-2}
LIMITED_TARGETS=${LIMITED_TARGETS:-}
log() { printf '[instructions] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
for t in valgrind callgrind_control wrk curl python3; do command -v $t >/dev/null || die "$t is needed (apt-get install valgrind wrk curl)"; done
NGINX_BIN=$(command -v nginx || echo /usr/sbin/nginx)
[[ "$NGINX_ON" != 1 || -x "$NGINX_BIN" ]] || die "nginx is needed (apt-get install nginx-light) or NGINX=0"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/keyward-instr.XXXXXX")
chmod 755 "$TMP"
PIDS=()
cleanup() {
    local rc=$?
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    sleep 0.5
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    if [[ "${KEEP_TMP:-0}" == 1 ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
    exit "$rc"
}
trap cleanup EXIT
for name in $(compgen -e); do [[ $name == KEYWARD_* ]] && unset "$name"; done

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_status() { # URL WANT WHAT [curl args]
    local url=$1 want=$2 what=$3 got
    shift 3
    for _ in $(seq 600); do
        got=$(curl -s -o /dev/null -w '%{http_code}' "$@" "$url" || true)
        [[ "$got" == "$want" ]] && return 0
        sleep 0.1
    done
    die "$what not ready at $url (last status ${got:-none})"
}

read -r -a ENTRIES <<<"$BINS"
FIRST=${ENTRIES[0]#*=}
[[ -x "$FIRST" ]] || die "$FIRST is not an executable (build it: cargo build --release -p keyward)"
UP_PORT=$(free_port)
"$FIRST" cat-facts --listen "127.0.0.1:$UP_PORT" >"$TMP/upstream.log" 2>&1 &
PIDS+=($!)
wait_status "http://127.0.0.1:$UP_PORT/fact" 200 upstream
PEPPER=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
ADMIN_TOKEN=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')

declare -A URL KEY PID
start_keyward() { # NAME BIN
    local name=$1 bin=$2 gw admin dir="$TMP/$1"
    mkdir -p "$dir"
    gw=$(free_port); admin=$(free_port)
    cat >"$dir/keyward.toml" <<CONF
[store]
url = "$dir/keyward.db"
[keys]
prefix = "kw"
[server]
worker_threads = 1
[gateway]
listen = "127.0.0.1:$gw"
credential_headers = ["x-api-key"]
invalid_credential_status = 403
[admin]
listen = "127.0.0.1:$admin"
[[routes]]
name = "fact"
path_prefix = "/fact"
methods = ["GET"]
upstream = "http://127.0.0.1:$UP_PORT"
scopes = ["facts:read"]
CONF
    KEYWARD_PEPPER=$PEPPER KEYWARD_ADMIN_TOKEN=$ADMIN_TOKEN KEYWARD_LOG=${LOG:-warn} \
        valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$dir/callgrind.out.%p" \
        "$bin" serve --config "$dir/keyward.toml" >"$dir/log" 2>&1 &
    PIDS+=($!)
    PID[$name]=$!
    wait_status "http://127.0.0.1:$admin/healthz" 200 "$name (under valgrind)"
    local limits=()
    KEYWARD_ADMIN_TOKEN=$ADMIN_TOKEN KEYWARD_ADMIN_URL="http://127.0.0.1:$admin" "$bin" app create bench --json >/dev/null
    if [[ " $LIMITED_TARGETS " == *" $name "* ]]; then
        # Limits on, never tripped (as COMPARE=limits in bench/gateway.sh): key rate + key quota
        # + IP allowlist, and an app rate.
        KEYWARD_ADMIN_TOKEN=$ADMIN_TOKEN KEYWARD_ADMIN_URL="http://127.0.0.1:$admin" \
            "$bin" app update bench --rate 10000000/s --json >/dev/null
        limits=(--rate 10000000/s --quota 1000000000/day --ip 127.0.0.1)
    fi
    KEY[$name]=$(KEYWARD_ADMIN_TOKEN=$ADMIN_TOKEN KEYWARD_ADMIN_URL="http://127.0.0.1:$admin" \
        "$bin" key create --app bench --scope facts:read "${limits[@]}" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
    URL[$name]="http://127.0.0.1:$gw/fact"
}
TARGETS=()
for e in "${ENTRIES[@]}"; do
    name=${e%%=*}; bin=${e#*=}
    [[ -x "$bin" ]] || die "$bin is not an executable"
    log "starting $name ($bin) under callgrind"
    start_keyward "$name" "$bin"
    TARGETS+=("$name")
done
if [[ "$NGINX_ON" == 1 ]]; then
    NP=$(free_port)
    mkdir -p "$TMP/nginx"
    KEY[nginx]=${KEY[${TARGETS[0]}]}
    sed -e "s|@WORKERS@|1|g" -e "s|@PREFIX@|$TMP/nginx|g" -e "s|@PORT@|$NP|g" \
        -e "s|@UPSTREAM_PORT@|$UP_PORT|g" -e "s|@KEY@|${KEY[nginx]}|g" -e "s|@LISTEN_SSL@||g" -e "s|@TLS_DIRECTIVES@||g" \
        -e 's|@PROXY_DIRECTIVES@|proxy_pass http://catfacts; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_set_header X-Api-Key "";|g' \
        "$ROOT/bench/nginx-static-key.conf.template" >"$TMP/nginx/nginx.conf"
    log "starting nginx under callgrind (one process: master_process off)"
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$TMP/nginx/callgrind.out.%p" \
        "$NGINX_BIN" -p "$TMP/nginx" -e "$TMP/nginx/error.log" -c "$TMP/nginx/nginx.conf" \
        -g 'daemon off; master_process off;' >"$TMP/nginx/log" 2>&1 &
    PIDS+=($!)
    PID[nginx]=$!
    URL[nginx]="http://127.0.0.1:$NP/fact"
    TARGETS+=(nginx)
fi
for t in "${TARGETS[@]}"; do
    wait_status "${URL[$t]}" 200 "$t" -H "x-api-key: ${KEY[$t]}"
    for _ in $(seq 200); do curl -s -o /dev/null -H "x-api-key: ${KEY[$t]}" "${URL[$t]}"; done
done

RESULTS="$TMP/results.tsv"
for round in $(seq "$ROUNDS"); do
    for t in "${TARGETS[@]}"; do
        pid=${PID[$t]}
        callgrind_control -z "$pid" >/dev/null 2>&1
        callgrind_control -i on "$pid" >/dev/null 2>&1
        out=$(wrk -t1 -c"$CONNECTIONS" -d"$DURATION" -H "x-api-key: ${KEY[$t]}" "${URL[$t]}")
        callgrind_control -i off "$pid" >/dev/null 2>&1
        callgrind_control -d "round$round" "$pid" >/dev/null 2>&1
        sleep 1
        n=$(sed -n 's/^ *\([0-9]*\) requests in.*/\1/p' <<<"$out")
        bad=$(sed -n 's/^ *Non-2xx or 3xx responses: *\([0-9]*\)/\1/p' <<<"$out")
        [[ -z "$bad" ]] || die "$t answered $bad non-2xx responses"
        dump=$(ls -t "$(dirname "$(ls "$TMP"/*/callgrind.out."$pid"* | head -1)")"/callgrind.out."$pid".* | head -1)
        ir=$(sed -n 's/^totals: *\([0-9]*\).*/\1/p' "$dump" | head -1)
        [[ -n "$n" && -n "$ir" && "$n" -gt 0 ]] || die "no count for $t (requests '$n', Ir '$ir')"
        log "round $round: $t $n requests, $ir instructions"
        printf '%s\t%s\t%s\t%s\n' "$t" "$round" "$n" "$ir" >>"$RESULTS"
    done
done

echo
echo "Instructions per proxied keyed request (callgrind, every thread of the proxy), $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "keyward source: commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'); binaries: $BINS"
python3 - "$RESULTS" "${TARGETS[@]}" <<'PY'
import sys, statistics, collections
rows = [l.split('\t') for l in open(sys.argv[1]).read().splitlines()]
per = collections.defaultdict(list)
for t, r, n, ir in rows:
    per[t].append(int(ir) / int(n))
targets = sys.argv[2:]
print()
print("| target | " + " | ".join(f"round {i+1}" for i in range(max(len(v) for v in per.values()))) + " | median |")
print("|---" * (2 + max(len(v) for v in per.values())) + "|")
med = {}
for t in targets:
    v = per[t]
    med[t] = statistics.median(v)
    print(f"| {t} | " + " | ".join(f"{x:,.0f}" for x in v) + f" | **{med[t]:,.0f}** |")
print()
ref = 'nginx' if 'nginx' in med else targets[-1]
for t in targets:
    if t != ref:
        print(f"- {t}/{ref}: {med[t]/med[ref]:.2f}x instructions per request")
PY
