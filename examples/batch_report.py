"""A nightly batch report whose steps are programs in their own images, written with up.command.

This is the shape of the seeds' KubernetesPodOperator DAGs: every step a container started with
an image and an argv, the steps wired by arguments. In Airflow it would read::

    extract = KubernetesPodOperator(
        task_id="extract", image="python:3.11-slim", cmds=["python3", "-c", EXTRACT],
        arguments=["--day", "{{ params.day }}", "--out", "{{ params.folder }}"],
        do_xcom_push=True,  # the container must write /airflow/xcom/return.json itself
    )
    count = KubernetesPodOperator(
        task_id="count_rows", image="busybox:1.36", cmds=["wc"],
        arguments=["-l", "{{ ti.xcom_pull('extract')['path'] }}"],
    )

With ``up.command`` each step is the same argv, a placeholder per input: no Jinja (a value is
never a template or shell code), the output is the last line the program prints (JSON, else
text), and retries, timeouts and alerts are the policies of any unipipe task, on every backend.

The steps share files through ``folder``: one machine here; on a cluster a volume every pod
mounts (or a store URL the programs understand). Every step runs in one image holding python3,
coreutils and unipipe (on Airflow's kubernetes executor and on KFP the unipipe runtime starts the
program inside the pod; ``unipipe compile --dockerfile`` writes such an image's Dockerfile).
"""

from __future__ import annotations

import unipipe as up

# Writes one CSV of generated sales for a day and prints where it is and how many rows it has.
EXTRACT = (
    "import csv, json, os, random, sys\n"
    "day, folder = sys.argv[1], sys.argv[2]\n"
    "os.makedirs(folder, exist_ok=True)\n"
    "path = os.path.join(folder, 'sales-' + day + '.csv')\n"
    "rng = random.Random(day)\n"
    "rows = [(i, rng.choice(['north', 'south', 'east']), rng.randint(1, 100)) for i in range(50)]\n"
    "with open(path + '.tmp-' + str(os.getpid()), 'w', newline='') as f:\n"
    "    w = csv.writer(f)\n"
    "    w.writerow(['id', 'region', 'amount'])\n"
    "    w.writerows(rows)\n"
    "os.replace(f.name, path)  # whole or not at all, for a reader on another machine\n"
    "print('extracted', len(rows), 'rows', file=sys.stderr)\n"
    "print(json.dumps(dict(path=path, rows=len(rows), total=sum(r[2] for r in rows))))\n"
)

IMAGE = "registry.example.com/batch-report:1.0"

extract = up.command("extract", command=["python3", "-c", EXTRACT, "{day}", "{folder}"],
                     retries=2, timeout="10m")
count_rows = up.command("count_rows", command=["wc", "-l", "{path}"], timeout="1m")
checksum = up.command("checksum", command=["sha256sum", "{path}"], env={"LC_ALL": "C"},
                      timeout="1m")


@up.task
def summarize(extracted: dict, counted: str, digest: str) -> dict:
    """Check the programs agree (a header line plus one line per row) and report."""
    lines = int(counted.split()[0])
    if lines != extracted["rows"] + 1:
        raise ValueError(f"wc counted {lines} lines for {extracted['rows']} rows")
    return {"rows": extracted["rows"], "total": extracted["total"],
            "sha256": digest.split()[0]}


@up.pipeline(name="batch-report", schedule="0 3 * * *", defaults=up.Defaults(image=IMAGE))
def batch_report(day: str = "2024-01-01", folder: str = "/tmp/unipipe-batch-report"):
    extracted = extract(day=day, folder=folder)
    counted = count_rows(path=extracted["path"])
    digest = checksum(path=extracted["path"])
    return summarize(extracted, counted, digest)
