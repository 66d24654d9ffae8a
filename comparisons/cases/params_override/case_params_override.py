"""Parameters of every JSON type, defaults and overrides, passed to a task."""

import unipipe as up


@up.task
def echo(count: int, ratio: float, name: str, flag: bool, items: list, opts: dict) -> dict:
    return {"count": count, "ratio": ratio, "name": name, "flag": flag, "items": items,
            "opts": opts, "types": [type(v).__name__ for v in (count, ratio, name, flag)]}


@up.pipeline(name="case-params-override")
def pipe(count: int = 1, ratio: float = 0.5, name: str = "default", flag: bool = False,
         items: list = [1, 2], opts: dict = {"a": 1}):  # noqa: B006 - JSON defaults
    return echo(count, ratio, name, flag, items, opts)
