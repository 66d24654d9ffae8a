"""Runtime shim overhead per task attempt on each real engine: unipipe against the same task
written natively (issue 8: "Runtime shim overhead per task attempt vs the same task without
unipipe, on each backend. Goal: < 5 ms").

    uv run python comparisons/perf/shim_engines.py [--quick]

For each engine a chain of K trivial tasks (body ``x + 1``; K=20, quick: 5) runs twice per round:

- ``unipipe``: comparisons/perf/shim_native/chain_unipipe.py, compiled and run on the engine as
  ``up.run(pipeline, backend=...)`` runs it;
- ``native``: the same chain written by hand for the engine (comparisons/perf/shim_native/):
  an Airflow 3 TaskFlow DAG run by ``airflow dags test`` in the same kind of isolated home (the
  Airflow backend's own ``engine.prepare``-style home, template DB and ``dags_test``); a plain
  Prefect ``@flow``/``@task`` run against the same local ``prefect server start``; a KFP
  ``@dsl.component``/``@dsl.pipeline`` compiled by kfp and run by the same unipipe executor
  (``unipipe_kubeflow.executor.SpecExecutor``, which runs any compiled PipelineSpec).

Each task's duration comes from the engine's own records: Airflow's ``task_instance``
start/end in its metadata DB, Prefect's task-run ``start_time``/``end_time`` from the API, and
the KFP executor's launch start/end (the component subprocess's wall time). The overhead is
the difference of the medians (and of the p90s) of the per-task durations, pooled over rounds;
the per-round difference of medians shows how noisy that is. Prefect runs twice for unipipe:
with the attempt in a forked child (default; so timeouts and SIGKILL behave as on the reference
runner) and with ``UNIPIPE_PREFECT_ISOLATION=inline``. Writes shim_engines.json and .md here.

That difference of two noisy engine records cannot resolve a few ms on a shared machine, so the
rows where the attempt is a process of its own (``airflow-scheduler``: Airflow's task-runner
process; ``kubeflow``: the component's process) also time the shim from inside the attempt
(issue 16): the unipipe runs set ``UNIPIPE_SHIM_TIMING`` and every attempt records, with
``time.perf_counter`` in its own process, the adapter module's import, its entry point from
first statement to return (importing the shim and the task's module, calling the user
function) and the user function's call; the shim's own time is the first two minus the third
(unipipe/runtime/timing.py). :func:`import_costs` adds what a fresh process pays to import the
shim and the task module, bare and with Airflow's task runner or KFP's executor loaded first.

    --only ENGINE    measure one engine again, keep the others' recorded figures
    --rounds N       rounds per engine (default 3; --quick: 1)
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
NATIVE = HERE / "shim_native"
ROOT = HERE.parents[1]
GOAL_MS = 5.0


# ---------------------------------------------------------------- figures


def _p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]


def summary(seconds: list[float]) -> dict[str, Any]:
    ms = [s * 1000 for s in seconds]
    return {"n": len(ms), "median_ms": round(statistics.median(ms), 2),
            "p90_ms": round(_p90(ms), 2), "mean_ms": round(statistics.fmean(ms), 2),
            "min_ms": round(min(ms), 2), "max_ms": round(max(ms), 2)}


def compare(unipipe_rounds: list[list[float]], native_rounds: list[list[float]]) -> dict[str, Any]:
    """Per-task durations in chain order, one list per round. The first task of every chain is
    left out of the figures (Airflow's ``dags test`` spends seconds of start-up in it, on both
    sides) and reported on its own."""
    uni = summary([s for r in unipipe_rounds for s in r[1:]])
    nat = summary([s for r in native_rounds for s in r[1:]])
    per_round = [round(1000 * (statistics.median(u[1:]) - statistics.median(n[1:])), 2)
                 for u, n in zip(unipipe_rounds, native_rounds)]
    over = round(uni["median_ms"] - nat["median_ms"], 2)
    return {"unipipe": uni, "native": nat, "overhead_median_ms": over,
            "overhead_p90_ms": round(uni["p90_ms"] - nat["p90_ms"], 2),
            "overhead_per_round_ms": per_round, "goal_met": over < GOAL_MS,
            "first_task_ms": {"unipipe": [round(1000 * r[0], 2) for r in unipipe_rounds],
                              "native": [round(1000 * r[0], 2) for r in native_rounds]},
            "durations_ms": {"unipipe": [[round(1000 * x, 2) for x in r] for r in unipipe_rounds],
                             "native": [[round(1000 * x, 2) for x in r] for r in native_rounds]}}


def _ts(value: Any) -> float:
    """An engine timestamp (ISO text or SQLite TIMESTAMP) as epoch seconds."""
    text = str(value).replace("Z", "+00:00")
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:

        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


# ---------------------------------------------------------------- isolation


@contextmanager
def isolated(tmp: Path) -> Iterator[None]:
    """Every store, cache and engine home in ``tmp`` (the migrated Airflow DB template comes
    from the repository's git-ignored .cache/, as the Airflow tests take it).

    Engine and task processes may write bytecode caches (under ``tmp/pycache``), as an
    installed deployment has them: this machine's environment sets PYTHONDONTWRITEBYTECODE
    and uv installs without .pyc files, so every fresh process would otherwise compile the
    sources it imports (see :func:`import_costs`)."""
    saved = dict(os.environ)
    for key in [k for k in os.environ if k.startswith(("PREFECT_", "AIRFLOW", "UNIPIPE_"))]:
        del os.environ[key]
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
    os.environ.update({
        "XDG_CACHE_HOME": str(tmp / "xdg"),
        "UNIPIPE_CACHE_URL": str(tmp / "unipipe-cache"),
        "UNIPIPE_ARTIFACT_URL": str(tmp / "unipipe-artifacts"),
        "UNIPIPE_AIRFLOW_CACHE": str(ROOT / ".cache" / "airflow-db"),
        "PREFECT_HOME": str(tmp / "prefect-home-bench"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    })
    if str(NATIVE) not in sys.path:
        sys.path.insert(0, str(NATIVE))
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def unipipe_chain(k: int, plain: bool = False) -> Any:
    """The chain's IR; ``plain`` points every task at ``plain_steps:step`` (a module without
    ``import unipipe``), to tell the shim's own cost from importing the authoring layer."""
    import chain_unipipe
    import plain_steps  # noqa: F401 - imported so up.run's search path finds its folder

    from unipipe.api import load

    ir = load(chain_unipipe.pipeline(k))
    if not plain:
        return ir
    tasks = type(ir.tasks)(t.model_copy(update={"fn": "plain_steps:step"}) for t in ir.tasks)
    return ir.model_copy(update={"name": f"shim-plain-{k}", "tasks": tasks})


# ---------------------------------------------------------------- Airflow


def _airflow_tis(db: Path, dag_id: str, k: int) -> list[float]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        run = con.execute("SELECT run_id, state FROM dag_run WHERE dag_id = ? ORDER BY id DESC "
                          "LIMIT 1", (dag_id,)).fetchone()
        if run is None or run[1] != "success":
            raise RuntimeError(f"Airflow run of {dag_id}: {run}")
        rows = con.execute("SELECT task_id, start_date, end_date, state, try_number FROM "
                           "task_instance WHERE dag_id = ? AND run_id = ?",
                           (dag_id, run[0])).fetchall()
    if len(rows) != k or any(r[3] != "success" or r[4] != 1 for r in rows):
        raise RuntimeError(f"Airflow run of {dag_id}: unexpected task instances {rows}")
    spans = sorted((_ts(start), _ts(end)) for _, start, end, _, _ in rows)
    return [end - start for start, end in spans]  # in chain order


def airflow_unipipe(k: int, work: Path, plain: bool = False) -> list[float]:
    import unipipe as up

    ir = unipipe_chain(k, plain)
    result = up.run(ir, backend="airflow", params={"start": 0}, workdir=work)
    if result.state != "success" or result.output != k:
        raise RuntimeError(f"unipipe on Airflow: {result.state} {result.output} {result.error}")
    return _airflow_tis(work / "airflow" / "airflow.db", ir.name, k)


#: engine -> one list of in-attempt timing records (unipipe/runtime/timing.py) per timed round
SHIM_TIMING: dict[str, list[list[dict[str, Any]]]] = {}


@contextmanager
def shim_timing(engine: str, work: Path) -> Iterator[None]:
    """Attempts started inside record their shim time (``UNIPIPE_SHIM_TIMING``); the records of
    a timed round (not the warm-up) go to ``SHIM_TIMING[engine]``."""
    folder = work / "shim-timing"
    os.environ["UNIPIPE_SHIM_TIMING"] = str(folder)
    try:
        yield
    finally:
        os.environ.pop("UNIPIPE_SHIM_TIMING", None)
    if "warmup" not in work.name:
        path = folder / "timing.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        SHIM_TIMING.setdefault(engine, []).append([json.loads(ln) for ln in lines if ln])


def airflow_unipipe_scheduler(k: int, work: Path) -> list[float]:
    """The chain under Airflow's real scheduler (``airflow standalone``, LocalExecutor): each
    try is a task-runner process of Airflow's own, and the shim runs the task in it."""
    import unipipe as up

    ir = unipipe_chain(k)
    with shim_timing("airflow-scheduler", work):
        result = up.run(ir, backend="airflow", mode="scheduler", params={"start": 0},
                        workdir=work)
    if result.state != "success" or result.output != k:
        raise RuntimeError(f"unipipe on Airflow's scheduler: {result.state} {result.output} "
                           f"{result.error}")
    return _airflow_tis(work / "airflow" / "airflow.db", ir.name, k)


def airflow_native(k: int, work: Path, scheduler: bool = False) -> list[float]:
    from unipipe_airflow.engine import Home, base_env, dags_test, template_db
    from unipipe_airflow.server import run_on_scheduler

    root = work / "airflow"
    dags = root / "dags"
    dags.mkdir(parents=True)
    shutil.copyfile(template_db(), root / "airflow.db")
    shutil.copyfile(NATIVE / "airflow_native_chain.py", dags / "native_chain.py")
    env = base_env(root, dags)
    env["SHIM_CHAIN_K"] = str(k)
    home = Home(root, dags, env, f"native-chain-{k}", work / "trace")
    if scheduler:
        run_on_scheduler(home, {"start": 0}, timeout=1800)
    else:
        dags_test(home, {"start": 0}, timeout=1800)
    return _airflow_tis(home.db, home.dag_id, k)


# ---------------------------------------------------------------- Prefect


def _prefect_task_runs(api_url: str, flow_run_id: str, k: int, settle: float = 60.0) -> list[float]:
    """Task-run start/end as the API records them (state events land asynchronously: wait)."""
    body = json.dumps({"flow_runs": {"id": {"any_": [flow_run_id]}},
                       "sort": "EXPECTED_START_TIME_ASC"}).encode()
    deadline = time.monotonic() + settle
    while True:
        req = urllib.request.Request(f"{api_url}/task_runs/filter", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            runs = json.loads(resp.read())
        done = [r for r in runs if r.get("state_type") == "COMPLETED" and r.get("start_time")
                and r.get("end_time")]
        if len(done) == k == len(runs):
            spans = sorted((_ts(r["start_time"]), _ts(r["end_time"])) for r in runs)
            return [end - start for start, end in spans]  # in chain order
        if time.monotonic() > deadline:
            raise RuntimeError(f"Prefect flow run {flow_run_id}: {len(done)}/{len(runs)} of {k} "
                               "task runs completed with times")
        time.sleep(0.3)


def prefect_unipipe(k: int, work: Path, api_url: str, isolation: str,
                    plain: bool = False) -> list[float]:
    import pickle

    import unipipe as up

    os.environ["UNIPIPE_PREFECT_ISOLATION"] = isolation
    try:
        run_id = f"shim-{isolation}-{work.name}"
        result = up.run(unipipe_chain(k, plain), backend="prefect", params={"start": 0},
                        workdir=work, run_id=run_id)
    finally:
        os.environ.pop("UNIPIPE_PREFECT_ISOLATION", None)
    if result.state != "success" or result.output != k:
        raise RuntimeError(f"unipipe on Prefect: {result.state} {result.output} {result.error}")
    with open(work / f"{run_id}.report.pickle", "rb") as fh:
        flow_run_id = pickle.load(fh)["flow_run_id"]
    return _prefect_task_runs(api_url, flow_run_id, k)


def prefect_native(k: int, work: Path, api_url: str) -> list[float]:
    work.mkdir(parents=True, exist_ok=True)
    # the settings the Prefect backend gives its flow process (unipipe_prefect.backend.run_env)
    env = {k_: v for k_, v in os.environ.items() if not k_.startswith("PREFECT_")}
    env.update({"PREFECT_API_URL": api_url, "PREFECT_HOME": str(work / "prefect-home"),
                "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(work / "prefect-results"),
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "WARNING"})
    proc = subprocess.run([sys.executable, str(NATIVE / "prefect_native_chain.py"), str(k)],
                          env=env, cwd=work, capture_output=True, text=True, timeout=1800,
                          stdin=subprocess.DEVNULL)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("FLOW-RUN ")), None)
    if line is None or not line.endswith(" COMPLETED"):
        raise RuntimeError(f"native Prefect flow failed:\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}")
    return _prefect_task_runs(api_url, line.split()[1], k)


# ---------------------------------------------------------------- KFP


def _launch_times(record: Any, k: int) -> list[float]:
    if record.state != "SUCCEEDED":
        raise RuntimeError(f"KFP run {record.run_id}: {record.state}")
    launches = [lc for exe in record.executions for lc in exe.launches]
    if len(launches) != k or any(lc.exit_code != 0 for lc in launches):
        raise RuntimeError(f"KFP run {record.run_id}: {len(launches)} launches for {k} tasks")
    return [lc.end - lc.start for lc in launches]


def kubeflow_unipipe(k: int, work: Path, plain: bool = False) -> list[float]:
    """What ``Backend.run`` -> ``Backend._run_local`` does (unipipe_kubeflow/backend.py), spelled
    out so the executor's launch records are at hand (``up.run`` returns only the RunResult)."""
    from unipipe_kubeflow.backend import kfp_arguments
    from unipipe_kubeflow.executor import SpecExecutor
    from unipipe_kubeflow.results import build_result

    from unipipe.api import search_path
    from unipipe.compiler.driver import compile_ir
    from unipipe.params import resolve_params

    ir = unipipe_chain(k, plain)
    values = resolve_params(ir, {"start": 0})
    run_id = f"shim-{work.name}"
    compiled = compile_ir(ir, "kubeflow", work / "build")
    yaml_path = next(p for p in compiled.paths if p.suffix == ".yaml")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [*search_path(ir), *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]])
    env["UNIPIPE_TRACE_DIR"] = str(work / "trace")
    env.pop("UNIPIPE_KFP_ATTEMPT", None)
    if not plain:
        env["UNIPIPE_SHIM_TIMING"] = str(work / "shim-timing")
    record = SpecExecutor(yaml_path, pipeline_root=work / "root", run_id=run_id, env=env).run(
        kfp_arguments(ir, values))
    if not plain and "warmup" not in work.name:
        path = work / "shim-timing" / "timing.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        SHIM_TIMING.setdefault("kubeflow", []).append([json.loads(ln) for ln in lines if ln])
    result = build_result(ir, record, values, trace_dir=env["UNIPIPE_TRACE_DIR"])
    if result.state != "success" or result.output != k:
        raise RuntimeError(f"unipipe on KFP: {result.state} {result.output} {result.error}")
    return _launch_times(record, k)


def kubeflow_native(k: int, work: Path) -> list[float]:
    import kfp_native_chain
    from kfp import compiler
    from unipipe_kubeflow.executor import SpecExecutor

    work.mkdir(parents=True, exist_ok=True)
    yaml_path = work / f"native-chain-{k}.yaml"
    compiler.Compiler().compile(kfp_native_chain.pipeline(k), str(yaml_path))
    record = SpecExecutor(yaml_path, pipeline_root=work / "root", run_id=f"native-{work.name}",
                          env=dict(os.environ)).run({"start": 0})
    last = record.executions[-1].outputs.get("Output")
    if last != k:
        raise RuntimeError(f"native KFP chain returned {last!r}, not {k}")
    return _launch_times(record, k)


# ---------------------------------------------------------------- driver


def _rounds(kinds: dict[str, Callable[[Path], list[float]]], rounds: int, tmp: Path,
            label: str) -> dict[str, list[list[float]]]:
    """``rounds`` runs of every kind, the order rotated each round (load changes on the shared
    machine then hit every kind alike)."""
    out: dict[str, list[list[float]]] = {k: [] for k in kinds}
    names = list(kinds)
    for name in names:  # untimed: fills the bytecode caches
        kinds[name](tmp / f"{label}-{name}-warmup")
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            started = time.monotonic()
            out[name].append(kinds[name](tmp / f"{label}-{name}-{r}"))
            print(f"{label:8s} round {r} {name:16s} {time.monotonic() - started:6.1f} s "
                  f"median {1000 * statistics.median(out[name][-1]):8.2f} ms", flush=True)
    return out


_IMPORT_PROBE = """
import sys, time
if sys.argv[1:]:
    __import__(sys.argv[1])  # what the attempt's process has loaded before the shim runs
t0 = time.perf_counter()
import unipipe.runtime.invoke, unipipe.runtime.loading
t1 = time.perf_counter()
before = set(sys.modules)
unipipe.runtime.loading.import_object("chain_unipipe:step")
t2 = time.perf_counter()
added = sorted(m for m in set(sys.modules) - before if not m.startswith("_"))
unipipe.runtime.loading.import_object("plain_steps:step")
t3 = time.perf_counter()
print((t1 - t0) * 1000, (t2 - t1) * 1000, (t3 - t2) * 1000)
print(" ".join(added))
"""

#: what each attempt process has loaded before the shim runs, for :func:`import_costs`
PRELOADS = {"bare interpreter": None,
            "Airflow task runner loaded": "airflow.sdk.execution_time.task_runner",
            "KFP executor loaded": "kfp.dsl.executor"}


def import_costs(tmp: Path, repeats: int) -> dict[str, Any]:
    """What a fresh task process pays to import the runtime shim and the task's module (as the
    runtime imports it), with and without bytecode caches; median ms of ``repeats`` runs. With
    bytecode caches, also in a process that has Airflow's task runner or KFP's executor loaded
    (the attempt processes of those engines), with the modules the task module's import adds."""
    out: dict[str, Any] = {}
    variants = [("with bytecode cache", True, None), ("without bytecode cache", False, None)]
    variants += [(f"with bytecode cache, {name}", True, mod) for name, mod in PRELOADS.items()
                 if mod is not None]
    for label, cached, preload in variants:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(NATIVE), *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]]))
        if cached:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache-probe")
        else:  # the caches that exist (the interpreter's standard library) are still read
            env["PYTHONDONTWRITEBYTECODE"] = "1"
            env.pop("PYTHONPYCACHEPREFIX", None)
        samples, added = [], ""
        for i in range(repeats + (1 if cached else 0)):
            proc = subprocess.run([sys.executable, "-c", _IMPORT_PROBE, *filter(None, [preload])],
                                  env=env, cwd=tmp, capture_output=True, text=True, timeout=120,
                                  check=True)
            if cached and i == 0:
                continue  # the run that writes the caches
            first, _, added = proc.stdout.partition("\n")
            samples.append([float(x) for x in first.split()])
        out[label] = {name: round(statistics.median(s[j] for s in samples), 1) for j, name in
                      enumerate(("shim_ms", "task_module_ms", "plain_module_ms"))}
        out[label]["task_module_adds"] = added.split()
        out[label]["per_run_task_module_ms"] = [round(s[1], 1) for s in samples]
    return out


def code_state() -> dict[str, Any]:
    """The commit measured, and files of the core and backends changed in the working tree
    (other people commit to this repository while benchmarks run)."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                                  timeout=30).stdout.rstrip("\n")
        except OSError:
            return ""

    dirty = git("status", "--porcelain", "--", "unipipe", "backends").splitlines()
    return {"commit": git("rev-parse", "HEAD"), "uncommitted": [ln[3:] for ln in dirty]}


def run(quick: bool = False, only: str | None = None,
        rounds: int | None = None) -> dict[str, Any]:
    from importlib.metadata import version

    k = 5 if quick else 20
    rounds = rounds or (1 if quick else 3)
    figures: dict[str, Any] = {
        "tasks_per_chain": k, "rounds": rounds, "goal_ms": GOAL_MS, "cpus": os.cpu_count(),
        "versions": {n: version(n) for n in ("apache-airflow", "prefect", "kfp")},
        "recorded": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()], "code": code_state(),
        "engines": {}, "errors": {}}
    with tempfile.TemporaryDirectory(prefix="unipipe-shim-engines-") as tmp_name:
        tmp = Path(tmp_name)
        with isolated(tmp):
            figures["import_costs"] = import_costs(tmp, 3 if quick else 7)
            engines: dict[str, Callable[[], dict[str, Any]]] = {
                "airflow": lambda: _airflow(k, rounds, tmp),
                "airflow-scheduler": lambda: _airflow_scheduler(k, rounds, tmp),
                "prefect": lambda: _prefect(k, rounds, tmp),
                "kubeflow": lambda: _kubeflow(k, rounds, tmp),
            }
            for name, bench in engines.items():
                if only is not None and name != only:
                    continue
                try:
                    figures["engines"][name] = bench()
                except Exception as exc:  # noqa: BLE001 - recorded, the other engines go on
                    figures["errors"][name] = f"{type(exc).__name__}: {str(exc)[:1500]}"
                    print(f"{name} failed: {figures['errors'][name]}", flush=True)
    figures["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    figures["markdown"] = markdown(figures)
    return figures


LABELS = {
    "fork": "attempt in a forked child (default)",
    "fork-always": "`dags test`: attempt in a forked child of the run's process",
    "scheduler": "real scheduler: attempt in Airflow's own task process (no fork)",
    "inline": "attempt inline (`UNIPIPE_PREFECT_ISOLATION=inline`)",
    "process": "attempt in the component's own process (as native)",
    "plain": "same, task module without `import unipipe` (attribution only)",
}


def _modes(runs: dict[str, list[list[float]]], pairs: dict[str, str]) -> dict[str, Any]:
    return {mode: {"label": LABELS[mode], **compare(runs[kind], runs["native"])}
            for mode, kind in pairs.items()}


def _airflow(k: int, rounds: int, tmp: Path) -> dict[str, Any]:
    runs = _rounds({"unipipe": lambda w: airflow_unipipe(k, w),
                    "unipipe-plain": lambda w: airflow_unipipe(k, w, plain=True),
                    "native": lambda w: airflow_native(k, w)}, rounds, tmp, "airflow")
    return {"source": "task_instance.start_date/end_date in Airflow's metadata DB "
                      "(`airflow dags test`, isolated AIRFLOW_HOME per run)",
            "modes": _modes(runs, {"fork-always": "unipipe", "plain": "unipipe-plain"})}


def _airflow_scheduler(k: int, rounds: int, tmp: Path) -> dict[str, Any]:
    SHIM_TIMING.pop("airflow-scheduler", None)
    runs = _rounds({"unipipe": lambda w: airflow_unipipe_scheduler(k, w),
                    "native": lambda w: airflow_native(k, w, scheduler=True)}, rounds, tmp,
                   "airflow-scheduler")
    return {"source": "task_instance.start_date/end_date in Airflow's metadata DB "
                      "(`airflow standalone`, LocalExecutor, isolated AIRFLOW_HOME per run)",
            "modes": _modes(runs, {"scheduler": "unipipe"}),
            "in_attempt": in_attempt(SHIM_TIMING.get("airflow-scheduler", []))}


def _prefect(k: int, rounds: int, tmp: Path) -> dict[str, Any]:
    from unipipe_prefect.server import LocalPrefectServer, use_shared_server

    server = LocalPrefectServer(home=tmp / "prefect-server").start()
    try:
        use_shared_server(server)
        api = server.api_url
        runs = _rounds({"unipipe-process": lambda w: prefect_unipipe(k, w, api, "process"),
                        "unipipe-inline": lambda w: prefect_unipipe(k, w, api, "inline"),
                        "unipipe-process-plain":
                            lambda w: prefect_unipipe(k, w, api, "process", plain=True),
                        "native": lambda w: prefect_native(k, w, api)}, rounds, tmp, "prefect")
    finally:
        server.stop()
    return {"source": "task-run start_time/end_time from the API of a local `prefect server "
                      "start` (one server for every run)",
            "modes": _modes(runs, {"fork": "unipipe-process", "inline": "unipipe-inline",
                                   "plain": "unipipe-process-plain"})}


def _kubeflow(k: int, rounds: int, tmp: Path) -> dict[str, Any]:
    SHIM_TIMING.pop("kubeflow", None)
    runs = _rounds({"unipipe": lambda w: kubeflow_unipipe(k, w),
                    "unipipe-plain": lambda w: kubeflow_unipipe(k, w, plain=True),
                    "native": lambda w: kubeflow_native(k, w)}, rounds, tmp, "kubeflow")
    return {"source": "component process wall time (launch start/end) recorded by unipipe's "
                      "KFP executor, which runs both the unipipe and the kfp-compiled native "
                      "PipelineSpec",
            "modes": _modes(runs, {"process": "unipipe", "plain": "unipipe-plain"}),
            "in_attempt": in_attempt(SHIM_TIMING.get("kubeflow", []))}


SPANS = ("shim_ms", "import_ms", "module_ms", "entry_ms", "user_ms")


def in_attempt(rounds: list[list[dict[str, Any]]]) -> dict[str, Any] | None:
    """The in-attempt records (unipipe/runtime/timing.py) of the timed rounds: per span the
    median and p90 over every attempt, and the shim time's median per round."""
    records = [r for rnd in rounds for r in rnd]
    if not records:
        return None
    out: dict[str, Any] = {"attempts": len(records), "rounds": len(rounds)}
    for span in SPANS:
        values = [r[span] for r in records]
        out[span] = {"median": round(statistics.median(values), 2),
                     "p90": round(_p90(values), 2)}
    out["shim_ms_per_round"] = [round(statistics.median(r["shim_ms"] for r in rnd), 2)
                                for rnd in rounds if rnd]
    out["goal_met"] = out["shim_ms"]["median"] < GOAL_MS
    return out


def _over(fig: dict[str, Any], engine: str, mode: str) -> str:
    c = fig["engines"].get(engine, {}).get("modes", {}).get(mode)
    return f"{c['overhead_median_ms']:g} ms" if c else "n/a"


def _imports(fig: dict[str, Any], label: str) -> str:
    c = fig.get("import_costs", {}).get(label)
    return f"{c['shim_ms']:g} + {c['task_module_ms']:g} ms" if c else "n/a"


def _import_part(fig: dict[str, Any], engine: str, mode: str) -> str:
    modes = fig["engines"].get(engine, {}).get("modes", {})
    if mode not in modes or "plain" not in modes:
        return "n/a"
    part = modes[mode]["overhead_median_ms"] - modes["plain"]["overhead_median_ms"]
    return f"{part:.1f} ms" + (" (within noise)" if abs(part) < GOAL_MS else "")


def markdown(fig: dict[str, Any]) -> str:
    lines = ["# Runtime shim overhead per task attempt, on each engine", "",
             f"Chain of {fig['tasks_per_chain']} tasks (`x + 1`), {fig['rounds']} round(s); "
             f"{fig['cpus']} CPUs shared with other work (load average "
             f"{fig['loadavg_start'][0]} -> {fig['loadavg_end'][0]}); Airflow "
             f"{fig['versions']['apache-airflow']}, Prefect {fig['versions']['prefect']}, kfp "
             f"{fig['versions']['kfp']}; unipipe at {fig['code']['commit'][:7]}"
             + (f" plus uncommitted changes to {', '.join(fig['code']['uncommitted'])}"
                if fig["code"]["uncommitted"] else "")
             + ". Per-task durations in ms, from the engines' own records.", "",
             "| engine | unipipe mode | unipipe median / p90 | native median / p90 | "
             f"overhead median / p90 | overhead per round | < {GOAL_MS:g} ms? |",
             "|---|---|---:|---:|---:|---|---|"]
    met, missed = [], []
    for engine, data in fig["engines"].items():
        for mode, c in data["modes"].items():
            if mode != "plain":
                (met if c["goal_met"] else missed).append(f"{engine} ({mode})")
            lines.append(
                f"| {engine} | {c['label']} | {c['unipipe']['median_ms']} / "
                f"{c['unipipe']['p90_ms']} | {c['native']['median_ms']} / {c['native']['p90_ms']} "
                f"| {c['overhead_median_ms']} / {c['overhead_p90_ms']} | "
                f"{', '.join(str(x) for x in c['overhead_per_round_ms'])} | "
                f"{'yes' if c['goal_met'] else 'no'} |")
    for engine, err in fig.get("errors", {}).items():
        lines.append(f"| {engine} | not measured: {err[:200]} | | | | | |")
    lines += _in_attempt_lines(fig)
    for engine, when in (fig.get("partial") or {}).items():
        lines += ["", f"The {engine} rows were measured again on their own (`--only {engine}`"
                  + (f", {when['rounds']} rounds" if when.get("rounds") else "") + ") "
                  f"on {when['recorded']} (load average {when['loadavg_start'][0]} -> "
                  f"{when['loadavg_end'][0]}), unipipe at {when['code']['commit'][:7]}"
                  + (f" plus uncommitted changes to {', '.join(when['code']['uncommitted'])}"
                     if when["code"]["uncommitted"] else "") + "."]
    lines += ["", (
        "Overhead is unipipe's median (p90) per-task duration minus the hand-written task's "
        "(Airflow TaskFlow DAG, Prefect `@flow`/`@task`, KFP `@dsl.component` run by the same "
        "unipipe executor), pooled over rounds with the first task of each chain left out "
        "(Airflow spends seconds of `dags test` start-up in it, on both sides); the per-round "
        "column is the noise on a shared 2-core machine, where scheduling jitter of a few ms "
        "dwarfs the engines' microsecond timestamps, so differences under ~5 ms are not "
        "resolved. "
        f"The {GOAL_MS:g} ms goal is met by {', '.join(met) or 'no engine'} and missed by "
        f"{', '.join(missed) or 'none'}. "
        "Of that overhead, importing the task's module again in each attempt's fresh process "
        "(the forked child on Airflow and Prefect, the component process on KFP; the module "
        "imports unipipe for `@up.task`) accounts for "
        f"{_import_part(fig, 'airflow', 'fork-always')} on Airflow, "
        f"{_import_part(fig, 'prefect', 'fork')} on Prefect and "
        f"{_import_part(fig, 'kubeflow', 'process')} on KFP (default row minus attribution "
        "row, whose task module does not import unipipe); the attribution rows' "
        f"{_over(fig, 'airflow', 'plain')}, {_over(fig, 'prefect', 'plain')} and "
        f"{_over(fig, 'kubeflow', 'plain')} are the fork of the `dags test` and flow processes "
        "(measured separately, a bare fork, exit and wait costs ~8 ms in a process with Airflow or Prefect "
        "loaded) and, on KFP, importing the runtime shim in a new interpreter. "
        "In a fresh interpreter, importing the runtime shim and the task module costs "
        f"{_imports(fig, 'with bytecode cache')} with bytecode caches (as measured above) and "
        f"{_imports(fig, 'without bytecode cache')} without (this machine's default: "
        "PYTHONDONTWRITEBYTECODE=1, uv installs no .pyc). "
        "The fork per attempt is structural (timeouts and SIGKILL then fail only that attempt, "
        "as on the reference runner) where a try shares its process with the whole run: "
        "Prefect can turn it off with `UNIPIPE_PREFECT_ISOLATION=inline`; Airflow forks only "
        "under `dags test` (under a real scheduler each try is already a task-runner process "
        "of Airflow's own, and the shim runs the task there: the `scheduler` row, whose first "
        "task is left out like the others'); on KFP every attempt is its own process for "
        "native components too.")]
    return "\n".join(lines) + "\n"


def _in_attempt_lines(fig: dict[str, Any]) -> list[str]:
    timed = {e: d["in_attempt"] for e, d in fig["engines"].items() if d.get("in_attempt")}
    costs = fig.get("import_costs", {})
    if not timed and not costs:
        return []
    lines = ["", "## The shim's own time, timed inside each attempt's process", ""]
    if timed:
        lines += [
            "| engine | attempts (rounds) | shim median / p90 | adapter module import | "
            "entry -> return | of which task module import | of which user function | "
            f"shim median per round | < {GOAL_MS:g} ms? |",
            "|---|---|---:|---:|---:|---:|---:|---|---|"]
        for engine, t in timed.items():
            def cell(span: str, t: dict[str, Any] = t) -> str:
                return f"{t[span]['median']:g} / {t[span]['p90']:g}"
            lines.append(
                f"| {engine} | {t['attempts']} ({t['rounds']}) | {cell('shim_ms')} | "
                f"{cell('import_ms')} | {cell('entry_ms')} | {cell('module_ms')} | "
                f"{cell('user_ms')} | {', '.join(f'{x:g}' for x in t['shim_ms_per_round'])} | "
                f"{'yes' if t['goal_met'] else 'no'} |")
        untimed = [e for e in ("airflow-scheduler", "kubeflow") if e not in timed]
        if untimed:
            lines += ["", f"Not timed in the attempt in this recording: {', '.join(untimed)} "
                      "(its row above predates the in-attempt timing, or its re-measurement "
                      "failed; `--only ENGINE` records it)."]
        lines += ["", (
            "Timed with `time.perf_counter` in the attempt's own process (Airflow's task-runner "
            "process under the real scheduler; the KFP component's process), every attempt of "
            "the timed rounds, the first included (the warm-up run is not): the unipipe runs set "
            "`UNIPIPE_SHIM_TIMING` and unipipe/runtime/timing.py records the engine adapter's "
            "module import (`unipipe_airflow.runtime` / `unipipe_kubeflow.adapter`, first to "
            "last statement), its entry point (`run_task` / `run_component`) from first statement "
            "to return, which imports the runtime shim and the task's module and calls the user "
            "function, and that call; the shim's time is import + entry -> return - user "
            "function (in ms, median / p90 over attempts). What is not in it: finding and "
            "reading the adapter's file before its first statement (in the import probe below) "
            "and the engine's own work around the call (context, XCom; the same for a native "
            "task). Because both ends of every span are in one process, the figure does not "
            "carry the scheduling jitter of the engine-records comparison above.")]
    if costs:
        lines += ["", "| fresh process | runtime shim import (ms) | task module import (ms) | "
                      "task module import, per run | what the task module's import adds |",
                  "|---|---:|---:|---|---|"]
        for label, c in costs.items():
            adds = c.get("task_module_adds")
            lines.append(f"| {label} | {c['shim_ms']:g} | {c['task_module_ms']:g} | "
                         f"{', '.join(f'{x:g}' for x in c.get('per_run_task_module_ms', []))} | "
                         + (", ".join(f"`{a}`" for a in adds) if adds is not None else "") + " |")
        lines += ["", (
            "Median of several fresh `python -c` processes that import `unipipe.runtime.invoke` "
            "then the benchmark's task module (`chain_unipipe`: `import unipipe as up`, one "
            "`@up.task`) as the runtime imports it (execution mode), timed with "
            "`time.perf_counter`; 'loaded' rows import Airflow's task runner or KFP's executor "
            "first, as the engines' attempt processes have. `python -X importtime` on the same "
            "probe breaks a figure down by module.")]
    return lines


def write(figures: dict[str, Any]) -> None:
    (HERE / "shim_engines.json").write_text(json.dumps(figures, indent=2) + "\n")
    (HERE / "shim_engines.md").write_text(figures["markdown"])


if __name__ == "__main__":
    # ``--only ENGINE`` (airflow, airflow-scheduler, prefect, kubeflow) measures that engine
    # again and keeps the recorded figures of the others
    only = sys.argv[sys.argv.index("--only") + 1] if "--only" in sys.argv else None
    n_rounds = int(sys.argv[sys.argv.index("--rounds") + 1]) if "--rounds" in sys.argv else None
    result = run(quick="--quick" in sys.argv, only=only, rounds=n_rounds)
    if only is not None and (HERE / "shim_engines.json").exists():
        kept = json.loads((HERE / "shim_engines.json").read_text())
        kept["import_costs"] = result["import_costs"]  # measured again in every run
        if only in result["errors"] and kept["engines"].get(only):
            # a failed re-measurement (an engine timing out on a loaded machine) keeps the
            # figures recorded before rather than replacing them with nothing
            print(f"{only} not measured again ({result['errors'][only]}); its recorded "
                  "figures stay", flush=True)
            kept["markdown"] = markdown(kept)
            write(kept)
            sys.exit(1)
        kept["engines"][only] = result["engines"].get(only)
        kept.setdefault("errors", {}).pop(only, None)
        if only in result["errors"]:
            kept["errors"][only] = result["errors"][only]
        kept["engines"] = {k: v for k, v in kept["engines"].items() if v is not None}
        kept.setdefault("partial", {})[only] = {
            key: result[key] for key in ("recorded", "loadavg_start", "loadavg_end", "code",
                                         "rounds")}
        kept["markdown"] = markdown(kept)
        result = kept
    write(result)
    print(result["markdown"])
