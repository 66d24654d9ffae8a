"""CPU and memory requests on a task."""

import unipipe as up


@up.task(resources=up.Resources(cpu="500m", memory="256Mi"))
def light(x: int) -> int:
    return x + 1


@up.pipeline(name="case-resources-cpu-memory")
def pipe(x: int = 41):
    return light(x)
