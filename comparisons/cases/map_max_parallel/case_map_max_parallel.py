"""At most two elements of a fan-out at once: six slow elements, limited to two."""

import time

import unipipe as up


@up.task
def batches(n: int) -> list:
    return list(range(n))


@up.task
def load(batch: int) -> int:
    time.sleep(0.6)  # long enough that elements the engine starts together overlap
    return batch * 10


@up.pipeline(name="case-map-max-parallel")
def pipe(n: int = 6):
    return load.map(batch=batches(n), max_parallel=2)
