"""A cached task whose input is too large to travel inline (over 64 KiB of JSON).

The value goes through the artifact store; the cached consumer must still hit on the second run,
on engines whose cache hashes the transported inputs too.
"""

import unipipe as up


@up.task
def readings(n: int) -> list:
    return [i * 7 % 1000 for i in range(n)]


@up.task(cache=up.Cache(version="cache-large-input"))
def summarise(values: list) -> str:
    return f"{len(values)} readings, sum {sum(values)}"


@up.pipeline(name="case-cache-large-input")
def pipe(n: int = 30000):
    return summarise(readings(n))
