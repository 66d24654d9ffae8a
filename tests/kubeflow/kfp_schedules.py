"""Scheduled pipelines for the KFP schedule, logical date and backfill tests (issue 14)."""

import unipipe as up


@up.task
def stamp(label: str) -> dict:
    when = up.current().logical_date
    return {"label": label, "logical_date": when.isoformat() if when is not None else None}


@up.task(cache=True)
def cached_stamp(label: str) -> str:
    return label.upper()


@up.pipeline(name="kfp-daily", schedule=up.Schedule(cron="0 6 * * *", timezone="UTC",
                                                    start="2024-01-01", end="2024-12-31",
                                                    catchup=True))
def daily(label: str = "daily"):
    cached_stamp(label)
    return stamp(label)


@up.pipeline(name="kfp-berlin", schedule=up.Schedule(cron="30 2 * * *", timezone="Europe/Berlin",
                                                     start="2024-03-28", catchup=False))
def berlin(label: str = "berlin"):
    return stamp(label)


@up.pipeline(name="kfp-berlin-2024", schedule=up.Schedule(
    cron="30 2 * * *", timezone="Europe/Berlin", start="2024-01-01", end="2024-12-31"))
def berlin_2024(label: str = "berlin"):
    return stamp(label)


@up.pipeline(name="kfp-berlin-monthly", schedule=up.Schedule(
    cron="0 0 1 * *", timezone="Europe/Berlin", start="2024-01-01"))
def berlin_monthly(label: str = "berlin"):
    return stamp(label)


@up.pipeline
def inner(label: str):
    return stamp(label)


@up.pipeline(name="kfp-hourly-groups", schedule=up.Schedule(interval=3600, start="2024-01-01"))
def hourly_groups(label: str = "g"):
    return inner(label)


@up.pipeline(name="kfp-unscheduled")
def unscheduled(label: str = "u"):
    return stamp(label)


@up.pipeline(name="kfp-reserved", schedule=up.Schedule(cron="0 6 * * *"))
def reserved(unipipe_logical_date: str = "x"):
    return stamp(unipipe_logical_date)
