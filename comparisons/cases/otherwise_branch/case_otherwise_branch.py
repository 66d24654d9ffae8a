"""if/else: `with up.when(gate):` then `with up.otherwise():`; a join after both branches."""

import unipipe as up


@up.task
def big_enough(rows: int, minimum: int) -> bool:
    return rows >= minimum


@up.task
def train_full(rows: int) -> str:
    return f"full model on {rows} rows"


@up.task
def train_small(rows: int) -> str:
    return f"small model on {rows} rows"


@up.task
def describe(model: str) -> str:
    return model.upper()


@up.task
def announce() -> str:
    return "done"


@up.pipeline(name="case-otherwise-branch")
def pipe(rows: int = 40, minimum: int = 100):
    gate = big_enough(rows, minimum)
    with up.when(gate):
        full = train_full(rows)
    with up.otherwise():
        small = train_small(rows)
        described = describe(small)
    joined = announce().after(full, small)
    return {"full": full, "small": small, "described": described, "joined": joined}
