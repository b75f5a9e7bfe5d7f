#!/usr/bin/env bash
# Installs what the demo page's browser test needs: Debian's chromium and playwright-core
# (pinned by package-lock.json). Run by .ci/run before
# `KEYWARD_TEST_CHROMIUM=1 cargo test -p keyward --test it demo_page`.
set -euo pipefail
cd "$(dirname "$0")"
export DEBIAN_FRONTEND=noninteractive
if [ ! -x /usr/bin/chromium ] || ! command -v node >/dev/null; then
  apt-get update -qq
  [ -x /usr/bin/chromium ] || apt-get install -y -qq chromium >/dev/null
  command -v node >/dev/null || apt-get install -y -qq nodejs npm >/dev/null
fi
npm ci --no-audit --no-fund --loglevel=error
/usr/bin/chromium --version
