#!/usr/bin/env bash
# Debian packages the tests need, in one apt-get run (needs root; CI containers run as root).
# Idempotent: installs only what is missing.
#   chromium      the conformance report's browser test (tests/harness/test_report_browser.py)
#   redis-server  Celery's broker on the isolated Airflow lane (unipipe_airflow/isolated.py)
set -euo pipefail
missing=()
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || missing+=(chromium)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# the package's own service is not wanted: each isolated run starts a Redis of its own
if command -v systemctl >/dev/null 2>&1; then systemctl disable --now redis-server >/dev/null 2>&1 || true; fi
command -v chromium && command -v redis-server
