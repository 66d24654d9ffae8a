"""A cached task hits on the second run; an uncached consumer runs again."""

import unipipe as up


@up.task(cache=up.Cache(version="cache-second-run"))
def costly_sum(n: int) -> int:
    return sum(i * i for i in range(n))


@up.task
def label(total: int) -> str:
    return f"total={total}"


@up.pipeline(name="case-cache-second-run")
def pipe(n: int = 1000):
    return label(costly_sum(n))
