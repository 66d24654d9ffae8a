"""A cron-scheduled pipeline, triggered once by hand."""

import unipipe as up


@up.task
def nightly(day: str) -> str:
    return f"nightly job for {day}"


@up.pipeline(name="case-schedule-cron", schedule="30 2 * * *")
def pipe(day: str = "2024-05-01"):
    return nightly(day)
