"""A failure propagates as upstream_failed down a chain; the pipeline alerts once by email."""

import unipipe as up


@up.task
def extract() -> list:
    raise PermissionError("bucket access denied")


@up.task
def transform(rows: list) -> list:
    return rows


@up.task
def load(rows: list) -> int:
    return len(rows)


@up.task
def report() -> str:
    return "report sent"


@up.pipeline(name="case-upstream-failed-email",
             alerts=[up.Alert(on=("failure",), email=("oncall@example.com",))])
def pipe():
    loaded = load(transform(extract()))
    return {"loaded": loaded, "report": report()}
