"""Metrics and reports: up.log_metric, up.report and an Output[Metrics], one task retried."""

import unipipe as up


@up.task(retry=up.Retry(max_retries=1, delay="0.2s"))
def score(rows: int) -> float:
    if up.current().attempt == 1:
        up.log_metric("partial", 1.0)  # a failed attempt's metrics are not kept
        raise ConnectionError("feature store timed out")
    accuracy = round(0.5 + rows / 200, 3)
    up.log_metric("accuracy", accuracy)
    up.log_metric("rows", rows)
    return accuracy


@up.task
def summarise(accuracy: float, quality: up.Output[up.Metrics]) -> str:
    quality.log_metric("passed", 1 if accuracy >= 0.6 else 0)
    quality.log_metric("margin", round(accuracy - 0.6, 3))
    up.report(f"## Quality gate\n\naccuracy **{accuracy}** against 0.6")
    return "passed" if accuracy >= 0.6 else "failed"


@up.pipeline(name="case-metrics-and-report")
def pipe(rows: int = 40):
    return summarise(score(rows))
