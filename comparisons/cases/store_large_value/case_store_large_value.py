"""A value over 1 MiB between two tasks, through the shared store, and a cache hit on it.

On many machines the producer and the consumer land on different workers (pods, containers):
the value reaches the consumer only through the store compiled into the pipeline. The second
run's cache hit is served from the store too, to whichever worker runs the consumer then.
"""

import unipipe as up


@up.task
def frames(n: int) -> dict:
    # about 1.3 MiB of JSON: far over the 64 KiB that engines carry inline
    return {"name": "frames", "rows": [[i, i * 31 % 977, f"r{i:07d}"] for i in range(n)]}


@up.task(cache=up.Cache(version="store-large-value"))
def digest(table: dict) -> str:
    rows = table["rows"]
    return f"{table['name']}: {len(rows)} rows, checksum {sum(r[0] * r[1] for r in rows) % 1000003}"


@up.pipeline(name="case-store-large-value")
def pipe(n: int = 60000):
    return digest(frames(n))
