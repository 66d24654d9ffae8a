"""Fan-out over a literal list, with a constant argument."""

import unipipe as up


@up.task
def scale(x: int, factor: int) -> int:
    return x * factor


@up.pipeline(name="case-map-literal")
def pipe():
    return scale.map(x=[3, 1, 2], factor=10)
