"""Fault: one copy of a mapped sub-pipeline fails (shard 1 never validates). Its next task is
upstream_failed in that copy only; the other copies finish; the task after the group is
upstream_failed and the run fails."""

import unipipe as up


@up.task
def validate(shard: int) -> int:
    if shard == 1:
        raise ValueError(f"shard {shard} has a corrupt footer")
    return shard


@up.task
def publish(shard: int) -> str:
    return f"shard {shard} published"


@up.task
def summary(published: list) -> str:
    return ", ".join(published)


@up.pipeline(name="case-subpipeline-shard-publish")
def shard_publish(shard: int):
    return publish(validate(shard))


@up.pipeline(name="case-subpipeline-map-fails")
def pipe(shards: list = [0, 1, 2]):  # noqa: B006 - a parameter default, never mutated
    return summary(shard_publish.map(shard=shards))
