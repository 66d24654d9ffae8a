#!/usr/bin/env bash
# The whole test suite, from a fresh machine with only python3 and pip.
# Installs uv if missing, syncs the locked workspace (orchestrators included), installs the
# system packages the browser test needs when it can (root + apt), then runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v uv >/dev/null 2>&1 || python3 -m pip install --quiet --root-user-action=ignore uv
export PATH="$HOME/.local/bin:$PATH"
uv sync --frozen --quiet
if [ -x .ci/install-chromium.sh ] || [ -f .ci/install-chromium.sh ]; then
  bash .ci/install-chromium.sh || echo "warning: chromium could not be installed" >&2
fi
exec uv run --frozen pytest "$@"
