"""Task alerts on retry, failure and success over a webhook: one per event that happens."""

import unipipe as up


@up.task(retry=up.Retry(max_retries=2, delay="0.2s"),
         alerts=[up.Alert(on=("retry", "failure", "success"),
                          webhook="env:UNIPIPE_HARNESS_WEBHOOK")])
def sync(fail_times: int) -> str:
    if up.current().attempt <= fail_times:
        raise ConnectionError("sync interrupted")
    return "synced"


@up.pipeline(name="case-alerts-retry-success")
def pipe(fail_times: int = 1):
    return sync(fail_times)
