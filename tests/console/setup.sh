#!/usr/bin/env bash
# Installs what the console's end-to-end test needs: Debian's chromium and playwright-core
# (pinned by package-lock.json). Run by .ci/run before `KEYWARD_TEST_CHROMIUM=1 cargo test`.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x /usr/bin/chromium ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq chromium >/dev/null
fi
if ! command -v node >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq nodejs npm >/dev/null
fi
npm ci --no-audit --no-fund --loglevel=error
/usr/bin/chromium --version
