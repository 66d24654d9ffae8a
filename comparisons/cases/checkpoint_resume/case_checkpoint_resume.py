"""Seed scenario: a long task checkpoints into up.current().scratch_url() and resumes there.

The first attempt processes three of six chunks, saving a checkpoint after each, then its
process is killed; the retry reads the checkpoint and processes only the rest.
"""

import json
import os
import signal

import unipipe as up
from unipipe.runtime.store import read_bytes, write_bytes


@up.task(retry=up.Retry(max_retries=2, delay="0.3s"))
def process(chunks: int) -> dict:
    ctx = up.current()
    url = f"{ctx.scratch_url()}/checkpoint.json"
    raw = read_bytes(url)
    state = json.loads(raw) if raw else {"done": 0, "total": 0, "resumed_from": []}
    if state["done"]:
        state["resumed_from"].append(state["done"])
    for i in range(state["done"], chunks):
        state["total"] += (i + 1) * 10
        state["done"] = i + 1
        write_bytes(url, json.dumps(state).encode())
        if ctx.attempt == 1 and state["done"] == 3:
            os.kill(os.getpid(), signal.SIGKILL)
    return {**state, "attempt": ctx.attempt}


@up.pipeline(name="case-checkpoint-resume")
def pipe(chunks: int = 6):
    return process(chunks)
