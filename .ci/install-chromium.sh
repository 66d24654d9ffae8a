#!/usr/bin/env bash
# Headless Chromium for the conformance report's browser test (tests/harness/test_report_browser.py).
# Debian's package; needs root (CI containers run as root). Idempotent.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq chromium >/dev/null
command -v chromium
