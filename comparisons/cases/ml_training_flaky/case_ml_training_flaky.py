"""Seed scenario: the ML training pipeline whose training step fails twice, then succeeds.

The steps are the example's (examples/ml_training.py, on the path through case.yaml), with a
training step that cannot reach its parameter server on the first two attempts.
"""

from ml_training import train_and_score, train_model

import unipipe as up


@up.task(id="train_model",
         retry=up.Retry(max_retries=2, delay="0.5s", backoff=2.0, max_delay="5s",
                        retry_on=(ConnectionError, TimeoutError)),
         timeout="2m", resources=up.Resources(cpu="1", memory="1Gi"))
def flaky_train(features: dict, learning_rate: float) -> dict:
    attempt = up.current().attempt
    if attempt <= 2:
        raise ConnectionError(f"parameter server unreachable (attempt {attempt})")
    return train_model(features, learning_rate)  # outside a pipeline a task is a plain function


@up.pipeline(name="case-ml-training-flaky",
             alerts=[up.Alert(on=("failure",), webhook="env:UNIPIPE_HARNESS_WEBHOOK")],
             defaults=up.Defaults(retry=up.Retry(max_retries=1, delay="0.2s")))
def pipe(n_rows: int = 60, seed: int = 7, learning_rate: float = 0.1, threshold: float = 0.85):
    return train_and_score(n_rows, seed, learning_rate, threshold, train=flaky_train)
