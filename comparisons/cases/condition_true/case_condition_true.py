"""Conditions: a gate that returns True runs its body (and what depends on it)."""

import unipipe as up


@up.task
def measure(value: float) -> dict:
    return {"value": value}


@up.task
def good_enough(metrics: dict, threshold: float) -> bool:
    return metrics["value"] >= threshold


@up.task
def publish(metrics: dict) -> str:
    return f"published {metrics['value']}"


@up.task
def shout(text: str) -> str:
    return text.upper()


@up.pipeline(name="case-condition-true")
def pipe(value: float = 0.9, threshold: float = 0.8):
    metrics = measure(value)
    with up.when(good_enough(metrics, threshold)):
        name = publish(metrics)
        loud = shout(name)
    return {"published": name, "loud": loud}
