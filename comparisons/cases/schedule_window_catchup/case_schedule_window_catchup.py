"""A schedule with a timezone, a window and catchup; the task reads its run's logical date."""

import unipipe as up


@up.task
def stamp(label: str) -> dict:
    when = up.current().logical_date
    return {"label": label, "has_logical_date": when is not None and when.tzinfo is not None}


@up.pipeline(name="case-schedule-window-catchup",
             schedule=up.Schedule(cron="30 2 * * *", timezone="Europe/Berlin",
                                  start="2024-03-28", end="2024-04-03", catchup=True))
def pipe(label: str = "nightly"):
    return stamp(label)
