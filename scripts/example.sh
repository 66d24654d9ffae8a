#!/usr/bin/env bash
# The main job on the example: compile the ML training pipeline for every installed backend,
# then run it on the default backend (the reference runner) and print the result.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v uv >/dev/null 2>&1 || python3 -m pip install --quiet uv
uv sync --frozen --quiet
uv run --frozen unipipe compile examples/ml_training.py:training --target all --out build/ml-training
exec uv run --frozen unipipe run examples/ml_training.py:training "$@"
