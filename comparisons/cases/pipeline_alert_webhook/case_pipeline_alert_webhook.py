"""Pipeline-level alerts over a webhook: once per run, at its end."""

import unipipe as up


@up.task
def ingest(n: int) -> int:
    return n


@up.task
def publish(n: int) -> str:
    return f"{n} rows"


@up.pipeline(name="case-pipeline-alert-webhook",
             alerts=[up.Alert(on=("success", "failure"), webhook="env:UNIPIPE_HARNESS_WEBHOOK")])
def pipe(n: int = 5):
    return publish(ingest(n))
