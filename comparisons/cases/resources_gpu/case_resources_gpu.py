"""Resources with a GPU on a task."""

import unipipe as up


@up.task(resources=up.Resources(cpu="2", memory="4Gi", gpu=1, gpu_type="nvidia-tesla-t4"))
def embed(texts: list) -> list:
    return [len(t) for t in texts]


@up.pipeline(name="case-resources-gpu")
def pipe():
    return embed(["a", "bb", "ccc"])
