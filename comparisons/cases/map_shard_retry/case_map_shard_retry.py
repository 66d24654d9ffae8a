"""Seed scenario: per-shard fan-out where one shard fails once and is retried on its own."""

import unipipe as up


@up.task
def shards(n: int) -> list:
    return [list(range(i, 12, n)) for i in range(n)]


@up.task(retry=up.Retry(max_retries=1, delay="0.3s"))
def score_shard(shard: list) -> int:
    ctx = up.current()
    if ctx.map_index == 1 and ctx.attempt == 1:
        raise ConnectionError("shard 1 lost its connection")
    return sum(shard)


@up.pipeline(name="case-map-shard-retry")
def pipe(n: int = 4):
    return score_shard.map(shard=shards(n))
