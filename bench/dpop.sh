#!/usr/bin/env bash
# Load test (issue 6, point 7): a DPoP-bound token route vs the same route with a plain Bearer
# token, one keyward gateway, measured in turn A B A B ... with the closed-loop load generator
# crates/keyward/examples/dpop_load.rs (wrk cannot make a fresh DPoP proof per request).
#
#   bench/dpop.sh
#   WORKERS=1 ROUNDS=3 DURATION=10 CONNECTIONS=32 bench/dpop.sh
#
# Modes measured: bearer (Bearer token), dpop (DPoP token + a fresh ES256 proof per request),
# bearer-proofs (Bearer request, but the client signs a proof per request and throws it away:
# the client-side cost of proofs, on the same cores, without the server's cost).
#   PROOF_ALG=EdDSA bench/dpop.sh    # Ed25519 proofs instead of ES256 (the default)
#
#   MTLS=1 bench/dpop.sh
# instead runs the gateway with TLS and client certificates (tls_client_auth = "optional"; a
# throw-away CA, server and client certificate made with openssl) and measures, always as Bearer
# over connections that present the client certificate: `bound` (token requested with the client
# certificate: cnf.x5t#S256, checked per request) vs `unbound` (token requested over TLS without a
# client certificate). MODES defaults to "unbound bound" then.
# The keyward process's CPU seconds per run are recorded: CPU per request is the fairer
# server-side comparison on a 2-core machine where the client shares the CPUs.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORKERS=${WORKERS:-1}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-32}
MTLS=${MTLS:-0}
PROOF_ALG=${PROOF_ALG:-ES256}
if [[ "$MTLS" == 1 ]]; then MODES=${MODES:-"unbound bound"}; else MODES=${MODES:-"bearer dpop bearer-proofs"}; fi
SKIP_BUILD=${SKIP_BUILD:-0}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
KEYWARD=$TARGET/release/keyward
LOAD=$TARGET/release/examples/dpop_load

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
bench_init dpop-bench

if [[ "$SKIP_BUILD" != 1 ]]; then
    (cd "$ROOT" && cargo build --release -p keyward --bin keyward --example dpop_load)
fi
[[ -x "$KEYWARD" && -x "$LOAD" ]] || die "build keyward and the dpop_load example first"

mapfile -t PORTS < <(free_ports 3)
UP_PORT=${PORTS[0]} GW_PORT=${PORTS[1]} ADMIN_PORT=${PORTS[2]}
GW=http://127.0.0.1:$GW_PORT
TLS_TOML=""
TLS_ARGS=()
if [[ "$MTLS" == 1 ]]; then
    mkdir -p "$TMP/tls"
    (
        cd "$TMP/tls"
        ec() { openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "$@" 2>/dev/null; }
        ec -x509 -days 2 -subj /CN=bench-ca -keyout ca.key -out ca.pem
        ec -subj /CN=localhost -keyout s.key -out s.csr
        ec -subj /CN=bench-client -keyout c.key -out c.csr
        printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >s.ext
        printf 'extendedKeyUsage=clientAuth\n' >c.ext
        openssl x509 -req -in s.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile s.ext -out s.crt 2>/dev/null
        openssl x509 -req -in c.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile c.ext -out c.crt 2>/dev/null
        openssl pkcs8 -topk8 -nocrypt -in s.key -out s.pk8
        openssl pkcs8 -topk8 -nocrypt -in c.key -out c.pk8
    ) || die "openssl could not make the certificates"
    GW=https://127.0.0.1:$GW_PORT
    TLS_TOML="tls_cert_file = \"$TMP/tls/s.crt\"
tls_key_file = \"$TMP/tls/s.pk8\"
tls_client_auth = \"optional\"
tls_client_ca_file = \"$TMP/tls/ca.pem\""
    TLS_ARGS=(--ca "$TMP/tls/ca.pem" --cert "$TMP/tls/c.crt" --key "$TMP/tls/c.pk8")
fi

start_upstream "$UP_PORT"

bench_config "$TMP/keyward.toml" "$TMP/keyward.db" "$WORKERS" "$GW" "$TLS_TOML"
start_keyward "$TMP/keyward.toml" "$ADMIN_PORT"

"$KEYWARD" app create bench --json >/dev/null
"$KEYWARD" client create --app bench --scope facts:read --token-ttl 24h --json >"$TMP/client.json"
CID=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["client_id"])' "$TMP/client.json")
CSECRET=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["client_secret"])' "$TMP/client.json")

CLK_TCK=$(getconf CLK_TCK)
run() { # MODE SECONDS OUT
    local before after
    before=$(cpu_ticks "$KEYWARD_PID")
    local mode=(--mode "$1")
    case $1 in
        bound) mode=(--mode bearer "${TLS_ARGS[@]}" --token-cert yes) ;;
        unbound) mode=(--mode bearer "${TLS_ARGS[@]}" --token-cert no) ;;
    esac
    "$LOAD" --base "$GW" --issuer "$GW" --path /fact --client-id "$CID" --client-secret "$CSECRET" \
        "${mode[@]}" --alg "$PROOF_ALG" --connections "$CONNECTIONS" --duration "$2" >"$3"
    after=$(cpu_ticks "$KEYWARD_PID")
    echo "server_cpu_s: $(python3 -c "print(($after - $before) / $CLK_TCK)")" >>"$3"
}
mkdir -p "$TMP/results"
for m in $MODES; do log "warm-up $m"; run "$m" 3 "$TMP/results/warmup-$m.out"; done
for r in $(seq "$ROUNDS"); do
    for m in $MODES; do
        log "round $r/$ROUNDS: $m"
        run "$m" "$DURATION" "$TMP/results/$m-$r.txt"
    done
done
echo "keyward $([[ "$MTLS" == 1 ]] && echo 'mTLS-bound vs unbound Bearer token, TLS listener with client certificates' || echo "DPoP ($PROOF_ALG proofs) vs Bearer"), one token route: $WORKERS worker(s), dpop_load -c$CONNECTIONS ${DURATION}s, $(nproc) CPU(s), $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git -C "$ROOT" rev-parse --short HEAD)"
python3 - "$TMP/results" $MODES <<'PY'
import glob, statistics, sys
d, modes = sys.argv[1], sys.argv[2:]
def load(f):
    return {k.strip(): v.strip() for k, v in (l.split(":", 1) for l in open(f) if ":" in l)}
rows = {}
print("| mode | runs req/s | median req/s | p50 ms | p99 ms | errors | server CPU µs/req |")
print("|---|---|---|---|---|---|---|")
for m in modes:
    runs = [load(f) for f in sorted(glob.glob(f"{d}/{m}-[0-9]*.txt"))]
    rps = [float(r["rps"]) for r in runs]
    cpu = [float(r["server_cpu_s"]) / int(r["ok"]) * 1e6 for r in runs]
    rows[m] = (statistics.median(rps), statistics.median(cpu))
    print(f"| {m} | {', '.join(f'{x:.0f}' for x in rps)} | {statistics.median(rps):.0f} | "
          f"{statistics.median(float(r['p50_ms']) for r in runs):.2f} | "
          f"{statistics.median(float(r['p99_ms']) for r in runs):.2f} | "
          f"{sum(int(r['errors']) for r in runs)} | {statistics.median(cpu):.1f} |")
for m in modes:
    print(f"{m}: token cnf {load(sorted(glob.glob(f'{d}/{m}-[0-9]*.txt'))[0]).get('token_cnf')}")
if "bound" in rows and "unbound" in rows:
    b, u = rows["bound"], rows["unbound"]
    print(f"\nbound/unbound req/s: {b[0] / u[0]:.2f} (goal >= 0.70); server CPU per request bound/unbound: {b[1] / u[1]:.2f}")
if "bearer" in rows and "dpop" in rows:
    b, p = rows["bearer"], rows["dpop"]
    print(f"\nDPoP/Bearer req/s: {p[0] / b[0]:.2f} (goal >= 0.70); "
          f"server CPU per request DPoP/Bearer: {p[1] / b[1]:.2f} (i.e. DPoP req/s per server CPU-second relative to Bearer: {b[1] / p[1]:.2f})")
    if "bearer-proofs" in rows:
        print(f"DPoP / bearer-proofs req/s (client proof cost removed from the comparison): {p[0] / rows['bearer-proofs'][0]:.2f}")
PY
