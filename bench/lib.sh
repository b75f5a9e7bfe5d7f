# Shared by the bench scripts that boot their own keyward (bench/soak.sh, bench/dpop.sh, bench/cluster6.sh):
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"; bench_init TAG
# gives log/die, a cleanup trap that stops every pid in PIDS (and runs ON_EXIT, a command string,
# if set), a fresh $TMP, no inherited KEYWARD_* variables, free_ports N, wait_http URL PID,
# start_upstream PORT, bench_config (the benches' keyward.toml), start_keyward CONFIG (sets
# KEYWARD_PID, exports a fresh KEYWARD_ADMIN_TOKEN) and cpu_ticks PID.

bench_init() {
    BENCH_TAG=$1
    PIDS=()
    ON_EXIT=""
    TMP=$(mktemp -d "${TMPDIR:-/tmp}/keyward-$BENCH_TAG.XXXXXX")
    trap bench_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    for name in $(compgen -e); do [[ $name != KEYWARD_* ]] || unset "$name"; done
}

log() { printf '[%s] %s\n' "$BENCH_TAG" "$*" >&2; }
die() { log "error: $*"; exit 1; }

bench_cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [[ $rc -ne 0 && -n "$TMP" ]]; then tail -n 20 "$TMP"/*.log >&2 || true; fi
    [[ -z "$ON_EXIT" ]] || eval "$ON_EXIT" || true
    [[ -z "$TMP" ]] || rm -rf "$TMP"
    exit "$rc"
}

free_ports() { # N: prints N free loopback ports, one a line
    python3 -c '
import socket, sys
s = [socket.socket() for _ in range(int(sys.argv[1]))]
for x in s: x.bind(("127.0.0.1", 0))
for x in s: print(x.getsockname()[1])' "$1"
}

wait_http() { # URL PID [CURL ARGS...]
    local url=$1 pid=$2
    shift 2
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || die "process for $url exited"
        [[ "$(curl -s "$@" -o /dev/null -w '%{http_code}' "$url" || true)" == 200 ]] && return 0
        sleep 0.1
    done
    die "$url not ready"
}

start_upstream() { # PORT: `keyward cat-facts` as the upstream
    "$KEYWARD" cat-facts --listen "127.0.0.1:$1" >"$TMP/upstream.log" 2>&1 &
    PIDS+=($!)
    wait_http "http://127.0.0.1:$1/fact" "$!"
}

bench_config() { # FILE STORE_URL WORKERS ISSUER [GATEWAY_TOML] [MORE_TOML]: one gateway on
    # $GW_PORT, admin on $ADMIN_PORT, OAuth on, and the route /fact (API keys and tokens) to the
    # upstream on $UP_PORT. GATEWAY_TOML adds lines to [gateway] (TLS), MORE_TOML sections ([redis]).
    cat >"$1" <<CONF
[store]
url = "$2"

[keys]
prefix = "kw"

[server]
worker_threads = $3

[gateway]
listen = "127.0.0.1:$GW_PORT"
credential_headers = ["x-api-key"]
connect_timeout = "2s"
upstream_timeout = "30s"
${5:-}

[admin]
listen = "127.0.0.1:$ADMIN_PORT"

[oauth]
enabled = true
signing_alg = "EdDSA"
issuer = "$4"

${6:-}

[[routes]]
name = "fact"
path_prefix = "/fact"
methods = ["GET"]
upstream = "http://127.0.0.1:$UP_PORT"
scopes = ["facts:read"]
tokens = true
CONF
}

start_keyward() { # CONFIG ADMIN_PORT: serve with a fresh pepper, KEK and admin token
    local rand_hex='import secrets; print(secrets.token_hex(32))'
    KEYWARD_ADMIN_TOKEN=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')
    export KEYWARD_ADMIN_TOKEN KEYWARD_ADMIN_URL="http://127.0.0.1:$2"
    KEYWARD_PEPPER=$(python3 -c "$rand_hex") KEYWARD_KEK=$(python3 -c "$rand_hex") KEYWARD_LOG=warn \
        "$KEYWARD" serve --config "$1" >"$TMP/keyward.log" 2>&1 &
    KEYWARD_PID=$!
    PIDS+=("$KEYWARD_PID")
    wait_http "http://127.0.0.1:$2/healthz" "$KEYWARD_PID"
}

cpu_ticks() { # PID: user + system clock ticks so far
    local f fs
    f=$(sed 's/.*) //' "/proc/$1/stat")
    read -r -a fs <<<"$f"
    echo $((fs[11] + fs[12]))
}
