#!/usr/bin/env bash
# Load test of cluster limits (issue 7): the same key (key rate, key quota, IP allowlist, app
# rate; never tripped) through two gateways on one store, measured A B A B:
#   `local`: limits in process (no [redis]);
#   `redis`: the same limits in Redis ([redis] url = REDIS_URL, default redis://127.0.0.1:6379/),
#            one Lua script (EVALSHA) per request.
# All knobs of bench/gateway.sh apply.
#
#   bench/redis.sh
#   ROUNDS=5 REDIS_URL=redis://127.0.0.1:6379/ bench/redis.sh
set -euo pipefail
COMPARE=redis exec "$(dirname "${BASH_SOURCE[0]}")/gateway.sh" "$@"
