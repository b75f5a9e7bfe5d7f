#!/usr/bin/env bash
# Load test of the token service (issue 5):
#   1. tokens/s of POST /oauth/token, grant_type=client_credentials, client_secret_basic,
#      EdDSA signing key (the default), at several connection counts (goal >= 20,000/s);
#   2. the gateway on one route (`/fact`, tokens = true) measured A B A B with
#      `Authorization: Bearer <access token>` (`jwt`) against `x-api-key: <key>` (`key`),
#      same connections, duration and workers (goal: jwt RPS >= 0.90 x key RPS).
#
#   bench/tokens.sh
#   GATEWAY_BIN=/path/to/keyward ROUNDS=5 bench/tokens.sh
#
# Knobs (environment):
#   WORKERS            [server] worker_threads of keyward serve (default 1, as bench/gateway.sh)
#   ROUNDS             rounds per measurement (default 3)
#   DURATION           wrk duration per run (default 10s)
#   TOKEN_CONNECTIONS  connection counts for the token endpoint (default "1 8 32 64")
#   CONNECTIONS        connections for the jwt/key A B runs (default 32)
#   WRK_THREADS        wrk threads (default 1)
#   WARMUP             warm-up per target (default 3s)
#   GATEWAY_BIN        keyward binary under test (no build); else target/release/keyward is built
#   UPSTREAM_BIN       keyward binary that runs the upstream (cat-facts)
#   SKIP_BUILD KEEP_TMP RESULTS_DIR   as in bench/gateway.sh
#   PARTS              "tokens gateway" (default) or one of them
#
# Checks before measuring: a token is issued (200) and decodes to an EdDSA `at+jwt` whose
# signature verifies against the JWKS (python3 `cryptography` when installed), a wrong secret
# is refused (401), and /fact answers 200 with the key, 200 with the token, 401 without.
# Reports refuse runs with non-2xx responses or socket errors. Loopback only; every process
# started here is stopped on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR="$ROOT/bench"
WORKERS=${WORKERS:-1}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
TOKEN_CONNECTIONS=${TOKEN_CONNECTIONS:-1 8 32 64}
CONNECTIONS=${CONNECTIONS:-32}
WRK_THREADS=${WRK_THREADS:-1}
WARMUP=${WARMUP:-3s}
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP_TMP=${KEEP_TMP:-0}
PARTS=${PARTS:-tokens gateway}

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
        if kill -0 "$pid" 2>/dev/null; then
            log "process $pid did not stop, killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    done
    if [[ $rc -ne 0 && -n "$TMP" ]]; then
        for f in "$TMP"/upstream.log "$TMP"/keyward.log; do
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

command -v wrk >/dev/null || die "wrk is needed (apt-get install wrk)"
command -v curl >/dev/null || die "curl is needed"

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
        got=$(curl -s -o /dev/null -w '%{http_code}' "$url" || true)
        if [[ "$got" == "$want" ]]; then return 0; fi
        sleep 0.1
    done
    die "$what not ready at $url (last status ${got:-none}, wanted $want)"
}

expect_status() { # WHAT WANT URL [curl args...]
    local what=$1 want=$2 url=$3 got
    shift 3
    got=$(curl -s -o /dev/null -w '%{http_code}' "$@" "$url")
    [[ "$got" == "$want" ]] || die "$what: $url answered $got, expected $want"
}

# ---- set-up ------------------------------------------------------------------------------

KEYWARD="${GATEWAY_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/keyward}"
if [[ "$SKIP_BUILD" != 1 && -z "${GATEWAY_BIN:-}" ]]; then
    log "cargo build --release -p keyward"
    (cd "$ROOT" && cargo build --release -p keyward)
fi
[[ -x "$KEYWARD" ]] || die "$KEYWARD not built"
"$KEYWARD" client --help >/dev/null 2>&1 || die "$KEYWARD has no 'client' command: an older build?"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/keyward-tokens.XXXXXX")
mapfile -t PORTS < <(free_ports 3)
UP_PORT=${PORTS[0]} GW_PORT=${PORTS[1]} ADMIN_PORT=${PORTS[2]}
GW="http://127.0.0.1:$GW_PORT"

for name in $(compgen -e); do
    if [[ $name == KEYWARD_* ]]; then unset "$name"; fi
done

log "upstream: keyward cat-facts on 127.0.0.1:$UP_PORT"
"${UPSTREAM_BIN:-$KEYWARD}" cat-facts --listen "127.0.0.1:$UP_PORT" >"$TMP/upstream.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$UP_PORT/fact" 200 "upstream" "${PIDS[-1]}"

cat >"$TMP/keyward.toml" <<EOF
[store]
url = "$TMP/keyward.db"

[keys]
prefix = "kw"

[server]
worker_threads = $WORKERS

[gateway]
listen = "127.0.0.1:$GW_PORT"
credential_headers = ["x-api-key"]
invalid_credential_status = 403
connect_timeout = "2s"
upstream_timeout = "30s"

[admin]
listen = "127.0.0.1:$ADMIN_PORT"

[oauth]
enabled = true
signing_alg = "EdDSA"

[[routes]]
name = "fact"
path_prefix = "/fact"
methods = ["GET"]
upstream = "http://127.0.0.1:$UP_PORT"
scopes = ["facts:read"]
tokens = true
EOF
rand_hex() { python3 -c 'import secrets; print(secrets.token_hex(32))'; }
KEYWARD_PEPPER=$(rand_hex)
KEYWARD_KEK=$(rand_hex)
KEYWARD_ADMIN_TOKEN=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')
export KEYWARD_ADMIN_TOKEN KEYWARD_ADMIN_URL="http://127.0.0.1:$ADMIN_PORT"

log "keyward serve: gateway $GW, admin 127.0.0.1:$ADMIN_PORT, $WORKERS worker thread(s), token service on"
KEYWARD_PEPPER=$KEYWARD_PEPPER KEYWARD_KEK=$KEYWARD_KEK KEYWARD_LOG=warn \
    "$KEYWARD" serve --config "$TMP/keyward.toml" >"$TMP/keyward.log" 2>&1 &
PIDS+=($!)
KEYWARD_PID=$!
wait_http "http://127.0.0.1:$ADMIN_PORT/healthz" 200 "keyward admin API" "$KEYWARD_PID"

json_field() { python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
"$KEYWARD" app create bench --json >/dev/null
KEY=$("$KEYWARD" key create --app bench --scope facts:read --json | json_field key)
[[ "$KEY" =~ ^[A-Za-z0-9_]+$ ]] || die "unexpected key format from keyward key create"
# Client for the token-endpoint load (default lifetime, 5 min) and one whose token lives 24 h
# for the gateway runs (it must not expire mid-run).
"$KEYWARD" client create --app bench --scope facts:read --json >"$TMP/client.json"
"$KEYWARD" client create --app bench --scope facts:read --token-ttl 24h --json >"$TMP/client-24h.json"
basic_of() { python3 -c 'import base64, json, sys; c = json.load(open(sys.argv[1])); print(base64.b64encode((c["client_id"] + ":" + c["client_secret"]).encode()).decode())' "$1"; }
KW_BASIC=$(basic_of "$TMP/client.json")
BASIC_24H=$(basic_of "$TMP/client-24h.json")
export KW_BASIC

token_req() { # BASIC -> response body; fails unless 200
    curl -sf -X POST -H "Authorization: Basic $1" \
        -H 'content-type: application/x-www-form-urlencoded' --data 'grant_type=client_credentials' \
        "$GW/oauth/token"
}
# The first signing key may be published before it signs: wait until a token is issued.
for _ in $(seq 100); do
    token_req "$KW_BASIC" >"$TMP/token.json" 2>/dev/null && break
    sleep 0.1
done
[[ -s "$TMP/token.json" ]] || die "POST /oauth/token did not answer 200"
token_req "$BASIC_24H" >"$TMP/token-24h.json" || die "no token for the 24h client"
TOKEN=$(json_field access_token <"$TMP/token-24h.json")
curl -sf "$GW/.well-known/jwks.json" >"$TMP/jwks.json" || die "no JWKS"

# Spot check: one token decodes to an EdDSA at+jwt for the client, signature valid.
python3 - "$TMP/token.json" "$TMP/jwks.json" "$TMP/client.json" <<'EOF' >&2
import base64, json, sys, time
tok = json.load(open(sys.argv[1]))
jwks = json.load(open(sys.argv[2]))
client = json.load(open(sys.argv[3]))
def b64(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
h, p, s = tok["access_token"].split(".")
header, claims = json.loads(b64(h)), json.loads(b64(p))
assert tok["token_type"] == "Bearer", tok
assert header["alg"] == "EdDSA" and header["typ"].lower() == "at+jwt", header
assert claims["client_id"] == client["client_id"] and claims["exp"] > time.time(), claims
assert "facts:read" in claims.get("scope", "").split(), claims
jwk = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
try:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
except ImportError:
    print("[bench] token decodes (signature not checked: no python3 cryptography)")
else:
    Ed25519PublicKey.from_public_bytes(b64(jwk["x"])).verify(b64(s), f"{h}.{p}".encode())
    print("[bench] token decodes and its EdDSA signature verifies against the JWKS")
print(f"[bench] header {json.dumps(header)}")
print(f"[bench] claims {json.dumps(claims)}")
print(f"[bench] token {len(tok['access_token'])} bytes, expires_in {tok['expires_in']}")
EOF

WRONG_BASIC=$(python3 -c 'import base64, json, sys; c = json.load(open(sys.argv[1])); print(base64.b64encode((c["client_id"] + ":wrong").encode()).decode())' "$TMP/client.json")
expect_status "token endpoint, wrong secret" 401 "$GW/oauth/token" -X POST -H "Authorization: Basic $WRONG_BASIC" \
    -H 'content-type: application/x-www-form-urlencoded' --data 'grant_type=client_credentials'
expect_status "gateway, key" 200 "$GW/fact" -H "x-api-key: $KEY"
expect_status "gateway, token" 200 "$GW/fact" -H "Authorization: Bearer $TOKEN"
expect_status "gateway, nothing" 401 "$GW/fact"
expect_status "gateway, forged token" 401 "$GW/fact" -H "Authorization: Bearer ${TOKEN%?????}AAAAA"

# ---- measurement -------------------------------------------------------------------------

CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() { # PID -> "utime stime" (all threads, incl. SQLite workers)
    local f
    f=$(sed 's/.*) //' "/proc/$1/stat")
    read -r -a fs <<<"$f"
    echo "${fs[11]} ${fs[12]}"
}
run_wrk() { # OUTFILE DURATION CONNECTIONS wrk-args...
    local out=$1 dur=$2 conns=$3 before after
    shift 3
    read -r -a before <<<"$(cpu_ticks "$KEYWARD_PID")"
    wrk -t"$WRK_THREADS" -c"$conns" -d"$dur" --latency "$@" >"$out"
    read -r -a after <<<"$(cpu_ticks "$KEYWARD_PID")"
    # User and system time apart, as bench/gateway.sh writes them (read by wrk_report.py).
    echo "Proxy CPU user seconds: $(python3 -c "print((${after[0]} - ${before[0]}) / $CLK_TCK)")" >>"$out"
    echo "Proxy CPU system seconds: $(python3 -c "print((${after[1]} - ${before[1]}) / $CLK_TCK)")" >>"$out"
}
mkdir -p "$TMP/results"
WRK_TOKEN=(-s "$BENCH_DIR/token-basic.lua" "$GW/oauth/token")
WRK_JWT=(-H "Authorization: Bearer $TOKEN" "$GW/fact")
WRK_KEY=(-H "x-api-key: $KEY" "$GW/fact")

if [[ " $PARTS " == *" tokens "* ]]; then
    log "token endpoint: wrk -t$WRK_THREADS -c{$TOKEN_CONNECTIONS} -d$DURATION, $ROUNDS round(s)"
    run_wrk "$TMP/results/warmup-tokens.out" "$WARMUP" 8 "${WRK_TOKEN[@]}"
    for round in $(seq "$ROUNDS"); do
        for c in $TOKEN_CONNECTIONS; do
            log "round $round/$ROUNDS: tokens, $c connection(s)"
            run_wrk "$TMP/results/tokens-c$c-$round.txt" "$DURATION" "$c" "${WRK_TOKEN[@]}"
        done
    done
fi
if [[ " $PARTS " == *" gateway "* ]]; then
    log "gateway: wrk -t$WRK_THREADS -c$CONNECTIONS -d$DURATION, $ROUNDS round(s), order jwt key"
    run_wrk "$TMP/results/warmup-jwt.out" "$WARMUP" "$CONNECTIONS" "${WRK_JWT[@]}"
    run_wrk "$TMP/results/warmup-key.out" "$WARMUP" "$CONNECTIONS" "${WRK_KEY[@]}"
    for round in $(seq "$ROUNDS"); do
        log "round $round/$ROUNDS: jwt"
        run_wrk "$TMP/results/jwt-$round.txt" "$DURATION" "$CONNECTIONS" "${WRK_JWT[@]}"
        log "round $round/$ROUNDS: key"
        run_wrk "$TMP/results/key-$round.txt" "$DURATION" "$CONNECTIONS" "${WRK_KEY[@]}"
    done
fi

for pid in "${PIDS[@]}"; do
    kill -0 "$pid" 2>/dev/null || die "a server process ($pid) died during the run"
done
# The token still works after the runs (it did not expire or get refused mid-run).
expect_status "gateway, token after the runs" 200 "$GW/fact" -H "Authorization: Bearer $TOKEN"

echo
echo "keyward token service: $WORKERS worker thread(s), wrk -t$WRK_THREADS -d$DURATION, $(nproc) CPU(s), $(date -u +%Y-%m-%dT%H:%M:%SZ)"
if REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null); then
    [[ -z "$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null)" ]] || REV="$REV+dirty"
    echo "keyward source: commit $REV (of $ROOT; with GATEWAY_BIN the binary may come from elsewhere)"
fi
echo "keyward binary: $KEYWARD; upstream binary: ${UPSTREAM_BIN:-$KEYWARD}"
echo
set +e
report_rc=0
if [[ " $PARTS " == *" tokens "* ]]; then
    echo "POST /oauth/token, client_credentials, client_secret_basic, EdDSA:"
    echo
    python3 "$BENCH_DIR/tokens_report.py" --goal 20000 "$TMP"/results/tokens-c*-*.txt | tee -a "$TMP/results/report.md"
    [[ ${PIPESTATUS[0]} == 0 ]] || report_rc=2
    echo
fi
if [[ " $PARTS " == *" gateway "* ]]; then
    echo "GET /fact, Bearer access token (jwt) vs x-api-key (key), -c$CONNECTIONS:"
    echo
    python3 "$BENCH_DIR/wrk_report.py" --rps-goal 0.90 jwt key "$TMP"/results/{jwt,key}-*.txt | tee -a "$TMP/results/report.md"
    [[ ${PIPESTATUS[0]} == 0 ]] || report_rc=2
fi
set -e
if [[ -n "${RESULTS_DIR:-}" ]]; then
    mkdir -p "$RESULTS_DIR"
    cp "$TMP"/results/* "$RESULTS_DIR"/
    log "raw results in $RESULTS_DIR"
fi
exit "$report_rc"
