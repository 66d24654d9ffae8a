"""A task needs a package no worker has and no index serves: it fails on every backend."""

import unipipe as up


@up.task(packages=["unipipe-no-such-package==1.0"])
def fit(rows: int) -> int:
    import unipipe_no_such_package  # noqa: F401

    return rows


@up.task
def publish(n: int) -> str:
    return f"published {n}"


@up.pipeline(name="case-packages-missing")
def pipe(rows: int = 3):
    return publish(fit(rows))
