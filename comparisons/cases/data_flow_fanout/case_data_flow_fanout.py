"""Data flow: fan out over an upstream list, reduce, select a key, order with after()."""

import unipipe as up


@up.task
def make_numbers(n: int) -> list:
    return list(range(1, n + 1))


@up.task
def square(x: int) -> int:
    return x * x


@up.task
def total(values: list) -> int:
    return sum(values)


@up.task
def describe(values: list, label: str) -> dict:
    return {"label": label, "count": len(values), "max": max(values) if values else None}


@up.task
def touch(tag: str) -> str:
    return tag


@up.pipeline(name="case-data-flow-fanout")
def pipe(n: int = 4, label: str = "squares {{ ds }} {% raw %}"):
    nums = make_numbers(n)
    squares = square.map(x=nums)
    summary = describe(squares, label)
    last = touch("done").after(summary)
    return {"squares": squares, "total": total(squares), "label": summary["label"], "last": last}
