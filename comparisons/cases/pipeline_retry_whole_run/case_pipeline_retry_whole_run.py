"""The whole run is retried (@up.pipeline(retries=2)): publish fails in the first try, so the
run is tried again; prepare (cached) hits the entry its first try wrote."""

import json

import unipipe as up
from unipipe.runtime.store import read_bytes, write_bytes


@up.task(cache=up.Cache())
def prepare(rows: int) -> list:
    return list(range(rows))


@up.task
def publish(values: list) -> str:
    # a counter in the task's scratch folder, which every try of one run shares
    url = f"{up.current().scratch_url()}/tries.json"
    raw = read_bytes(url)
    tries = (json.loads(raw) if raw else 0) + 1
    write_bytes(url, json.dumps(tries).encode())
    if tries < 2:
        raise ConnectionError(f"warehouse unreachable on try {tries}")
    return f"published {len(values)} rows on try {tries}"


@up.pipeline(name="case-pipeline-retry-whole-run", retries=2, retry_delay="1s",
             alerts=[up.Alert(on=("success", "failure"), webhook="env:UNIPIPE_HARNESS_WEBHOOK")])
def pipe(rows: int = 3):
    return publish(prepare(rows))
