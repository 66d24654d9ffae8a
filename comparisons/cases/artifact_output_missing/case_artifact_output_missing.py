"""A task declares an output Model and never writes it: it fails at once, naming the output."""

import unipipe as up


@up.task(retries=2)
def train(rows: int, model: up.Output[up.Model]) -> int:
    return rows  # forgot to write model.path


@up.task
def evaluate(model: up.Input[up.Model]) -> int:
    with open(model.path, "rb") as fh:
        return len(fh.read())


@up.pipeline(name="case-artifact-output-missing")
def pipe(rows: int = 3):
    return evaluate(model=train(rows).outputs["model"])
