"""Fault: a bad parameter value must be refused before anything runs."""

import unipipe as up


@up.task
def side_effect(n: int) -> int:
    return n * 2


@up.pipeline(name="case-bad-param-value")
def pipe(n: int = 3):
    return side_effect(n)
