"""A task raises up.NonRetryable: fail now, whatever the retry policy says."""

import unipipe as up


@up.task(retries=3)
def validate_schema(version: int) -> str:
    if version < 2:
        raise up.NonRetryable(f"schema version {version} is no longer accepted")
    return "valid"


@up.pipeline(name="case-non-retryable-signal")
def pipe(version: int = 1):
    return validate_schema(version)
