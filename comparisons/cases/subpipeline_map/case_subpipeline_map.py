"""A sub-pipeline fanned out over shards (`per_shard.map(shard=..., max_parallel=2)`): each
copy loads, cleans (retried once in copy 1) and scores one shard; the total reads the scores
as a list, in shard order."""

import unipipe as up


@up.task
def list_shards(n: int) -> list:
    return [{"id": i, "size": 3 + i} for i in range(n)]


@up.task
def load_shard(shard: dict) -> list:
    return [shard["id"] * 10 + k for k in range(shard["size"])]


@up.task(retries=1)
def clean(rows: list, shard_id: int) -> list:
    if shard_id == 1 and up.current().attempt < 2:
        raise ConnectionError("shard 1's replica is catching up")
    return [r for r in rows if r % 2 == 0]


@up.task
def score(rows: list, factor: int) -> int:
    return sum(rows) * factor


@up.task
def total(scores: list) -> dict:
    return {"scores": scores, "total": sum(scores)}


@up.pipeline(name="case-subpipeline-per-shard")
def per_shard(shard: dict, factor: int):
    rows = load_shard(shard)
    cleaned = clean(rows, shard["id"])
    return score(cleaned, factor)


@up.pipeline(name="case-subpipeline-map")
def pipe(n: int = 3, factor: int = 2):
    scores = per_shard.map(shard=list_shards(n), factor=factor, max_parallel=2)
    return total(scores)
