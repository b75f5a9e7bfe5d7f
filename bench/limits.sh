#!/usr/bin/env bash
# Load test of limits (issue 3): one keyward gateway, the same route, measured A B A B with
#   `unlimited`: a key with no limits (its app has none either), and
#   `limited`:   a key with a key rate (10000000/s), a quota (1000000000/day) and an IP
#                allowlist (127.0.0.1), whose app has a rate (10000000/s); never tripped.
# Goal: limited RPS >= 0.90 x unlimited RPS. All knobs of bench/gateway.sh apply.
#
#   bench/limits.sh
#   ROUNDS=5 GATEWAY_BIN=/path/to/keyward bench/limits.sh
set -euo pipefail
COMPARE=limits exec "$(dirname "${BASH_SOURCE[0]}")/gateway.sh" "$@"
