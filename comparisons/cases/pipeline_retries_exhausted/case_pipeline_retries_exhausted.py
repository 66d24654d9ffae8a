"""Every try of the run fails: the task's failure alert goes out in each try, the pipeline's
failure alert once, after the last try."""

import unipipe as up


@up.task(alerts=[up.Alert(on=("failure",), webhook="env:UNIPIPE_HARNESS_WEBHOOK")])
def load(rows: int) -> int:
    raise ValueError(f"schema mismatch in {rows} rows")


@up.task
def publish(count: int) -> str:
    return f"published {count}"


@up.pipeline(name="case-pipeline-retries-exhausted", retries=1,
             alerts=[up.Alert(on=("failure",), webhook="env:UNIPIPE_HARNESS_WEBHOOK")])
def pipe(rows: int = 4):
    return publish(load(rows))
