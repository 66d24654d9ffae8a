"""A user's task module for tests/core/test_zygote.py: imported only by a zygote's preload."""

import unipipe as up


@up.task(retries=2, timeout="5m")
def step(x: int) -> int:
    return x + 1
