"""The seeds' KFP training pipeline (examples/kfp_training.py): a container step, a sweep two
at a time, an if/else on the best score."""

from kfp_training import training as pipe

__all__ = ["pipe"]
