"""Always fail with exponential backoff capped by max_delay: 0.4s, 1.0s (capped), 1.0s."""

import unipipe as up


@up.task(retry=up.Retry(max_retries=3, delay="0.4s", backoff=3.0, max_delay="1s"))
def call_service() -> str:
    raise ConnectionError(f"refused at attempt {up.current().attempt}")


@up.pipeline(name="case-retry-backoff-capped")
def pipe():
    return call_service()
