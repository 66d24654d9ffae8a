"""The seeds' ML training pipeline, runnable anywhere: no network, no heavy ML libraries.

validate data -> features (cached) -> train (retries, timeout) -> evaluate -> quality gate ->
register (only if the gate passes), plus per-shard scoring fanned out over the feature shards,
and an alert on failure sent to the webhook named by ALERT_WEBHOOK_URL.

The "model" is a least-squares line fitted in pure Python on a small synthetic data set that
the pipeline generates itself, so every backend computes the same numbers.
"""

from __future__ import annotations

import math
import random

import unipipe as up


@up.task
def validate_data(n_rows: int, seed: int) -> dict:
    """Make the data set (a noisy line) and check it: no NaNs, enough rows."""
    if n_rows < 10:
        raise ValueError(f"need at least 10 rows, got {n_rows}")
    rng = random.Random(seed)
    xs = [i / n_rows for i in range(n_rows)]
    ys = [3.0 * x + 0.5 + rng.gauss(0, 0.05) for x in xs]
    if any(math.isnan(v) for v in xs + ys):
        raise ValueError("data has NaNs")
    return {"x": xs, "y": ys, "rows": n_rows}


@up.task(cache=up.Cache(expire="12h", version="1"))
def compute_features(data: dict) -> dict:
    """Standardise x; split the rows into 4 shards for scoring."""
    xs = data["x"]
    mean = sum(xs) / len(xs)
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / len(xs)) or 1.0
    zs = [(x - mean) / std for x in xs]
    shards = [list(range(i, len(zs), 4)) for i in range(4)]
    return {"z": zs, "y": data["y"], "mean": mean, "std": std, "shards": shards}


@up.task(retry=up.Retry(max_retries=2, delay="1s", backoff=2.0, max_delay="10s",
                        retry_on=(ConnectionError, TimeoutError)),
         timeout="2m", resources=up.Resources(cpu="1", memory="1Gi"))
def train_model(features: dict, learning_rate: float) -> dict:
    """Fit y = a*z + b by gradient descent (deterministic)."""
    a = b = 0.0
    zs, ys = features["z"], features["y"]
    n = len(zs)
    for _ in range(500):
        err = [a * z + b - y for z, y in zip(zs, ys)]
        a -= learning_rate * 2 * sum(e * z for e, z in zip(err, zs)) / n
        b -= learning_rate * 2 * sum(err) / n
    return {"a": round(a, 6), "b": round(b, 6)}


@up.task
def evaluate_model(model: dict, features: dict) -> dict:
    zs, ys = features["z"], features["y"]
    pred = [model["a"] * z + model["b"] for z in zs]
    mean_y = sum(ys) / len(ys)
    ss_res = sum((y - p) ** 2 for y, p in zip(ys, pred))
    ss_tot = sum((y - mean_y) ** 2 for y in ys)
    return {"r2": round(1 - ss_res / ss_tot, 6), "rows": len(ys)}


@up.task
def quality_gate(metrics: dict, threshold: float) -> bool:
    return metrics["r2"] >= threshold


@up.task
def register_model(model: dict, metrics: dict) -> str:
    return f"model-a{model['a']:.3f}-b{model['b']:.3f}-r2{metrics['r2']:.3f}"


@up.task
def shard_ids(features: dict) -> list:
    return features["shards"]


@up.task(retries=1)
def score_shard(shard: list, model: dict, features: dict) -> float:
    zs, ys = features["z"], features["y"]
    errs = [abs(model["a"] * zs[i] + model["b"] - ys[i]) for i in shard]
    return round(sum(errs) / len(errs), 6)


def train_and_score(n_rows, seed, learning_rate, threshold, *, train=train_model):
    """The pipeline's steps, a plain function: the conformance cases reuse them (with a flaky
    ``train`` in one), and a pipeline body may call helpers like this one."""
    data = validate_data(n_rows, seed)
    feats = compute_features(data)
    model = train(feats, learning_rate)
    metrics = evaluate_model(model, feats)
    with up.when(quality_gate(metrics, threshold)):
        registered = register_model(model, metrics)
    scores = score_shard.map(shard=shard_ids(feats), model=model, features=feats)
    return {"metrics": metrics, "model": model, "registered": registered, "scores": scores}


@up.pipeline(
    name="ml-training",
    schedule="0 2 * * *",
    alerts=[up.Alert(on=("failure",), webhook="env:ALERT_WEBHOOK_URL")],
    defaults=up.Defaults(retry=up.Retry(max_retries=1, delay="1s")),
    tags=["ml", "example"],
)
def training(n_rows: int = 200, seed: int = 7, learning_rate: float = 0.1,
             threshold: float = 0.85):
    """Train, evaluate and (if good enough) register a model; score every shard."""
    return train_and_score(n_rows, seed, learning_rate, threshold)
