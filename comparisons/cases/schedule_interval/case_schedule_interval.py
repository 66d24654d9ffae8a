"""An interval-scheduled pipeline, triggered once by hand."""

import unipipe as up


@up.task
def poll() -> str:
    return "polled"


@up.pipeline(name="case-schedule-interval", schedule="15m")
def pipe():
    return poll()
