#!/usr/bin/env bash
# Forward-auth latency and throughput (issue 10 point 4): what nginx `auth_request` to keyward
# adds to a request, measured side by side in one run (A B C A B C ...):
#
#   nginx       nginx proxying to the upstream, no authentication at all (the floor)
#   nginxauth   nginx + auth_request -> keyward forward-auth (examples/nginx/keyward-auth-request.conf,
#               the config the integration test runs)
#   keyward     keyward itself as the gateway (same key, same route)
#
# Each target is measured twice per round: under load (wrk, CONNECTIONS connections: RPS,
# p50, p99) and alone (wrk with 1 connection: p50 is the latency of one request on loopback,
# so p50(nginxauth) - p50(nginx) is what the keyward decision adds). A third series calls
# keyward's forward-auth endpoint directly with 1 connection (`fadirect`): the verify call
# itself, HTTP round trip included.
#
#   bench/forward_auth.sh
#   ROUNDS=5 DURATION=10s bench/forward_auth.sh
#
# Environment (all optional):
#   ROUNDS       measured rounds (default 3)
#   DURATION     wrk duration of one loaded run (default 8s)
#   LAT_DURATION wrk duration of one single-connection run (default 5s)
#   CONNECTIONS  wrk connections of the loaded runs (default 32)
#   WARMUP       wrk duration of the warm-up of each target (default 2s)
#   SKIP_BUILD   1 to use the existing release binary
#   CARGO_TARGET_DIR  honoured: the binary is $CARGO_TARGET_DIR/release/keyward
#   RESULTS_DIR  if set, the raw wrk outputs and the report are copied there
#   KEEP_TMP     1 to keep the temporary directory
#
# nginx runs with one worker (the example config says `master_process off`), keyward with one
# worker thread, so that both sides get one core of the two. Only loopback addresses are used;
# every process started here is stopped on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR="$ROOT/bench"
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8s}
LAT_DURATION=${LAT_DURATION:-5s}
CONNECTIONS=${CONNECTIONS:-32}
WARMUP=${WARMUP:-2s}
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP_TMP=${KEEP_TMP:-0}

log() { printf '[bench] %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

PIDS=()
TMP=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    local pid
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        kill -TERM "${PIDS[i]}" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [[ $rc -ne 0 && -n "$TMP" ]]; then
        for f in "$TMP"/upstream.log "$TMP"/keyward.log "$TMP"/nginx*/error.log; do
            [[ -s "$f" ]] && { log "--- tail of $f"; tail -n 20 "$f" >&2; }
        done
    fi
    if [[ -n "$TMP" ]]; then
        if [[ "$KEEP_TMP" == 1 ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

find_nginx() { command -v nginx 2>/dev/null || { [[ -x /usr/sbin/nginx ]] && echo /usr/sbin/nginx; } || true; }

if [[ -z "$(find_nginx)" ]] || ! command -v wrk >/dev/null; then
    [[ $(id -u) -eq 0 ]] || die "install nginx (nginx-light) and wrk first"
    log "apt-get install nginx-light wrk"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx-light wrk >&2
fi
NGINX=$(find_nginx)
[[ -n "$NGINX" ]] || die "nginx not found"
command -v curl >/dev/null || die "curl is needed"

KEYWARD="${CARGO_TARGET_DIR:-$ROOT/target}/release/keyward"
if [[ "$SKIP_BUILD" != 1 ]]; then
    log "cargo build --release -p keyward"
    (cd "$ROOT" && cargo build --release -p keyward)
fi
[[ -x "$KEYWARD" ]] || die "$KEYWARD not built"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/keyward-fa-bench.XXXXXX")
chmod 755 "$TMP"
mapfile -t PORTS < <(python3 - <<'EOF'
import socket
socks = []
for _ in range(6):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
for s in socks:
    print(s.getsockname()[1])
EOF
)
UP_PORT=${PORTS[0]} GW_PORT=${PORTS[1]} ADMIN_PORT=${PORTS[2]} VERIFY_PORT=${PORTS[3]}
NGINX_PORT=${PORTS[4]} NGINX_AUTH_PORT=${PORTS[5]}

for name in $(compgen -e); do
    if [[ $name == KEYWARD_* ]]; then unset "$name"; fi
done

wait_http() { # URL EXPECTED_STATUS WHAT PID [curl args]
    local url=$1 want=$2 what=$3 pid=$4 got
    shift 4
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || die "$what exited during start-up"
        got=$(curl -s -o /dev/null -w '%{http_code}' "$@" "$url" || true)
        [[ "$got" == "$want" ]] && return 0
        sleep 0.1
    done
    die "$what not ready at $url (last status ${got:-none}, wanted $want)"
}

log "upstream: keyward cat-facts on 127.0.0.1:$UP_PORT"
"$KEYWARD" cat-facts --listen "127.0.0.1:$UP_PORT" >"$TMP/upstream.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$UP_PORT/fact" 200 upstream "${PIDS[-1]}"

cat >"$TMP/keyward.toml" <<EOF
[store]
url = "$TMP/keyward.db"

[server]
worker_threads = 1

[gateway]
listen = "127.0.0.1:$GW_PORT"
trusted_proxies = ["127.0.0.1/32"]

[admin]
listen = "127.0.0.1:$ADMIN_PORT"

[verify]
listen = "127.0.0.1:$VERIFY_PORT"

[[routes]]
name = "fact"
path_prefix = "/fact"
methods = ["GET"]
upstream = "http://127.0.0.1:$UP_PORT"
scopes = ["facts:read"]
EOF
KEYWARD_PEPPER=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
KEYWARD_ADMIN_TOKEN=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')
KEYWARD_VERIFY_TOKEN=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')
export KEYWARD_ADMIN_TOKEN KEYWARD_ADMIN_URL="http://127.0.0.1:$ADMIN_PORT"
log "keyward serve: gateway :$GW_PORT, admin :$ADMIN_PORT, verify :$VERIFY_PORT, 1 worker thread"
KEYWARD_PEPPER=$KEYWARD_PEPPER KEYWARD_VERIFY_TOKEN=$KEYWARD_VERIFY_TOKEN KEYWARD_LOG=warn \
    "$KEYWARD" serve --config "$TMP/keyward.toml" >"$TMP/keyward.log" 2>&1 &
PIDS+=($!)
KW_PID=$!
wait_http "http://127.0.0.1:$ADMIN_PORT/healthz" 200 "keyward" "${PIDS[-1]}"
"$KEYWARD" app create bench --json >/dev/null
KEY=$("$KEYWARD" key create --app bench --scope facts:read --json |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["key"])')
[[ "$KEY" =~ ^[A-Za-z0-9_]+$ ]] || die "unexpected key from keyward key create"

cpu_ticks() { # PID: user + system clock ticks so far (fields 14 and 15 of /proc/PID/stat)
    local f fs
    f=$(sed 's/.*) //' "/proc/$1/stat")
    read -r -a fs <<<"$f"
    echo $((fs[11] + fs[12]))
}

start_nginx() { # DIR CONF_TEXT_FILE PORT
    "$NGINX" -p "$1" -e "$1/error.log" -c "$2" -t -q || die "nginx rejected $2"
    "$NGINX" -p "$1" -e "$1/error.log" -c "$2" >"$1/stdout.log" 2>&1 &
    PIDS+=($!)
}

log "nginx (no auth) on :$NGINX_PORT"
mkdir -p "$TMP/nginx"
cat >"$TMP/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
master_process off;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $TMP/nginx/client_body;
    proxy_temp_path $TMP/nginx/proxy;
    fastcgi_temp_path $TMP/nginx/fastcgi;
    uwsgi_temp_path $TMP/nginx/uwsgi;
    scgi_temp_path $TMP/nginx/scgi;
    upstream catfacts { server 127.0.0.1:$UP_PORT; keepalive 64; }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://catfacts;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Api-Key "";
        }
    }
}
EOF
start_nginx "$TMP/nginx" "$TMP/nginx/nginx.conf"
NGINX_PID=${PIDS[-1]}
wait_http "http://127.0.0.1:$NGINX_PORT/fact" 200 "nginx" "${PIDS[-1]}"

log "nginx + auth_request -> keyward on :$NGINX_AUTH_PORT (examples/nginx/keyward-auth-request.conf)"
mkdir -p "$TMP/nginxauth"
sed -e "s|@PREFIX@|$TMP/nginxauth|g" -e "s|@PORT@|$NGINX_AUTH_PORT|g" \
    -e "s|@UPSTREAM_PORT@|$UP_PORT|g" -e "s|@KEYWARD_PORT@|$VERIFY_PORT|g" \
    "$ROOT/examples/nginx/keyward-auth-request.conf" >"$TMP/nginxauth/nginx.conf"
start_nginx "$TMP/nginxauth" "$TMP/nginxauth/nginx.conf"
NGINXAUTH_PID=${PIDS[-1]}
wait_http "http://127.0.0.1:$NGINX_AUTH_PORT/fact" 401 "nginx + auth_request" "${PIDS[-1]}"

check() { # WHAT WANT URL [curl args]
    local what=$1 want=$2 url=$3 got
    shift 3
    got=$(curl -s -o /dev/null -w '%{http_code}' "$@" "$url")
    [[ "$got" == "$want" ]] || die "$what: $url answered $got, expected $want"
}
check "nginxauth with key" 200 "http://127.0.0.1:$NGINX_AUTH_PORT/fact" -H "x-api-key: $KEY"
check "nginxauth wrong key" 401 "http://127.0.0.1:$NGINX_AUTH_PORT/fact" -H "x-api-key: nope"
check "keyward with key" 200 "http://127.0.0.1:$GW_PORT/fact" -H "x-api-key: $KEY"
FA_URL="http://127.0.0.1:$VERIFY_PORT/v1/forward-auth"
FA_HEADERS=(-H "x-original-method: GET" -H "x-original-uri: /fact" -H "x-api-key: $KEY")
check "forward-auth direct" 200 "$FA_URL" "${FA_HEADERS[@]}"

declare -A URL=(
    [nginx]="http://127.0.0.1:$NGINX_PORT/fact"
    [nginxauth]="http://127.0.0.1:$NGINX_AUTH_PORT/fact"
    [keyward]="http://127.0.0.1:$GW_PORT/fact"
)
TARGETS=(nginx nginxauth keyward)
mkdir -p "$TMP/results"
for t in "${TARGETS[@]}"; do
    wrk -t1 -c"$CONNECTIONS" -d"$WARMUP" -H "x-api-key: $KEY" "${URL[$t]}" >/dev/null
done
for r in $(seq "$ROUNDS"); do
    for t in "${TARGETS[@]}"; do
        log "round $r: $t, $CONNECTIONS connections, $DURATION"
        # CPU of keyward and of the target's nginx over the run (user + system ticks, /proc).
        proxy=${NGINX_PID}; [[ "$t" == nginxauth ]] && proxy=$NGINXAUTH_PID
        kw0=$(cpu_ticks "$KW_PID"); nx0=$(cpu_ticks "$proxy")
        wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency -H "x-api-key: $KEY" "${URL[$t]}" \
            >"$TMP/results/$t-$r.txt"
        echo "$(($(cpu_ticks "$KW_PID") - kw0)) $(($(cpu_ticks "$proxy") - nx0)) $(getconf CLK_TCK)" \
            >"$TMP/results/$t-$r.cpu"
    done
    for t in "${TARGETS[@]}"; do
        log "round $r: $t, 1 connection, $LAT_DURATION"
        wrk -t1 -c1 -d"$LAT_DURATION" --latency -H "x-api-key: $KEY" "${URL[$t]}" \
            >"$TMP/results/c1$t-$r.txt"
    done
    log "round $r: forward-auth called directly, 1 connection, $LAT_DURATION"
    wrk -t1 -c1 -d"$LAT_DURATION" --latency -H "x-original-method: GET" -H "x-original-uri: /fact" \
        -H "x-api-key: $KEY" "$FA_URL" >"$TMP/results/c1fadirect-$r.txt"
done

echo
echo "keyward binary: $KEYWARD; nginx: $("$NGINX" -v 2>&1 | sed 's/.*: //'); rounds: $ROUNDS"
echo
python3 - "$TMP/results" <<'EOF' | tee "$TMP/results/report.md"
import os, re, statistics, sys

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}
def ms(t):
    m = re.fullmatch(r"([0-9.]+)(us|ms|s)", t)
    return float(m.group(1)) * UNITS[m.group(2)]

def parse(path):
    out = open(path).read()
    if "Non-2xx" in out or "Socket errors" in out:
        sys.exit(f"{path}: non-2xx responses or socket errors:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))
    p50 = ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
    p99 = ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    return rps, p50, p99

d = sys.argv[1]
runs = {}
for f in sorted(os.listdir(d)):
    m = re.fullmatch(r"(\w+)-(\d+)\.txt", f)
    if m:
        runs.setdefault(m.group(1), []).append(parse(os.path.join(d, f)))
med = {k: tuple(statistics.median(x[i] for x in v) for i in range(3)) for k, v in runs.items()}

print("| target | connections | RPS (median) | p50 | p99 | rounds |")
print("|---|---|---|---|---|---|")
for k in ["nginx", "nginxauth", "keyward", "c1nginx", "c1nginxauth", "c1keyward", "c1fadirect"]:
    if k in med:
        rps, p50, p99 = med[k]
        c = "1" if k.startswith("c1") else "load"
        print(f"| {k.removeprefix('c1')} | {c} | {rps:,.0f} | {p50*1000:.0f} µs | {p99*1000:.0f} µs | {len(runs[k])} |")
print()
n, a, k = med["nginx"], med["nginxauth"], med["keyward"]
print(f"- under load: nginx+auth_request RPS / nginx without auth = {a[0]/n[0]:.2f}; "
      f"nginx+auth_request RPS / keyward as the gateway = {a[0]/k[0]:.2f}")
cn, ca, fd = med["c1nginx"], med["c1nginxauth"], med["c1fadirect"]
added = (ca[1] - cn[1]) * 1000
# CPU per request under load (µs): keyward's and the target nginx's, medians over the rounds.
def cpu(target):
    kw, nx = [], []
    for f in sorted(os.listdir(d)):
        m = re.fullmatch(re.escape(target) + r"-(\d+)\.cpu", f)
        if not m:
            continue
        k, n, hz = (int(x) for x in open(os.path.join(d, f)).read().split())
        out = open(os.path.join(d, f"{target}-{m.group(1)}.txt")).read()
        reqs = int(re.search(r"(\d+) requests in", out).group(1))
        kw.append(k / hz / reqs * 1e6)
        nx.append(n / hz / reqs * 1e6)
    return (statistics.median(kw), statistics.median(nx)) if kw else None
print(f"- one connection: auth_request adds {added:.0f} µs to the median request "
      f"({cn[1]*1000:.0f} -> {ca[1]*1000:.0f} µs, ratio {ca[1]/cn[1]:.2f}); "
      f"goal <= 60 µs: {'met' if added <= 60 else 'missed'}")
print(f"- the forward-auth call alone (HTTP round trip on loopback, cached key): median {fd[1]*1000:.0f} µs, "
      f"p99 {fd[2]*1000:.0f} µs")
c_n, c_a, c_k = cpu("nginx"), cpu("nginxauth"), cpu("keyward")
if c_n and c_a and c_k:
    print(f"- CPU per request under load, µs (/proc, user + system): nginx alone {c_n[1]:.1f}; "
          f"nginx + auth_request: nginx {c_a[1]:.1f} + keyward's forward-auth {c_a[0]:.1f} = {c_a[0] + c_a[1]:.1f} "
          f"(nginx's subrequest adds {c_a[1] - c_n[1]:.1f} to nginx); keyward as the gateway {c_k[0]:.1f}")
EOF
if [[ -n "${RESULTS_DIR:-}" ]]; then
    mkdir -p "$RESULTS_DIR"
    cp "$TMP"/results/* "$RESULTS_DIR"/
    log "raw results in $RESULTS_DIR"
fi
