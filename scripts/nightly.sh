#!/usr/bin/env bash
# The lanes CI runs on the required cases only, on every case (about an hour on 2 cores):
#   1. every case on Airflow 2.11 (its own environment) and on Airflow's real scheduler;
#   2. every case on the three isolated lanes (each task attempt in a sandbox of its own, a moto
#      S3 server the only shared medium), recorded in comparisons/perf/isolated-*.md.
# Reports go to build/nightly/. Exit status: non-zero if any lane had a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v uv >/dev/null 2>&1 || python3 -m pip install --quiet --root-user-action=ignore uv
export PATH="$HOME/.local/bin:$PATH"
uv sync --frozen --compile-bytecode --quiet
if [ -f .ci/install-system-packages.sh ]; then
  bash .ci/install-system-packages.sh || echo "warning: redis-server could not be installed" >&2
fi
status=0
uv run --frozen unipipe conform comparisons/cases --backends local,airflow@2.11,airflow@scheduler \
  --out build/nightly/airflow-lanes || status=1
for backend in airflow prefect kubeflow; do
  uv run --frozen python comparisons/perf/isolated.py --backends "$backend" || status=1
done
exit "$status"
