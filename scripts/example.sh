#!/usr/bin/env bash
# The main job on the example: compile the ML training pipeline for every installed backend,
# run it on the reference runner (printing the result), then run it on every backend and compare
# (unipipe conform: Airflow through `airflow dags test`, Prefect on a local server, KFP through
# its compiled PipelineSpec), with reports in build/ml-training/conformance/.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v uv >/dev/null 2>&1 || python3 -m pip install --quiet --root-user-action=ignore uv
# --compile-bytecode: every engine subprocess (airflow dags test, a Prefect flow run, a KFP
# component) imports its orchestrator; without .pyc files that is compiled from source each time
# (6.4 s -> 2.8 s to import Airflow, Prefect and kfp here, where PYTHONDONTWRITEBYTECODE is set)
uv sync --frozen --compile-bytecode --quiet
uv run --frozen python -m compileall -q unipipe backends/*/unipipe_* >/dev/null  # ours too
uv run --frozen unipipe compile examples/ml_training.py:training --target all --out build/ml-training
uv run --frozen unipipe run examples/ml_training.py:training "$@"
exec uv run --frozen unipipe conform examples/ml_training.py:training \
  --backends local,airflow,prefect,kubeflow --out build/ml-training/conformance
