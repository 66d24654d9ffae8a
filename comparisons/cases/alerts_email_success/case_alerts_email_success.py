"""Success alerts by email, for a task and for the pipeline."""

import unipipe as up


@up.task(alerts=[up.Alert(on=("success",), email=("data-team@example.com",))])
def publish_report(title: str) -> str:
    return f"report {title} published"


@up.pipeline(name="case-alerts-email-success",
             alerts=[up.Alert(on=("success", "failure"), email=("oncall@example.com",))])
def pipe(title: str = "weekly"):
    return publish_report(title)
