"""Seed scenario: retries exhausted, then exactly one failure alert; independent work still runs."""

import unipipe as up


@up.task(retry=up.Retry(max_retries=2, delay="0.2s"),
         alerts=[up.Alert(on=("failure",), webhook="env:UNIPIPE_HARNESS_WEBHOOK")])
def load_partner_feed() -> dict:
    raise RuntimeError("partner API answered 503")


@up.task
def merge(feed: dict) -> int:
    return len(feed)


@up.task
def housekeeping() -> str:
    return "cleaned"


@up.pipeline(name="case-retries-exhausted-one-alert")
def pipe():
    feed = load_partner_feed()
    merged = merge(feed)
    return {"merged": merged, "housekeeping": housekeeping()}
