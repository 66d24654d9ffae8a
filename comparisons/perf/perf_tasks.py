"""The task functions the synthetic benchmark pipelines point at (importable as `perf_tasks`)."""

from __future__ import annotations


def step(x: int) -> int:
    return x + 1


def join(a: int, b: int) -> int:
    return a + b
