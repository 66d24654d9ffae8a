"""Seed scenario: the ML training pipeline whose quality gate says no: registration is skipped.

The steps are the example's (examples/ml_training.py, on the path through case.yaml).
"""

from ml_training import train_and_score

import unipipe as up


@up.pipeline(name="case-quality-gate-skips",
             alerts=[up.Alert(on=("failure",), webhook="env:UNIPIPE_HARNESS_WEBHOOK")],
             defaults=up.Defaults(retry=up.Retry(max_retries=1, delay="0.2s")))
def pipe(n_rows: int = 60, seed: int = 7, learning_rate: float = 0.1, threshold: float = 0.85):
    return train_and_score(n_rows, seed, learning_rate, threshold)
