"""A run past its timeout fails, and the pipeline's failure alert goes out once."""

import time

import unipipe as up


@up.task
def extract(n: int) -> int:
    return n


@up.task
def hang(value: int) -> int:
    time.sleep(120)  # stopped by the run's timeout
    return value


@up.task
def publish(value: int) -> str:
    return f"published {value}"


@up.pipeline(name="case-pipeline-timeout-fails", timeout="30s",
             alerts=[up.Alert(on=("failure",), webhook="env:UNIPIPE_HARNESS_WEBHOOK")])
def pipe(n: int = 7):
    return publish(hang(extract(n)))
