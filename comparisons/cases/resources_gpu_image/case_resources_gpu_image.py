"""Resources (CPU, memory, GPU) and a container image on a task."""

import unipipe as up


@up.task(resources=up.Resources(cpu="2", memory="4Gi", gpu=1, gpu_type="nvidia-tesla-t4"),
         image="python:3.11-slim")
def embed(texts: list) -> list:
    return [len(t) for t in texts]


@up.pipeline(name="case-resources-gpu-image")
def pipe():
    return embed(["a", "bb", "ccc"])
