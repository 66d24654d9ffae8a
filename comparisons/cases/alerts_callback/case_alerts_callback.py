"""Alert callbacks: a Python function called per retry and on the final failure."""

import unipipe as up


@up.task(retry=up.Retry(max_retries=2, delay="0.2s"),
         alerts=[up.Alert(on=("retry", "failure"),
                          callback="unipipe.harness.receivers:record_callback")])
def flaky_export() -> str:
    raise OSError(f"disk full at attempt {up.current().attempt}")


@up.pipeline(name="case-alerts-callback")
def pipe():
    return flaky_export()
