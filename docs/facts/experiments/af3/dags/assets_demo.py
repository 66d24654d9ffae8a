import time
import pendulum
from airflow.sdk import dag, task, Asset, Metadata, AssetOrTimeSchedule, CronTriggerTimetable

A = Asset(name="s3://bucket/a", uri="s3://bucket/a")
B = Asset(name="s3://bucket/b", uri="s3://bucket/b")
F = Asset(name="s3://bucket/f", uri="s3://bucket/f")
START = pendulum.datetime(2024, 1, 1, tz="UTC")


@dag(schedule=None, start_date=START, catchup=False)
def producer_a():
    @task(outlets=[A])
    def make_a(**context):
        context["outlet_events"][A].extra = {"rows": 10, "run": context["run_id"]}
        context["ti"].xcom_push(key="report", value={"accuracy": 0.9})
        return "ok"
    make_a()


@dag(schedule=None, start_date=START, catchup=False)
def producer_b():
    @task(outlets=[B])
    def make_b():
        yield Metadata(B, {"rows": 20})
        return "b"
    make_b()


@dag(schedule=None, start_date=START, catchup=False)
def producer_fail():
    @task(outlets=[F], retries=0)
    def make_f(**context):
        context["outlet_events"][F].extra = {"should": "not appear"}
        raise RuntimeError("boom")
    make_f()


@dag(schedule=[A], start_date=START, catchup=False, max_active_runs=1)
def consumer_a():
    @task
    def read(**context):
        evs = context["triggering_asset_events"]
        print("LOGICAL_DATE_IN_CONTEXT", "logical_date" in context, context.get("logical_date"))
        print("RUN_AFTER", context["dag_run"].run_after, "RUN_TYPE", context["dag_run"].run_type)
        for asset, events in evs.items():
            print("TRIGGERING", asset, [e.extra for e in events])
        time.sleep(25)
    read()


@dag(schedule=(A & B), start_date=START, catchup=False)
def consumer_all():
    @task
    def read(**context):
        print("TRIGGERING_ALL", {str(k): [e.extra for e in v] for k, v in context["triggering_asset_events"].items()})
    read()


@dag(schedule=F, start_date=START, catchup=False)
def consumer_f():
    @task
    def read():
        pass
    read()


@dag(schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable("30 2 * * *", timezone="Europe/Berlin"), assets=(A | B)),
     start_date=START, catchup=False)
def consumer_or_cron():
    @task
    def read():
        pass
    read()


for f in (producer_a, producer_b, producer_fail, consumer_a, consumer_all, consumer_f, consumer_or_cron):
    f()
