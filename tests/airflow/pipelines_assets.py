"""Pipelines for issue 14 on Airflow: an asset producer and its consumer, a schedule across the
2024 DST changes in Europe/Berlin."""

from __future__ import annotations

import time

import unipipe as up

features = up.Asset("s3://bucket/features/")


@up.task(produces=[features])
def build_features(fail: bool) -> int:
    if fail:
        raise RuntimeError("no features today")
    return 42


@up.pipeline(name="a14-producer")
def producer(fail: bool = False):
    return build_features(fail)


@up.task
def train(pause: float) -> dict:
    time.sleep(pause)
    when = up.current().logical_date
    return {"logical_date": when.isoformat() if when is not None else None}


@up.pipeline(name="a14-consumer", trigger=up.On(features), max_active_runs=1)
def consumer(pause: float = 8.0):
    return train(pause)


@up.task
def stamp() -> str | None:
    when = up.current().logical_date
    return when.isoformat() if when is not None else None


@up.pipeline(name="a14-nightly",
             schedule=up.Schedule(cron="30 2 * * *", timezone="Europe/Berlin",
                                  start="2024-01-01"))
def nightly():
    return stamp()


raw_events = up.Asset("S3://lake/raw/events/")
raw_users = up.Asset("s3://lake/raw/users")


@up.task(produces=[features])
def rebuild(rows: int) -> int:
    return rows * 2


@up.pipeline(name="a14-combined", trigger=up.On(raw_events, raw_users, mode="any"),
             schedule=up.Schedule(cron="30 2 * * *", timezone="Europe/Berlin",
                                  start="2024-03-28", end="2024-04-03T12:00", catchup=True))
def combined(rows: int = 21):
    """Cron or an update of either raw asset; updates the features asset."""
    return rebuild(rows)


@up.pipeline(name="a14-all", trigger=up.On(raw_events, raw_users))
def all_of(rows: int = 21):
    return rebuild(rows)
