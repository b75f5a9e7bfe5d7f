#!/usr/bin/env bash
# Load test: the keyward gateway against nginx running the classic static-key config,
# both in front of the same upstream (`keyward cat-facts`), measured in turn A B A B ...
#
#   bench/gateway.sh                      # defaults below
#   WORKERS=2 ROUNDS=5 DURATION=20s bench/gateway.sh
#   GATEWAY_BIN_B=/tmp/keyward-old bench/gateway.sh   # a second keyward binary in the same rotation
#   COMPARE=limits bench/gateway.sh       # one gateway, a key with limits on vs one without
#   TLS=1 bench/gateway.sh                # both proxies terminate TLS (wrk over https)
#   UPSTREAM=https bench/gateway.sh       # both proxies reach the upstream over TLS (also: h2c, h2)
#   POST=1 bench/gateway.sh               # a 1 KiB JSON POST per request (POST /facts) instead of GET /fact
#   COMPARE=redis bench/gateway.sh        # the same limited key through local limits vs Redis limits
#
# Environment (all optional):
#   WORKERS      nginx worker_processes and keyward [server] worker_threads (default 1)
#   ROUNDS       measured rounds per target (default 3)
#   DURATION     wrk duration of one measured run (default 10s)
#   CONNECTIONS  wrk connections (default 32)
#   WRK_THREADS  wrk threads (default 1)
#   WARMUP       wrk duration of the warm-up run of each target (default 3s)
#   BENCH_PATH   request path (default /fact)
#   RESULTS_DIR  if set, the raw wrk outputs and the report are copied there
#   SKIP_BUILD   1 to use the existing target/release/keyward
#   CARGO_TARGET_DIR  honoured: the binary is taken from $CARGO_TARGET_DIR/release/keyward
#   KEEP_TMP     1 to keep the temporary directory (configs, logs) for inspection
#   LOG          KEYWARD_LOG of the keyward gateways (default warn; `info` is what `serve` logs
#                by default: the request span is then created and filled on every request)
#   GATEWAY_BIN  use this keyward binary (no build); it also runs the upstream unless UPSTREAM_BIN
#   UPSTREAM_BIN the keyward binary that runs the upstream (`cat-facts`), to keep it fixed
#   GATEWAY_BIN_B  a second keyward binary (e.g. the previous commit's build), served on its own
#                ports from the same store and measured as `keyward_b` in the same rotation
#   COMPARE      nginx (default): targets keyward [keyward_b] nginx.
#                limits: no nginx; one gateway measured with the plain key (`unlimited`) and
#                with a key that has a generous key rate, key quota and IP allowlist and whose
#                app has a generous rate (`limited`; never tripped). bench/limits.sh does this.
#                redis: no nginx; the `limited` key of COMPARE=limits through two gateways on
#                one store: `local` (limits in process) and `redis` (the same limits in Redis,
#                [redis] url = REDIS_URL, default redis://127.0.0.1:6379/; one Lua script per
#                request). Redis's own CPU is not in the proxy CPU column. bench/redis.sh.
#   TLS          1: a throw-away CA and an ECDSA P-256 server certificate for 127.0.0.1 are made
#                with openssl; keyward serves them (gateway.tls_cert_file / tls_key_file) and
#                nginx `listen ... ssl` with the same certificate; wrk and curl use https.
#                Upstreams stay plain HTTP on loopback for both (see UPSTREAM).
#   POST         1: every request is `POST /facts` with a 1 KiB JSON body (`{"fact": "<1000
#                characters>"}`, 1,012 bytes; the upstream answers 201), sent by wrk's Lua script
#                bench/post-1k.lua; the route takes GET and POST. Default 0: `GET /fact`.
#   UPSTREAM     how both proxies reach the upstream (`keyward cat-facts`):
#                http (default): HTTP/1.1, keep-alive (nginx: proxy_pass http://, keepalive 64).
#                https: HTTP/1.1 over TLS, the upstream's certificate (throw-away CA, SAN
#                localhost) verified by both (keyward: upstream https://, ca_file, server_name,
#                protocol = "http1"; nginx: proxy_pass https://, proxy_ssl_verify on,
#                proxy_ssl_session_reuse on).
#                h2c: HTTP/2 with prior knowledge (keyward: protocol = "h2c"; nginx reaches an
#                HTTP/2 upstream only with grpc_pass grpc://, which it is here).
#                h2: HTTP/2 over TLS (keyward: protocol = "h2"; nginx: grpc_pass grpcs://,
#                grpc_ssl_verify on).
#
# Only loopback addresses are used. Every process started here is stopped on exit, also on
# failure or Ctrl-C.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR="$ROOT/bench"
WORKERS=${WORKERS:-1}
KW_LOG=${LOG:-warn}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
WRK_THREADS=${WRK_THREADS:-1}
WARMUP=${WARMUP:-3s}
BENCH_PATH=${BENCH_PATH:-/fact}
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP_TMP=${KEEP_TMP:-0}
GATEWAY_BIN_B=${GATEWAY_BIN_B:-}
COMPARE=${COMPARE:-nginx}
TLS=${TLS:-0}
UPSTREAM=${UPSTREAM:-http}
POST=${POST:-0}
WRK_SCRIPT=()
METHODS='["GET"]'
if [[ "$POST" == 1 ]]; then
    BENCH_PATH=${BENCH_PATH_POST:-/facts}
    WRK_SCRIPT=(-s "$BENCH_DIR/post-1k.lua")
    METHODS='["GET", "POST"]'
elif [[ "$POST" != 0 ]]; then
    echo "[bench] error: POST must be 0 or 1" >&2
    exit 1
fi
SCHEME=http
CURL_TLS=()

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
    # Stop in reverse start order; TERM first, KILL what is still there after 5 s.
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        pid=${PIDS[i]}
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "process $pid did not stop, killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    done
    if [[ $rc -ne 0 && -n "$TMP" ]]; then
        for f in "$TMP"/upstream.log "$TMP"/keyward.log "$TMP"/nginx/error.log; do
            if [[ -s "$f" ]]; then
                log "--- tail of $f"
                tail -n 20 "$f" >&2
            fi
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

# ---- tools -------------------------------------------------------------------------------

find_nginx() { command -v nginx 2>/dev/null || { [[ -x /usr/sbin/nginx ]] && echo /usr/sbin/nginx; } || true; }

install_tools() {
    local missing=()
    [[ -n "$(find_nginx)" ]] || missing+=(nginx)
    command -v wrk >/dev/null || missing+=(wrk)
    [[ ${#missing[@]} -eq 0 ]] && return 0
    local sudo=""
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null || die "missing ${missing[*]} and not root: install nginx and wrk"
        sudo="sudo"
    fi
    local pkgs=()
    for m in "${missing[@]}"; do
        case $m in
            nginx) pkgs+=(nginx-light) ;;
            wrk) pkgs+=(wrk) ;;
        esac
    done
    # Refresh the package lists only when a package has no install candidate.
    local need_update=0
    for p in "${pkgs[@]}" nginx; do
        apt-cache policy "$p" 2>/dev/null | grep -q 'Candidate: [^(]' || need_update=1
    done
    if [[ $need_update == 1 ]]; then
        log "apt-get update"
        $sudo apt-get update -qq
    fi
    # nginx-light is gone from newer Debian releases: fall back to nginx.
    if [[ " ${pkgs[*]} " == *" nginx-light "* ]] &&
        ! apt-cache policy nginx-light 2>/dev/null | grep -q 'Candidate: [^(]'; then
        pkgs=("${pkgs[@]/nginx-light/nginx}")
    fi
    log "apt-get install ${pkgs[*]}"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >&2
}

free_ports() { # N -> N free loopback TCP ports, one per line
    python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
for s in socks:
    print(s.getsockname()[1])
EOF
}

wait_http() { # URL EXPECTED_STATUS WHAT PID
    local url=$1 want=$2 what=$3 pid=$4 got
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || die "$what exited during start-up"
        got=$(curl -s "${CURL_TLS[@]}" -o /dev/null -w '%{http_code}' "$url" || true)
        if [[ "$got" == "$want" ]]; then return 0; fi
        sleep 0.1
    done
    die "$what not ready at $url (last status ${got:-none}, wanted $want)"
}

expect_status() { # WHAT WANT URL [curl args...]
    local what=$1 want=$2 url=$3 got
    shift 3
    got=$(curl -s "${CURL_TLS[@]}" -o /dev/null -w '%{http_code}' "$@" "$url")
    [[ "$got" == "$want" ]] || die "$what: $url answered $got, expected $want"
}

# ---- set-up ------------------------------------------------------------------------------

install_tools
NGINX=$(find_nginx)
[[ -n "$NGINX" ]] || die "nginx not found after installation"
command -v wrk >/dev/null || die "wrk not found after installation"
command -v curl >/dev/null || die "curl is needed"
[[ "$COMPARE" == nginx || "$COMPARE" == limits || "$COMPARE" == redis ]] || die "COMPARE must be nginx, limits or redis"
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379/}
if [[ "$COMPARE" == redis ]]; then
    [[ -z "$GATEWAY_BIN_B" ]] || die "COMPARE=redis uses the second gateway's ports: no GATEWAY_BIN_B"
    command -v redis-cli >/dev/null || die "COMPARE=redis needs redis-cli (and a Redis at $REDIS_URL)"
    redis-cli -u "$REDIS_URL" ping >/dev/null || die "no Redis answers at $REDIS_URL"
fi

KEYWARD="${GATEWAY_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/keyward}"
if [[ "$SKIP_BUILD" != 1 && -z "${GATEWAY_BIN:-}" ]]; then
    log "cargo build --release -p keyward"
    (cd "$ROOT" && cargo build --release -p keyward)
fi
[[ -x "$KEYWARD" ]] || die "$KEYWARD not built"
[[ -z "$GATEWAY_BIN_B" || -x "$GATEWAY_BIN_B" ]] || die "GATEWAY_BIN_B=$GATEWAY_BIN_B is not an executable"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/keyward-bench.XXXXXX")
chmod 755 "$TMP"
mapfile -t PORTS < <(free_ports 6)
UP_PORT=${PORTS[0]} GW_PORT=${PORTS[1]} ADMIN_PORT=${PORTS[2]} NGINX_PORT=${PORTS[3]}
GW_B_PORT=${PORTS[4]} ADMIN_B_PORT=${PORTS[5]}

case "$UPSTREAM" in
    http | h2c) ;;
    https | h2) ;;
    *) die "UPSTREAM must be http, https, h2c or h2" ;;
esac
[[ "$COMPARE" == nginx || "$UPSTREAM" == http ]] || die "UPSTREAM other than http is measured against nginx only (COMPARE=nginx)"
if [[ "$TLS" == 1 || "$UPSTREAM" == https || "$UPSTREAM" == h2 ]]; then
    command -v openssl >/dev/null || die "TLS=1 and UPSTREAM=$UPSTREAM need openssl"
    log "TLS: throw-away CA and ECDSA P-256 server certificate for 127.0.0.1 in $TMP/tls"
    mkdir -p "$TMP/tls"
    (
        cd "$TMP/tls"
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
            -subj /CN=keyward-bench-ca -keyout ca.key -out ca.pem 2>/dev/null
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
            -subj /CN=127.0.0.1 -keyout server.key -out server.csr 2>/dev/null
        printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >ext.cnf
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
            -extfile ext.cnf -out server.crt 2>/dev/null
        # PKCS#8 key for both servers.
        openssl pkcs8 -topk8 -nocrypt -in server.key -out server-pk8.key
    ) || die "openssl could not make the test certificates"
fi
if [[ "$TLS" == 1 ]]; then
    SCHEME=https
    CURL_TLS=(--cacert "$TMP/tls/ca.pem")
elif [[ "$TLS" != 0 ]]; then
    die "TLS must be 0 or 1"
fi

# Stray KEYWARD_* variables would be read as configuration overrides: start clean.
for name in $(compgen -e); do
    if [[ $name == KEYWARD_* ]]; then unset "$name"; fi
done

UP_ARGS=()
UP_SCHEME=http
if [[ "$UPSTREAM" == https || "$UPSTREAM" == h2 ]]; then
    UP_ARGS=(--tls-cert "$TMP/tls/server.crt" --tls-key "$TMP/tls/server-pk8.key")
    UP_SCHEME=https
fi
log "upstream: keyward cat-facts on $UP_SCHEME://127.0.0.1:$UP_PORT (UPSTREAM=$UPSTREAM)"
"${UPSTREAM_BIN:-$KEYWARD}" cat-facts --listen "127.0.0.1:$UP_PORT" "${UP_ARGS[@]}" >"$TMP/upstream.log" 2>&1 &
PIDS+=($!)
CURL_TLS_SAVED=("${CURL_TLS[@]}")
CURL_TLS=()
[[ "$UP_SCHEME" == http ]] || CURL_TLS=(--cacert "$TMP/tls/ca.pem")
wait_http "$UP_SCHEME://127.0.0.1:$UP_PORT/fact" 200 "upstream" "${PIDS[-1]}"
CURL_TLS=("${CURL_TLS_SAVED[@]}")
# The route's upstream settings (keyward) and the location's upstream half (nginx).
case "$UPSTREAM" in
    http)
        KW_UPSTREAM='upstream = "http://127.0.0.1:'$UP_PORT'"'
        NGINX_PROXY='proxy_pass http://catfacts; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_set_header X-Api-Key "";'
        ;;
    https)
        KW_UPSTREAM='upstream = "https://127.0.0.1:'$UP_PORT'"
protocol = "http1"
ca_file = "'$TMP/tls/ca.pem'"
server_name = "localhost"'
        NGINX_PROXY="proxy_pass https://catfacts; proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_set_header X-Api-Key \"\"; proxy_ssl_verify on; proxy_ssl_trusted_certificate $TMP/tls/ca.pem; proxy_ssl_name localhost; proxy_ssl_server_name on; proxy_ssl_session_reuse on;"
        ;;
    h2c)
        KW_UPSTREAM='upstream = "http://127.0.0.1:'$UP_PORT'"
protocol = "h2c"'
        NGINX_PROXY='grpc_pass grpc://catfacts; grpc_set_header X-Api-Key "";'
        ;;
    h2)
        KW_UPSTREAM='upstream = "https://127.0.0.1:'$UP_PORT'"
protocol = "h2"
ca_file = "'$TMP/tls/ca.pem'"
server_name = "localhost"'
        NGINX_PROXY="grpc_pass grpcs://catfacts; grpc_set_header X-Api-Key \"\"; grpc_ssl_verify on; grpc_ssl_trusted_certificate $TMP/tls/ca.pem; grpc_ssl_name localhost; grpc_ssl_server_name on; grpc_ssl_session_reuse on;"
        ;;
esac

write_config() { # FILE GATEWAY_PORT ADMIN_PORT
    cat >"$1" <<EOF
[store]
url = "$TMP/keyward.db"

[keys]
prefix = "kw"

[server]
worker_threads = $WORKERS

[gateway]
listen = "127.0.0.1:$2"
credential_headers = ["x-api-key"]
invalid_credential_status = 403
connect_timeout = "2s"
upstream_timeout = "30s"
$(if [[ "$TLS" == 1 ]]; then printf 'tls_cert_file = "%s"\ntls_key_file = "%s"\n' "$TMP/tls/server.crt" "$TMP/tls/server-pk8.key"; fi)

[admin]
listen = "127.0.0.1:$3"

[[routes]]
name = "fact"
path_prefix = "$BENCH_PATH"
methods = $METHODS
$KW_UPSTREAM
scopes = ["facts:read"]
EOF
}
write_config "$TMP/keyward.toml" "$GW_PORT" "$ADMIN_PORT"
KEYWARD_PEPPER=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
KEYWARD_ADMIN_TOKEN=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')
export KEYWARD_ADMIN_TOKEN KEYWARD_ADMIN_URL="http://127.0.0.1:$ADMIN_PORT"

log "keyward serve: gateway 127.0.0.1:$GW_PORT, admin 127.0.0.1:$ADMIN_PORT, $WORKERS worker thread(s)"
KEYWARD_PEPPER=$KEYWARD_PEPPER KEYWARD_LOG=$KW_LOG \
    "$KEYWARD" serve --config "$TMP/keyward.toml" >"$TMP/keyward.log" 2>&1 &
PIDS+=($!)
KEYWARD_PID=$!
wait_http "http://127.0.0.1:$ADMIN_PORT/healthz" 200 "keyward admin API" "${PIDS[-1]}"

json_key() { python3 -c 'import json, sys; print(json.load(sys.stdin)["key"])'; }
"$KEYWARD" app create bench --json >/dev/null
KEY=$("$KEYWARD" key create --app bench --scope facts:read --json | json_key)
[[ "$KEY" =~ ^[A-Za-z0-9_]+$ ]] || die "unexpected key format from keyward key create"

LKEY=""
if [[ "$COMPARE" == limits || "$COMPARE" == redis ]]; then
    # Limits on, never tripped: key rate + key quota + IP allowlist, and an app rate.
    "$KEYWARD" app create limited --json >/dev/null
    "$KEYWARD" app update limited --rate 10000000/s --json >/dev/null
    LKEY=$("$KEYWARD" key create --app limited --scope facts:read --rate 10000000/s \
        --quota 1000000000/day --ip 127.0.0.1 --json | json_key)
    [[ "$LKEY" =~ ^[A-Za-z0-9_]+$ ]] || die "unexpected key format from keyward key create"
fi

if [[ -n "$GATEWAY_BIN_B" ]]; then
    write_config "$TMP/keyward-b.toml" "$GW_B_PORT" "$ADMIN_B_PORT"
    log "keyward_b ($GATEWAY_BIN_B) serve: gateway 127.0.0.1:$GW_B_PORT, same store, $WORKERS worker thread(s)"
    KEYWARD_PEPPER=$KEYWARD_PEPPER KEYWARD_LOG=$KW_LOG \
        "$GATEWAY_BIN_B" serve --config "$TMP/keyward-b.toml" >"$TMP/keyward-b.log" 2>&1 &
    PIDS+=($!)
    KEYWARD_B_PID=$!
    wait_http "http://127.0.0.1:$ADMIN_B_PORT/healthz" 200 "keyward_b admin API" "${PIDS[-1]}"
fi

if [[ "$COMPARE" == redis ]]; then
    REDIS_PREFIX="bench-$$-$RANDOM"
    write_config "$TMP/keyward-redis.toml" "$GW_B_PORT" "$ADMIN_B_PORT"
    printf '\n[redis]\nurl = "%s"\nprefix = "%s"\n' "$REDIS_URL" "$REDIS_PREFIX" >>"$TMP/keyward-redis.toml"
    log "keyward with [redis] ($REDIS_URL, prefix $REDIS_PREFIX): gateway 127.0.0.1:$GW_B_PORT, same store"
    KEYWARD_PEPPER=$KEYWARD_PEPPER KEYWARD_LOG=$KW_LOG \
        "$KEYWARD" serve --config "$TMP/keyward-redis.toml" >"$TMP/keyward-redis.log" 2>&1 &
    PIDS+=($!)
    KEYWARD_R_PID=$!
    wait_http "http://127.0.0.1:$ADMIN_B_PORT/healthz" 200 "keyward (redis) admin API" "${PIDS[-1]}"
fi

if [[ "$COMPARE" == nginx ]]; then
    log "nginx: static-key reverse proxy on 127.0.0.1:$NGINX_PORT, worker_processes $WORKERS"
    mkdir -p "$TMP/nginx"
    sed -e "s|@WORKERS@|$WORKERS|g" -e "s|@PREFIX@|$TMP/nginx|g" -e "s|@PORT@|$NGINX_PORT|g" \
        -e "s|@UPSTREAM_PORT@|$UP_PORT|g" -e "s|@KEY@|$KEY|g" -e "s|@PROXY_DIRECTIVES@|$NGINX_PROXY|g" \
        -e "s|@LISTEN_SSL@|$([[ "$TLS" == 1 ]] && echo ' ssl')|g" \
        -e "s|@TLS_DIRECTIVES@|$([[ "$TLS" == 1 ]] && echo "ssl_certificate $TMP/tls/server.crt; ssl_certificate_key $TMP/tls/server-pk8.key;")|g" \
        "$BENCH_DIR/nginx-static-key.conf.template" >"$TMP/nginx/nginx.conf"
    "$NGINX" -p "$TMP/nginx" -e "$TMP/nginx/error.log" -c "$TMP/nginx/nginx.conf" -t -q ||
        die "nginx rejected the generated configuration"
    "$NGINX" -p "$TMP/nginx" -e "$TMP/nginx/error.log" -c "$TMP/nginx/nginx.conf" \
        -g 'daemon off;' >"$TMP/nginx/stdout.log" 2>&1 &
    PIDS+=($!)
    NGINX_PID=$!
    wait_http "$SCHEME://127.0.0.1:$NGINX_PORT$BENCH_PATH" 401 "nginx" "${PIDS[-1]}"
fi

# All answer the same way: 200 with the key, 401 without, 403 with a wrong one.
WRONG="kw_live_$(printf 'x%.0s' $(seq 49))"
CHECK=("keyward $SCHEME://127.0.0.1:$GW_PORT")
[[ -z "$GATEWAY_BIN_B" ]] || CHECK+=("keyward_b $SCHEME://127.0.0.1:$GW_B_PORT")
[[ "$COMPARE" != nginx ]] || CHECK+=("nginx $SCHEME://127.0.0.1:$NGINX_PORT")
for target in "${CHECK[@]}"; do
    read -r name base <<<"$target"
    expect_status "$name" 200 "$base$BENCH_PATH" -H "x-api-key: $KEY"
    expect_status "$name" 401 "$base$BENCH_PATH"
    expect_status "$name" 403 "$base$BENCH_PATH" -H "x-api-key: $WRONG"
done
if [[ "$COMPARE" == limits ]]; then
    expect_status "keyward (limited key)" 200 "$SCHEME://127.0.0.1:$GW_PORT$BENCH_PATH" -H "x-api-key: $LKEY"
    # The limits are really applied to the limited key, and only to it.
    hdrs=$(curl -s "${CURL_TLS[@]}" -o /dev/null -D - -H "x-api-key: $LKEY" "$SCHEME://127.0.0.1:$GW_PORT$BENCH_PATH")
    [[ "${hdrs,,}" == *ratelimit-policy:* ]] || die "the limited key's response carries no RateLimit-Policy"
    hdrs=$(curl -s "${CURL_TLS[@]}" -o /dev/null -D - -H "x-api-key: $KEY" "$SCHEME://127.0.0.1:$GW_PORT$BENCH_PATH")
    [[ "${hdrs,,}" != *ratelimit-policy:* ]] || die "the unlimited key's response carries a RateLimit-Policy"
fi
if [[ "$COMPARE" == redis ]]; then
    hdrs=$(curl -s "${CURL_TLS[@]}" -o /dev/null -D - -H "x-api-key: $LKEY" "$SCHEME://127.0.0.1:$GW_B_PORT$BENCH_PATH")
    [[ "${hdrs,,}" == *ratelimit-policy:* ]] || die "the redis gateway's response carries no RateLimit-Policy"
    # The limits really live in Redis.
    [[ -n "$(redis-cli -u "$REDIS_URL" --scan --pattern "kw:{$REDIS_PREFIX}:*" | head -1)" ]] ||
        die "no limit state under kw:{$REDIS_PREFIX}: in Redis"
fi

# ---- measurement -------------------------------------------------------------------------

declare -A URL=(
    [keyward]="$SCHEME://127.0.0.1:$GW_PORT$BENCH_PATH"
    [keyward_b]="$SCHEME://127.0.0.1:$GW_B_PORT$BENCH_PATH"
    [nginx]="$SCHEME://127.0.0.1:$NGINX_PORT$BENCH_PATH"
    [unlimited]="$SCHEME://127.0.0.1:$GW_PORT$BENCH_PATH"
    [limited]="$SCHEME://127.0.0.1:$GW_PORT$BENCH_PATH"
    [local]="$SCHEME://127.0.0.1:$GW_PORT$BENCH_PATH"
    [redis]="$SCHEME://127.0.0.1:$GW_B_PORT$BENCH_PATH"
)
declare -A KEY_OF=([keyward]="$KEY" [keyward_b]="$KEY" [nginx]="$KEY" [unlimited]="$KEY" [limited]="$LKEY"
    [local]="$LKEY" [redis]="$LKEY")
if [[ "$COMPARE" == limits ]]; then
    TARGETS=(unlimited limited)
elif [[ "$COMPARE" == redis ]]; then
    TARGETS=(local redis)
else
    TARGETS=(keyward)
    [[ -z "$GATEWAY_BIN_B" ]] || TARGETS+=(keyward_b)
    TARGETS+=(nginx)
fi
declare -A PID_OF=([keyward]="$KEYWARD_PID" [keyward_b]="${KEYWARD_B_PID:-}" [nginx]="${NGINX_PID:-}"
    [unlimited]="$KEYWARD_PID" [limited]="$KEYWARD_PID" [local]="$KEYWARD_PID" [redis]="${KEYWARD_R_PID:-}")
CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() { # PID -> "utime stime" of the process and its children processes (nginx workers)
    local user=0 sys=0 p f
    for p in "$1" $(pgrep -P "$1" || true); do
        # Fields 14 and 15 of /proc/PID/stat, counted after the ")" that ends the command name.
        f=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null) || continue
        read -r -a fs <<<"$f"
        user=$((user + fs[11]))
        sys=$((sys + fs[12]))
    done
    echo "$user $sys"
}
run_wrk() { # NAME DURATION OUTFILE
    local before after
    read -r -a before <<<"$(cpu_ticks "${PID_OF[$1]}")"
    wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"$2" --latency "${WRK_SCRIPT[@]}" -H "x-api-key: ${KEY_OF[$1]}" "${URL[$1]}" >"$3"
    read -r -a after <<<"$(cpu_ticks "${PID_OF[$1]}")"
    # CPU seconds the proxy under test used during the run, user and system apart (read by
    # wrk_report.py).
    echo "Proxy CPU user seconds: $(python3 -c "print((${after[0]} - ${before[0]}) / $CLK_TCK)")" >>"$3"
    echo "Proxy CPU system seconds: $(python3 -c "print((${after[1]} - ${before[1]}) / $CLK_TCK)")" >>"$3"
}

mkdir -p "$TMP/results"
log "wrk -t$WRK_THREADS -c$CONNECTIONS -d$DURATION --latency; $ROUNDS round(s), order ${TARGETS[*]}"
for name in "${TARGETS[@]}"; do
    log "warm-up $name ($WARMUP)"
    run_wrk "$name" "$WARMUP" "$TMP/results/warmup-$name.out"
done
for round in $(seq "$ROUNDS"); do
    for name in "${TARGETS[@]}"; do
        log "round $round/$ROUNDS: $name"
        run_wrk "$name" "$DURATION" "$TMP/results/$name-$round.txt"
    done
done

for pid in "${PIDS[@]}"; do
    kill -0 "$pid" 2>/dev/null || die "a server process ($pid) died during the run"
done

echo
if [[ "$COMPARE" == redis ]]; then
    echo "keyward, the limited key with Redis limits ($REDIS_URL) vs local limits: $WORKERS worker(s) each, wrk -t$WRK_THREADS -c$CONNECTIONS -d$DURATION, $(nproc) CPU(s), $(date -u +%Y-%m-%dT%H:%M:%SZ)"
elif [[ "$COMPARE" == limits ]]; then
    echo "keyward, limited vs unlimited key on one gateway: $WORKERS worker(s), wrk -t$WRK_THREADS -c$CONNECTIONS -d$DURATION, $(nproc) CPU(s), $(date -u +%Y-%m-%dT%H:%M:%SZ)"
else
    echo "keyward vs nginx static key$([[ "$TLS" == 1 ]] && echo ', both terminating TLS (ECDSA P-256 certificate)'), upstream $UPSTREAM$([[ "$POST" == 1 ]] && echo ', 1 KiB POST'): $WORKERS worker(s) each, keyward log level $KW_LOG, wrk -t$WRK_THREADS -c$CONNECTIONS -d$DURATION, $(nproc) CPU(s), $(date -u +%Y-%m-%dT%H:%M:%SZ)"
fi
if REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null); then
    [[ -z "$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null)" ]] || REV="$REV+dirty"
    echo "keyward source: commit $REV (of $ROOT; with GATEWAY_BIN the binary may come from elsewhere)"
fi
echo "keyward binary: $KEYWARD${GATEWAY_BIN_B:+; keyward_b binary: $GATEWAY_BIN_B}; upstream binary: ${UPSTREAM_BIN:-$KEYWARD}"
echo
report() { # A B [RPS_GOAL]
    python3 "$BENCH_DIR/wrk_report.py" ${3:+--rps-goal "$3"} "$1" "$2" "$TMP"/results/{"$1","$2"}-*.txt |
        tee -a "$TMP/results/report.md"
    return "${PIPESTATUS[0]}"
}
set +e
report_rc=0
if [[ "$COMPARE" == limits ]]; then
    report limited unlimited 0.90 || report_rc=$?
elif [[ "$COMPARE" == redis ]]; then
    report redis local || report_rc=$?
else
    report keyward nginx || report_rc=$?
    if [[ -n "$GATEWAY_BIN_B" ]]; then
        echo
        report keyward_b nginx || report_rc=$?
        echo
        report keyward keyward_b || report_rc=$?
    fi
fi
set -e
if [[ -n "${RESULTS_DIR:-}" ]]; then
    mkdir -p "$RESULTS_DIR"
    cp "$TMP"/results/* "$RESULTS_DIR"/
    log "raw results in $RESULTS_DIR"
fi
exit "$report_rc"
