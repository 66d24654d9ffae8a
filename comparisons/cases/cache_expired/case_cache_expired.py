"""A cache entry older than `expire` is a miss."""

import unipipe as up


@up.task(cache=up.Cache(expire="2s", version="cache-expired"))
def snapshot(day: str) -> str:
    return f"snapshot of {day}"


@up.pipeline(name="case-cache-expired")
def pipe(day: str = "2024-01-01"):
    return snapshot(day)
