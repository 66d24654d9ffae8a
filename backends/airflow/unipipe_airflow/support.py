"""What the Airflow backend declares per feature and dialect: the data the matrix is built from.

Each status is proven by a test in tests/airflow/ (named in the note where it is not obvious).
"""

from __future__ import annotations

from unipipe.compiler.diagnostics import Support
from unipipe.ir.features import Feature as F
from unipipe.ir.models import Pipeline
from unipipe_airflow.dialects import Dialect

N, E, U = Support.native, Support.emulated, Support.unsupported

def support(d: Dialect) -> dict[F, Support]:
    policy = d.retry_policy
    table = {
        F.PARAMS: N("Airflow Params with JSON-schema types; read from the context inside the "
                    "task, never templated"),
        F.DATA_PASSING: N("XCom; values over 64 KiB or not JSON go through the unipipe artifact "
                          "store and XCom carries the pointer"),
        F.KEY_PATH: E("the shim selects ref['key'] from the upstream XCom value in the task"),
        F.AFTER: N("upstream >> downstream"),
        F.OTHERWISE: N("a second @task.short_circuit on the same output, its test negated "
                       "(expect=False), before the else branch"),
        F.RUN_IF_ALL_DONE: N("trigger_rule='all_done'; a watcher task (trigger_rule "
                             "'one_failed', downstream of every task) fails the run after a "
                             "failure, since Airflow lets only the leaves decide the run state"),
        F.RUN_IF_ONE_FAILED: N("trigger_rule='one_failed' (it may start before its other "
                               "upstream tasks end); the same watcher keeps the run failed"),
        F.CONDITION: N("@task.short_circuit(ignore_downstream_trigger_rules=False) before the "
                       "guarded tasks; consumers of a skipped task are skipped by all_success"),
        F.MAP: N(".partial().expand(); a literal, parameter or key-path list is produced by a "
                 "small '<task>_items' task so no item is ever templated. Difference: Airflow "
                 "skips a task mapped over an empty list (and its consumers); the reference "
                 "runs it with output []"),
        F.RETRY: N("retries"),
        F.RETRY_DELAY: N("retry_delay (exact in constant mode)"),
        F.RETRY_BACKOFF: (N("retry_policy returns the IR's exact wait as the next delay")
                          if policy else
                          E("engine retries without delay and the shim sleeps the IR wait at "
                            "the start of the next try (Airflow's exponential mode adds a hash "
                            "jitter)")),
        F.RETRY_MAX_DELAY: (N("retry_policy caps the wait (Airflow caps only in exponential "
                              "mode)") if policy else
                            E("part of the wait the shim sleeps")),
        F.RETRY_JITTER: (N("retry_policy lengthens the wait by up to jitter times itself")
                         if policy else
                         E("native constant delay, the shim sleeps the random extra")),
        F.RETRY_EXCEPTION_FILTER: (N("retry_policy (fail_on wins, retry_on lists the only "
                                     "retried types); for a pod task the policy reads the "
                                     "verdict the shim in the pod wrote to the artifact store")
                                   if policy else
                                   N("the adapter raises AirflowFailException for an error the "
                                     "filter does not retry; refused for pod tasks (the worker "
                                     "sees only the pod's exit status)")),
        F.CACHE: E("Airflow has no task cache; the shim looks up and stores results"),
        F.CACHE_EXPIRE: E("checked by the shim on read"),
        F.CACHE_KEY_FN: E("called by the shim"),
        F.TIMEOUT: (N("execution_timeout") if policy else
                    N("execution_timeout; when the shim sleeps the retry wait, the shim times "
                      "the user function instead so the wait does not count")),
        F.RESOURCES: N("@task.kubernetes (cncf.kubernetes provider) with a pod template; local "
                       "runs (`dags test`) run the task in-process without the pod"),
        F.RESOURCES_GPU: N("limits nvidia.com/gpu (or the resource named by gpu_type)"),
        F.IMAGE: N("@task.kubernetes(image=...)"),
        F.ALERT_FAILURE: N("on_failure_callback: once, after the last try"),
        F.ALERT_RETRY: N("on_retry_callback: after each try that will be retried"),
        F.ALERT_SUCCESS: N("on_success_callback (a cache hit counts)"),
        F.ALERT_WEBHOOK: E("delivered by unipipe.runtime.alerts from the Airflow callback"),
        F.ALERT_EMAIL: E("delivered by unipipe.runtime.alerts (SMTP) from the Airflow callback"),
        F.ALERT_CALLBACK: E("called by unipipe.runtime.alerts from the Airflow callback"),
        F.PIPELINE_ALERT: N("DAG-level on_failure_callback / on_success_callback"),
        F.SCHEDULE_CRON: N("schedule='<cron>' with the schedule's timezone on start_date"),
        F.SCHEDULE_INTERVAL: N("schedule=timedelta(...)"),
        F.SHARED_STORE: E("the store URL is compiled into each task spec; the shim keeps values "
                          "over 64 KiB (XCom holds a pointer), cache entries and markers there"),
        F.COMMAND: E("an ordinary @task (@task.kubernetes with an image on the kubernetes "
                     "executor) whose body has the shim run the argv as a subprocess, no shell. "
                     "Not @task.bash: it runs `bash -c <one string>` and its bash_command is a "
                     "Jinja template field, so a hostile value would be shell and template code "
                     "(providers/standard/operators/bash.py ~207-236). Not KubernetesPodOperator: "
                     "cmds/arguments are template fields too and its XCom is only "
                     "/airflow/xcom/return.json, never the program's stdout "
                     "(providers/cncf/kubernetes/operators/pod.py ~198, ~248, ~593)"),
        F.MAP_MAX_PARALLEL: N("max_active_tis_per_dagrun on the mapped task: the scheduler "
                              "queues no more of its instances in one DAG run "
                              "(jobs/scheduler_job_runner.py ~919)"),
        F.MAX_ACTIVE_RUNS: N("DAG(max_active_runs=N): a further run waits queued"),
        F.PIPELINE_RETRY: U("Airflow has no retry of a DAG run: a DAG takes no retries (only "
                            "tasks do, sdk/definitions/dag.py ~382-520), a failed run stays "
                            "failed until a person clears it, and a new run is another logical "
                            "date, not a retry; refused before writing"),
        F.PIPELINE_TIMEOUT: E("the shim ends a running try at the DAG run's start + timeout "
                              "(killing its process) and fails it without retrying, and a task "
                              "that would start later fails at once; DAG(dagrun_timeout="
                              "timeout + 30s) is the scheduler's backstop for tasks that never "
                              "started. Not dagrun_timeout alone: only the scheduler enforces "
                              "it, never `airflow dags test`, and it marks the running tasks "
                              "skipped (jobs/scheduler_job_runner.py ~2853)"),
        F.SUBPIPELINE: N("a TaskGroup per sub-pipeline (`with TaskGroup(id, prefix_group_id="
                         "False, tooltip=doc)`, nested as called), shown collapsed in the UI; "
                         "prefix_group_id=False keeps task ids equal to the IR's "
                         "(sdk/definitions/taskgroup.py ~463 child_id)"),
        F.SUBPIPELINE_RETRY: U("Airflow has no retry of a TaskGroup within a DAG run: a "
                               "TaskGroup takes no retries (its fields: sdk/definitions/"
                               "taskgroup.py ~128-154; 2.11 utils/task_group.py ~101), only "
                               "tasks retry, and trying a group's finished tasks again means "
                               "clearing them by hand; refused before writing"),
        F.SUBPIPELINE_ALERT: E("a TaskGroup takes no callbacks, so one task per group with "
                               "alerts (<group>__unipipe_alerts, in the group, trigger_rule "
                               "all_done after every member) reads the members' states in the "
                               "run and delivers failure or success once through "
                               "unipipe.runtime.alerts; the watcher keeps the run's state"),
        F.SUBPIPELINE_MAP: N("a mapped task group: a @task_group function holding the "
                             "members' calls, called as <group>.partial(...).expand(<param>="
                             "<items>) (MappedTaskGroup, sdk/definitions/taskgroup.py ~734; "
                             "2.11 decorators/task_group.py ~131); every member gets one task "
                             "instance per item (task[i] is map index i), reads the same copy's "
                             "XCom and waits for its own copy only (ti_deps/deps/"
                             "trigger_rule_dep.py ~165-245), and a task outside reads the list "
                             "of all copies. max_parallel=N is max_active_tis_per_dagrun=N on "
                             "each member (a mapped task group has no limit of its own): at "
                             "most N copies of each task run at once, so copies at different "
                             "tasks may overlap beyond N; only the real scheduler enforces it "
                             "(`dags test` runs one task at a time). Difference: no items "
                             "skip the group's tasks and their consumers (reference: success, "
                             "[])"),
        F.SCHEDULE_WINDOW: N("DAG(start_date=, end_date=) in the schedule's timezone, with "
                             "CronTriggerTimetable(cron, timezone=tz): the scheduler creates "
                             "runs at fire times in the window, each with the fire time as "
                             "logical date (read by up.current().logical_date). Difference: on "
                             "the fall-back day Airflow fires a repeated wall time at its "
                             "second occurrence (02:30 CET), the reference at its first (02:30 "
                             "CEST) (timetables/_cron.py _get_next; tested against "
                             "unipipe.schedules.fire_times). A manual `dags test` run after "
                             "the window's end stands for the end (Airflow runs no task "
                             "whose logical date is after end_date: ti_deps/deps/"
                             "runnable_exec_date_dep.py ~47-60)"),
        F.SCHEDULE_CATCHUP: N("DAG(catchup=...) written explicitly (the default is False on "
                              "3.3 and True on 2.11); `unipipe backfill --backend airflow` "
                              "uses Airflow's own backfill"
                              + (" (POST /api/v2/backfills run by a real scheduler with "
                                 "use_job_schedule off, at most --max-active runs at once)"
                                 if d.major >= 3 else " (`airflow dags backfill -s -e`, "
                                 "in-process with the SequentialExecutor: one task at a "
                                 "time whatever --max-active says)")
                              + ". A backfill window where the DAG's timetable fires other "
                                "times than the reference (the fall-back day) is refused "
                                "before anything is created"),
        F.ASSET_PRODUCES: N(("@task(outlets=[Asset(name=uri, uri=uri)])" if d.major >= 3 else
                             "@task(outlets=[Dataset(uri)])")
                            + ": Airflow records an asset event only when the try succeeds "
                              "(a failed task triggers nothing). The event reaches "
                              "consumers only under a real scheduler (mode='scheduler'; "
                              "`airflow dags test` writes it but starts no consumer run)"),
        F.TRIGGER_ASSET: N(("schedule=AssetAll(...) (AssetOrTimeSchedule with a cron)"
                            if d.major >= 3 else
                            "schedule=DatasetAll(...) (DatasetOrTimeSchedule with a cron)")
                           + ". Differences: events queued for one consumer collapse into one "
                             "run (the queue keeps one row per asset and consumer: models/"
                             "asset.py ~748; measured: 3 producer runs while the consumer "
                             "(max_active_runs=1) was busy gave 2 consumer runs); 'all' waits "
                             "without a time limit and consumes every event since the last "
                             "run; a paused consumer misses events; an asset-triggered run "
                             "has no logical date on 3.3, so up.current().logical_date is its "
                             "run_after (the newest queued event's time)"),
        F.TRIGGER_ANY: N("schedule=AssetAny(...)" if d.major >= 3 else
                         "schedule=DatasetAny(...)"),
        F.ARTIFACTS: E("Airflow moves no files between tasks (an Asset is a scheduling signal, "
                       "not a file): the shim uploads each output to the unipipe store, "
                       "content-addressed, and a consumer reads it by the producer's record in "
                       "the same DAG run (the DAG orders consumer after producer with >>). "
                       "Airflow keeps each task's artifacts as the XCom 'unipipe_artifacts' "
                       "({name: {type, uri, sha256, size}}, pushed with ti.xcom_push: "
                       "sdk/execution_time/task_runner.py ~625; 2.11 models/taskinstance.py), "
                       "shown in the task instance's XCom tab and read back from the xcom "
                       "table. A pod task (@task.kubernetes) pushes no custom XCom (only "
                       "/airflow/xcom/return.json), so its record stays in the store only"),
        F.METRICS: E("up.log_metric and Output[Metrics] go to the XCom 'unipipe_metrics' "
                     "({name: number}) of the successful try; a failed try pushes nothing"),
        F.REPORT: E("up.report's Markdown goes to the XCom 'unipipe_report' (Airflow has no "
                    "per-run Markdown artifact; a task's doc_md is static)"),
        F.PACKAGES: E("the environment's requirements: `unipipe deploy --to mwaa|composer` "
                      "adds every task's packages to the environment's requirements.txt / "
                      "PyPI packages, and the shim checks them before the task runs and fails "
                      "it at once (PackagesMissing, not retried) when the worker lacks one. "
                      "No per-task install: not @task.virtualenv, which builds a venv on "
                      "every try without venv_cache_path "
                      "(providers/standard/operators/python.py ~1040-1058)"),
    }
    missing = set(F) - set(table)
    if missing:  # pragma: no cover - a new feature must be declared here
        raise AssertionError(f"undeclared features: {sorted(f.value for f in missing)}")
    return {f: table[f] for f in F}


#: Why a Celery (or local) executor cannot honour a task's resources or image. The rule: such a
#: task compiles to an ordinary @task (never @task.kubernetes, which needs a cluster MWAA and
#: Composer's Celery workers do not have), with no queue= or pool=: MWAA's and Composer's workers
#: all consume the one default Celery queue (a queue no worker serves leaves the task queued
#: forever), and a pool caps how many tasks run at once, not how big a worker is. Worker size
#: is the environment's (MWAA environment class, Composer workloads config), so every task with
#: resources/image gets a warning diagnostic naming what is not honoured; compile prints it and
#: the deploy plan lists it before any upload.
EXECUTOR_REASON = {
    "celery": "the Celery executor runs it on the environment's shared workers (no pod; worker "
              "size is the environment's: MWAA environment class, Composer workloads config)",
    "local": "the local executor runs it in the scheduler's machine (no pod)",
}


def executor_notes(ir: Pipeline, executor: str) -> list[tuple[F, str]]:
    """(feature, message) for each task whose resources/image the executor does not honour."""
    if executor == "kubernetes":
        return []
    out: list[tuple[F, str]] = []
    for t in ir.tasks:
        pol = ir.effective(t)
        res = pol.resources
        if res is not None and (res.cpu or res.memory):
            asked = ", ".join(f"{k}={v}" for k, v in (("cpu", res.cpu), ("memory", res.memory)) if v)
            out.append((F.RESOURCES, f"task {t.id!r} asks for {asked}: NOT honoured, "
                                     f"{EXECUTOR_REASON[executor]}"))
        if res is not None and res.gpu:
            out.append((F.RESOURCES_GPU, f"task {t.id!r} asks for {res.gpu} GPU"
                                         f"{' (' + res.gpu_type + ')' if res.gpu_type else ''}: NOT "
                                         f"honoured, {EXECUTOR_REASON[executor]}"))
        if pol.image is not None:
            out.append((F.IMAGE, f"task {t.id!r} asks for image {pol.image!r}: NOT honoured, "
                                 f"{EXECUTOR_REASON[executor]}; it runs in the workers' own "
                                 "environment"))
    return out
