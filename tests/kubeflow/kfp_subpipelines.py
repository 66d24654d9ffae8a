"""Sub-pipelines for the kubeflow backend's tests (importable as ``kfp_subpipelines``: the
component processes import the tasks from here through RunOptions.search_path)."""

from __future__ import annotations

import unipipe as up

GROUP_ALERT = up.Alert(on=("success", "failure"), webhook="env:UNIPIPE_TEST_WEBHOOK")


@up.task
def numbers(n: int) -> list:
    return list(range(1, n + 1))


@up.task
def square(x: int) -> int:
    return x * x


@up.task
def total(values: list) -> int:
    return sum(values)


@up.task
def over(value: int, limit: int) -> bool:
    return value > limit


@up.task
def announce(flag: bool) -> str:
    return f"over the limit: {flag}"


@up.task(run_if="all_done")
def tidy() -> str:
    return "tidied"


@up.pipeline(name="sum-squares")
def sum_squares(values: list):
    """Squares each value and sums the squares."""
    return total(square.map(x=values))


@up.pipeline(name="summarise", alerts=[GROUP_ALERT])
def summarise(n: int, limit: int):
    """Sums the squares of 1..n and tells whether the sum is over the limit."""
    return over(sum_squares(numbers(n)), limit)


@up.pipeline(name="nested-groups")
def nested_groups(n: int = 3, limit: int = 10):
    """Nested (summarise calls sum_squares) and repeated sub-pipelines: one read by a task in
    the sub-pipeline around it, one whose result gates a block, one called inside that block,
    and a cleanup waiting for one."""
    first = summarise(n, limit)  # 1 + 4 + 9 = 14: over
    second = summarise(2, limit)  # 1 + 4 = 5: not over
    with up.when(first):
        third = summarise(4, limit)  # called inside up.when(): one dsl.If around the call
        announce(third)
    tidy().after(second)
    return first


# ---------------------------------------------------------------- a member that fails


@up.task
def explode(x: int) -> int:
    raise ValueError(f"{x} does not fit")


@up.task
def double(x: int) -> int:
    return 2 * x


@up.pipeline(name="risky", alerts=[GROUP_ALERT])
def risky(x: int):
    return explode(x)


@up.pipeline(name="wrapper", alerts=[GROUP_ALERT])
def wrapper(x: int):
    return double(risky(x))


@up.pipeline(name="failing-groups")
def failing_groups(x: int = 1):
    """wrapper__risky__explode fails: risky and wrapper fail (one failure alert each),
    wrapper_2 never starts (no alert), the cleanup after it runs, the run fails."""
    second = wrapper(wrapper(x))
    tidy().after(second)


# ---------------------------------------------------------------- shapes KFP refuses


@up.pipeline(name="load-retried", retries=1)
def load_retried(n: int):
    return total(numbers(n))


@up.pipeline(name="group-retry")
def group_retry(n: int = 3):
    return square(load_retried(n))


@up.pipeline(name="gated-inside")
def gated_inside(n: int, limit: int):
    rows = numbers(n)
    with up.when(over(total(rows), limit)):
        inner = total(rows)
    return inner


@up.pipeline(name="read-from-inside-if")
def read_from_inside_if(n: int = 3, limit: int = 10):
    return square(gated_inside(n, limit))


@up.pipeline(name="half-gated")
def half_gated(flag: bool, n: int):
    rows = numbers(n)
    with up.when(flag):
        total(rows)
    return rows


@up.pipeline(name="gate-from-outside")
def gate_from_outside(n: int = 3, limit: int = 10):
    return half_gated(over(n, limit), n)
