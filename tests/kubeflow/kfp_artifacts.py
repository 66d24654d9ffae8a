"""Tasks with file artifacts, metrics, reports and packages for the KFP tests."""

from __future__ import annotations

import unipipe as up


@up.task
def make(text: str, data: up.Output[up.Dataset]) -> int:
    with open(data.path, "w") as fh:
        fh.write(text)
    data.metadata["chars"] = len(text)
    return len(text)


@up.task
def size(data: up.Input[up.Dataset]) -> int:
    with open(data.path) as fh:
        n = len(fh.read())
    up.log_metric("chars", n)
    up.report(f"**{n}** characters")
    return n


@up.task(packages=["unipipe-no-such-package==1.0"])
def needs_missing(rows: int) -> int:
    return rows


@up.task
def after_missing(n: int) -> int:
    return n


@up.pipeline(name="kfp-shared-artifacts")
def shared():
    """One function called twice on different producers' artifacts: one KFP component."""
    a = make("abc")
    b = make("hello")
    return {"a": size(data=a.outputs["data"]), "b": size(data=b.outputs["data"])}


@up.pipeline(name="kfp-packages-missing")
def packages_missing(rows: int = 3):
    return after_missing(needs_missing(rows))


def imported(uri: str):
    """A dsl.importer of an existing file (``uri``) read by ``size``."""

    @up.pipeline(name="kfp-imported-artifact")
    def pipe():
        return size(data=uri)

    return pipe


@up.task(cache=True)
def make_cached(text: str, data: up.Output[up.Dataset]) -> int:
    with open(data.path, "w") as fh:
        fh.write(text)
    up.log_metric("chars", len(text))
    return len(text)


@up.pipeline(name="kfp-native-cache-artifacts")
def native_cache(text: str = "cached bytes"):
    """A cached producer that reads no artifact: KFP's own cache (a hit starts no container)."""
    return size(data=make_cached(text).outputs["data"])


@up.task
def long_enough(n: int, at_least: int) -> bool:
    return n >= at_least


@up.task
def shard_size(data: up.Input[up.Dataset], shard: int) -> int:
    with open(data.path) as fh:
        n = len(fh.read()) * shard
    up.log_metric("shard_chars", n)  # a fan-out element's: reported by no backend
    return n


@up.task
def shards(n: int) -> list:
    return list(range(1, n + 1))


@up.pipeline(name="kfp-artifacts-in-blocks")
def in_blocks(text: str = "abcd", at_least: int = 3):
    """An artifact read inside a dsl.If and inside a dsl.ParallelFor (a DAG input artifact)."""
    made = make(text)
    with up.when(long_enough(made, at_least)):
        gated = size(data=made.outputs["data"])
    per = shard_size.map(shard=shards(2), data=made.outputs["data"])
    return {"gated": gated, "per": per}
