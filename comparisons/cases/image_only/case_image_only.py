"""A container image on a task."""

import unipipe as up


@up.task(image="python:3.11-slim")
def checksum(text: str) -> int:
    return sum(text.encode())


@up.pipeline(name="case-image-only")
def pipe(text: str = "unipipe"):
    return checksum(text)
