"""The seeds' KFP training pipeline with file artifacts: a Dataset in, a Model and Metrics out.

In KFP v2 the articles write it as::

    @dsl.component(packages_to_install=["scikit-learn"])
    def train(data: Input[Dataset], model: Output[Model], metrics: Output[Metrics]): ...

    @dsl.pipeline(name="training")
    def training(day: str):
        data = download(day=day)
        trained = train(data=data.outputs["data"])
        evaluate(model=trained.outputs["model"], data=data.outputs["data"])

unipipe keeps the same shape: ``up.Input[...]``/``up.Output[...]`` parameters get local paths.
KFP moves the bytes natively; Airflow and Prefect move them through the shared store and show
each artifact's URI, the metrics and the report where their UI does (XCom; Prefect artifacts).
The model file that reaches ``evaluate`` is the same bytes on every backend.
"""

from __future__ import annotations

import hashlib
import json
import random

import unipipe as up


@up.task(retries=1)
def download(day: str, rows: int, data: up.Output[up.Dataset]) -> int:
    """One day's training sample, as a CSV file (x,y per line)."""
    rng = random.Random(day)
    with open(data.path, "w") as fh:
        fh.write("x,y\n")
        for i in range(rows):
            x = i / 10
            fh.write(f"{x},{round(3 * x + 1 + rng.uniform(-0.2, 0.2), 4)}\n")
    data.metadata["day"] = day
    return rows


def _read(path: str) -> list[tuple[float, float]]:
    with open(path) as fh:
        next(fh)
        return [(float(x), float(y)) for x, y in (line.strip().split(",") for line in fh)]


@up.task(packages=["packaging>=21"], cache=up.Cache(version="ml-artifacts-1"))
def train(data: up.Input[up.Dataset], alpha: float, model: up.Output[up.Model],
          metrics: up.Output[up.Metrics]) -> dict:
    """Ridge regression of y on x in closed form; the model file holds its coefficients."""
    points = _read(data.path)
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    sxy = sum((x - mx) * (y - my) for x, y in points)
    slope = round(sxy / (sxx + alpha * n), 6)
    intercept = round(my - slope * mx, 6)
    with open(model.path, "w") as fh:
        json.dump({"alpha": alpha, "intercept": intercept, "slope": slope}, fh, sort_keys=True)
    model.metadata["framework"] = "closed-form ridge"
    metrics.log_metric("rows", n)
    metrics.log_metric("slope", slope)
    return {"slope": slope, "intercept": intercept}


@up.task
def evaluate(model: up.Input[up.Model], data: up.Input[up.Dataset]) -> dict:
    """R^2 of the model on the sample; the model file's digest shows which bytes arrived."""
    with open(model.path, "rb") as fh:
        raw = fh.read()
    coef = json.loads(raw)
    points = _read(data.path)
    my = sum(y for _, y in points) / len(points)
    ss_res = sum((y - (coef["intercept"] + coef["slope"] * x)) ** 2 for x, y in points)
    ss_tot = sum((y - my) ** 2 for _, y in points)
    r2 = round(1 - ss_res / ss_tot, 4)
    up.log_metric("r2", r2)
    up.report(f"# Evaluation\n\n| metric | value |\n|---|---|\n| R2 | {r2} |\n"
              f"| slope | {coef['slope']} |\n")
    return {"r2": r2, "model_sha256": hashlib.sha256(raw).hexdigest()}


@up.pipeline(name="ml-artifacts", tags=["ml", "example"])
def training(day: str = "2024-01-01", rows: int = 40, alpha: float = 0.01):
    """Download a day's sample as a Dataset, train a Model (with Metrics), evaluate it."""
    sample = download(day, rows)
    trained = train(data=sample.outputs["data"], alpha=alpha)
    return evaluate(model=trained.outputs["model"], data=sample.outputs["data"])
