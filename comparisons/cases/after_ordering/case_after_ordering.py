"""Ordering edges without data: after() must hold on every engine."""

import time

import unipipe as up


@up.task
def step(name: str) -> str:
    time.sleep(0.3)
    return name


@up.pipeline(name="case-after-ordering")
def pipe():
    first = step("first")
    second = step("second").after(first)
    third = step("third").after(first, second)
    return [first, second, third]
