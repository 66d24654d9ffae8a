"""The seeds' Airflow ETL DAG, written in unipipe without dropping its orchestration.

The DAG in the articles reads, in Airflow::

    default_args = {"retries": 2, "retry_delay": timedelta(minutes=5),
                    "on_failure_callback": notify_slack}

    with DAG("nightly_etl", schedule="30 1 * * *", start_date=datetime(2024, 1, 1),
             catchup=False, default_args=default_args) as dag:
        extract = KubernetesPodOperator(task_id="extract", image="etl:1.4",
                                        cmds=["python3", "-c", EXTRACT],
                                        arguments=["{{ ds }}", "{{ params.staging }}"],
                                        do_xcom_push=True)
        transform = PythonOperator(task_id="transform", python_callable=transform_rows)
        branch = BranchPythonOperator(task_id="check_volume", python_callable=pick_branch)
        load_full = PythonOperator(task_id="load_warehouse", ...)
        load_sample = PythonOperator(task_id="load_sample_only", ...)
        cleanup = PythonOperator(task_id="drop_staging", python_callable=drop_staging,
                                 trigger_rule="all_done")
        extract >> transform >> branch >> [load_full, load_sample]
        [load_full, load_sample] >> cleanup

In unipipe: ``default_args`` is ``up.Defaults``; the pod step is ``up.command`` (argv, one
argument per placeholder, the output the last line it prints); the branch is ``up.when`` /
``up.otherwise``; ``trigger_rule="all_done"`` is ``run_if="all_done"``; the Slack callback is a
pipeline alert to a webhook. Each engine gets its own form of every one of them.
"""

from __future__ import annotations

import unipipe as up

# Writes the day's raw orders as JSON lines into the staging folder; prints where and how many.
EXTRACT = (
    "import json, os, random, sys\n"
    "day, staging = sys.argv[1], sys.argv[2]\n"
    "os.makedirs(staging, exist_ok=True)\n"
    "path = os.path.join(staging, 'orders-' + day + '.jsonl')\n"
    "rng = random.Random(day)\n"
    "rows = [dict(id=i, amount=rng.randint(5, 500), country=rng.choice(['DE', 'FR', 'NL']))\n"
    "        for i in range(120)]\n"
    "with open(path + '.tmp-' + str(os.getpid()), 'w') as f:\n"
    "    f.writelines(json.dumps(r) + '\\n' for r in rows)\n"
    "os.replace(f.name, path)\n"
    "print(json.dumps(dict(path=path, rows=len(rows))))\n"
)

extract = up.command("extract", command=["python3", "-c", EXTRACT, "{day}", "{staging}"],
                     image="registry.example.com/etl:1.4", timeout="15m")


@up.task
def transform(extracted: dict) -> dict:
    """Totals per country from the staged file."""
    import json

    totals: dict[str, int] = {}
    with open(extracted["path"]) as f:
        for line in f:
            row = json.loads(line)
            totals[row["country"]] = totals.get(row["country"], 0) + row["amount"]
    return {"rows": extracted["rows"], "totals": dict(sorted(totals.items()))}


@up.task
def enough_volume(summary: dict, min_rows: int) -> bool:
    return summary["rows"] >= min_rows


@up.task
def load_warehouse(summary: dict) -> str:
    return f"loaded {summary['rows']} rows into sales.daily ({len(summary['totals'])} countries)"


@up.task
def load_sample_only(summary: dict) -> str:
    return f"volume too low ({summary['rows']} rows): loaded into sales.sample"


@up.task(run_if="all_done")
def drop_staging(staging: str) -> str:
    """Runs whatever the loads ended as (Airflow's trigger_rule="all_done")."""
    import shutil

    shutil.rmtree(staging, ignore_errors=True)
    return f"dropped {staging}"


@up.pipeline(
    name="nightly-etl",
    schedule="30 1 * * *",
    defaults=up.Defaults(retry=up.Retry(max_retries=2, delay="1s")),
    alerts=[up.Alert(on=("failure",), webhook="env:ALERT_WEBHOOK_URL")],
    tags=["etl", "example"],
)
def nightly_etl(day: str = "2024-01-01", staging: str = "/tmp/unipipe-nightly-etl",
                min_rows: int = 100):
    """Extract the day's orders in a pod, total them, load them (or a sample when the volume is
    low), and drop the staging folder whatever happened."""
    extracted = extract(day=day, staging=staging)
    summary = transform(extracted)
    with up.when(enough_volume(summary, min_rows)):
        full = load_warehouse(summary)
    with up.otherwise():
        sample = load_sample_only(summary)
    drop_staging(staging).after(full, sample)
    return {"summary": summary, "loaded": full, "sample": sample}
