"""A sub-pipeline retried as a whole (@up.pipeline(retries=1) called inside another): publish
fails in the group's first try, so the group runs again; load (cached) hits the entry its first
try wrote. The group's alert goes out once, for its success."""

import json

import unipipe as up
from unipipe.runtime.store import read_bytes, write_bytes


@up.task
def source(n: int) -> int:
    return n


@up.task(cache=up.Cache())
def load(n: int) -> list:
    return list(range(n))


@up.task
def publish(values: list) -> str:
    # a counter in the scratch folder, which every try of one run shares
    url = f"{up.current().scratch_url()}/group-tries.json"
    raw = read_bytes(url)
    tries = (json.loads(raw) if raw else 0) + 1
    write_bytes(url, json.dumps(tries).encode())
    if tries < 2:
        raise ConnectionError(f"warehouse unreachable on try {tries}")
    return f"published {len(values)} rows on try {tries}"


@up.task
def announce(message: str) -> str:
    return message.upper()


@up.pipeline(name="case-subpipeline-load-publish", retries=1, retry_delay="1s",
             alerts=[up.Alert(on=("success", "failure"), webhook="env:UNIPIPE_HARNESS_WEBHOOK")])
def load_publish(n: int):
    return publish(load(n))


@up.pipeline(name="case-subpipeline-retry")
def pipe(n: int = 3):
    return announce(load_publish(source(n)))
