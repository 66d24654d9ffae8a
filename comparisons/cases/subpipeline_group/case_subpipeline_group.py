"""Sub-pipelines: `prepare` (itself calling `check_rows`) is called twice inside the pipeline,
so its tasks appear twice as groups prepare and prepare_2; its defaults (one retry) reach its
tasks, and featurize fails its first attempt in each group."""

import unipipe as up


@up.task
def extract(n: int) -> list:
    return list(range(1, n + 1))


@up.task
def count_rows(rows: list) -> int:
    return len(rows)


@up.task
def scale_rows(rows: list, factor: int) -> list:
    return [r * factor for r in rows]


@up.task
def featurize(rows: list) -> dict:
    if up.current().attempt < 2:
        raise ConnectionError("feature store busy")
    return {"total": sum(rows), "n": len(rows)}


@up.task
def combine(small: dict, large: dict) -> str:
    return f"{small['total']}+{large['total']} over {small['n']} rows"


@up.pipeline(name="case-subpipeline-check-rows")
def check_rows(rows: list):
    """Counts the rows it is given."""
    return count_rows(rows)


@up.pipeline(name="case-subpipeline-prepare",
             defaults=up.Defaults(retry=up.Retry(max_retries=1)))
def prepare(rows: list, factor: int = 1):
    """Scales the rows, checks them, and computes the features."""
    scaled = scale_rows(rows, factor)
    check_rows(scaled)
    return featurize(scaled)


@up.pipeline(name="case-subpipeline-group")
def pipe(n: int = 4):
    rows = extract(n)
    small = prepare(rows)
    large = prepare(rows, factor=10)
    return combine(small, large)
