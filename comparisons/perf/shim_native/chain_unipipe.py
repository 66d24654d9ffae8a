"""The chain of the shim benchmark written once with unipipe: K trivial steps, each ``x + 1``."""

from __future__ import annotations

import unipipe as up


@up.task
def step(x: int) -> int:
    return x + 1


def pipeline(k: int):
    """A chain of ``k`` steps; step i consumes step i-1's output (``start`` feeds the first)."""

    @up.pipeline(name=f"shim-chain-{k}")
    def chain(start: int = 0):
        value = step(start)
        for _ in range(k - 1):
            value = step(value)
        return value

    return chain
