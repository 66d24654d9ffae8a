#!/usr/bin/env bash
# The whole test suite, from a fresh machine with only python3 and pip.
# Installs uv if missing, syncs the locked workspace (orchestrators included), installs the
# system packages the tests need when it can (root + apt: chromium, redis-server), then runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v uv >/dev/null 2>&1 || python3 -m pip install --quiet --root-user-action=ignore uv
export PATH="$HOME/.local/bin:$PATH"
# --compile-bytecode: every engine subprocess (airflow dags test, a Prefect flow run, a KFP
# component) imports its orchestrator; without .pyc files that is compiled from source each time
# (6.4 s -> 2.8 s to import Airflow, Prefect and kfp here, where PYTHONDONTWRITEBYTECODE is set)
uv sync --frozen --compile-bytecode --quiet
uv run --frozen python -m compileall -q unipipe backends/*/unipipe_* >/dev/null  # ours too
if [ -f .ci/install-system-packages.sh ]; then
  bash .ci/install-system-packages.sh || echo "warning: chromium or redis-server could not be installed" >&2
fi
# two workers (pytest-xdist): the CPU-heavy lanes (LANES in tests/conftest.py, one work unit)
# one after another on one; the rest, mostly waiting on engines and servers, on the other
exec uv run --frozen pytest -n 2 --dist loadgroup "$@"
