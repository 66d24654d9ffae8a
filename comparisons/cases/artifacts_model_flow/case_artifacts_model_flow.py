"""The seeds' KFP training pipeline with artifacts (examples/ml_artifacts.py)."""

from ml_artifacts import training as pipe  # noqa: F401
