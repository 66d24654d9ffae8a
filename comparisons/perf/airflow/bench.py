"""Airflow DagBag parse time: generated DAGs against hand-written TaskFlow DAGs of one shape.

    uv run python comparisons/perf/airflow/bench.py [--quick]

For the synthetic pipelines of 10, 100 and 1000 tasks (comparisons/perf/synthetic.py; the shapes
``mixed``, ``one`` and ``per_task``, see :data:`SHAPES`), DAG files are parsed by Airflow's own
DagBag, each in a fresh interpreter, ``repeats`` times (interleaved; the median is kept):

- ``generated``: what unipipe writes (one ``@task`` function per distinct definition, the
  spec in its body, called with ``.override(task_id=...)`` by every further task it serves);
- ``hand_written``: the same graph written by hand in TaskFlow style, one ``@task`` function
  per task with the same retry arguments, its body calling the user function;
- ``hand_written_loop``: the shortest hand-written form, two ``@task`` functions reused with
  ``.override(task_id=...)`` in a loop (a lower bound no per-task file can reach).

For the ``one`` shape, ``hand_written`` is one ``@task`` with the N ``.override`` calls written
out, and the loop the same calls in a ``for`` loop; for ``per_task``, one ``@task`` per task.
The figure of merit is ``generated / hand_written`` (goal: at most 1.05). Results go to
comparisons/perf/airflow/results.json and RESULTS.md.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import synthetic  # noqa: E402

HEADER = """import pendulum
from datetime import timedelta
from airflow.sdk import Param, dag, task

"""


def hand_written(n: int) -> str:
    lines = [HEADER, f'@dag(dag_id="hand-{n}", schedule=None, '
             + 'start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), catchup=False, '
             + 'params={"start": Param(0, type="integer")})',
             f"def hand_{n}():"]
    for i in range(n):
        args = "a, b" if i % 10 == 0 and i >= 10 else ("" if i == 0 else "x")
        lines += [
            "    @task(retries=1, retry_delay=timedelta(seconds=1))",
            f"    def t{i:05d}({args}):",
            "        import perf_tasks",
            "",
            ("        return perf_tasks.join(a, b)" if "a, b" in args else
             "        from airflow.sdk import get_current_context\n\n"
             "        return perf_tasks.step(get_current_context()['params']['start'])"
             if i == 0 else "        return perf_tasks.step(x)"),
            "",
        ]
    for i in range(n):
        if i == 0:
            call = "t00000()"
        elif i % 10 == 0 and i >= 10:
            call = f"t{i:05d}(r{i - 1:05d}, r{i - 10:05d})"
        else:
            call = f"t{i:05d}(r{i - 1:05d})"
        lines.append(f"    r{i:05d} = {call}")
    lines += ["", "", f"hand_{n}()", ""]
    return "\n".join(lines)


def hand_written_loop(n: int) -> str:
    return HEADER + f'''
@task(retries=1, retry_delay=timedelta(seconds=1))
def step(x=None):
    import perf_tasks

    return perf_tasks.step(x)


@task(retries=1, retry_delay=timedelta(seconds=1))
def join(a, b):
    import perf_tasks

    return perf_tasks.join(a, b)


@dag(dag_id="loop-{n}", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
     catchup=False, params={{"start": Param(0, type="integer")}})
def loop_{n}():
    out = [step.override(task_id="t00000")()]
    for i in range(1, {n}):
        if i % 10 == 0:
            out.append(join.override(task_id=f"t{{i:05d}}")(out[i - 1], out[i - 10]))
        else:
            out.append(step.override(task_id=f"t{{i:05d}}")(out[i - 1]))


loop_{n}()
'''


def _dag(name: str, n: int) -> list[str]:
    return [HEADER, f'@dag(dag_id="{name}-{n}", schedule=None, '
            + 'start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), catchup=False, '
            + 'params={"start": Param(0, type="integer")})', f"def {name.replace('-', '_')}_{n}():"]


FIRST = """    @task(task_id="t00000", retries=1, retry_delay=timedelta(seconds=1))
    def first():
        import {module}
        from airflow.sdk import get_current_context

        return {module}.{fn}(get_current_context()["params"]["start"])
"""


def hand_written_one(n: int) -> str:
    """The ``one`` shape by hand: one ``@task`` for the call that reads the parameter, one for
    every further call, each call written out with ``.override(task_id=...)``."""
    lines = _dag("hand-one", n) + [FIRST.format(module="perf_tasks", fn="step"),
                                   "    @task(retries=1, retry_delay=timedelta(seconds=1))",
                                   "    def step(x):", "        import perf_tasks", "",
                                   "        return perf_tasks.step(x)", "", "    r00000 = first()"]
    lines += [f'    r{i:05d} = step.override(task_id="t{i:05d}")(r{i - 1:05d})' for i in range(1, n)]
    return "\n".join(lines + ["", "", f"hand_one_{n}()", ""])


def hand_written_one_loop(n: int) -> str:
    """The ``one`` shape in its shortest hand-written form: the calls in a loop."""
    lines = _dag("loop-one", n) + [FIRST.format(module="perf_tasks", fn="step"),
                                   "    @task(retries=1, retry_delay=timedelta(seconds=1))",
                                   "    def step(x):", "        import perf_tasks", "",
                                   "        return perf_tasks.step(x)", "", "    out = first()",
                                   f"    for i in range(1, {n}):",
                                   '        out = step.override(task_id=f"t{i:05d}")(out)']
    return "\n".join(lines + ["", "", f"loop_one_{n}()", ""])


def hand_written_per_task(n: int) -> str:
    """The ``per_task`` shape by hand: one ``@task`` per task calling its own function."""
    lines = _dag("hand-per-task", n) + [FIRST.format(module="perf_per_task", fn="f00000")
                                        .replace('task_id="t00000", ', "").replace("first", "t00000")]
    for i in range(1, n):
        lines += ["    @task(retries=1, retry_delay=timedelta(seconds=1))", f"    def t{i:05d}(x):",
                  "        import perf_per_task", "", f"        return perf_per_task.f{i:05d}(x)", ""]
    lines += ["    r00000 = t00000()"] + [f"    r{i:05d} = t{i:05d}(r{i - 1:05d})" for i in range(1, n)]
    return "\n".join(lines + ["", "", f"hand_per_task_{n}()", ""])


#: per shape: the pipeline (synthetic.build) and the hand-written files to parse against it
SHAPES = {
    "mixed": {"hand_written": hand_written, "hand_written_loop": hand_written_loop},
    "one": {"hand_written": hand_written_one, "hand_written_loop": hand_written_one_loop},
    "per_task": {"hand_written": hand_written_per_task},
}


def parse_seconds(folders: dict[str, Path], repeats: int) -> dict[str, tuple[float, int]]:
    """Median DagBag time per folder. Kinds are interleaved within each repeat (the machine is
    shared, so load changes hit every kind alike), after one untimed load that writes .pyc."""
    from unipipe_airflow.dagbag import load

    times: dict[str, list[float]] = {k: [] for k in folders}
    tasks: dict[str, int] = {}
    for kind, folder in folders.items():
        bag = load(folder)
        if bag["import_errors"]:
            raise RuntimeError(f"{folder}: {bag['import_errors']}")
        tasks[kind] = sum(len(t) for t in bag["dags"].values())
    for _ in range(repeats):
        for kind, folder in folders.items():
            times[kind].append(load(folder)["seconds"])
    return {k: (statistics.median(v), tasks[k]) for k, v in times.items()}


def run(quick: bool = False, shapes: tuple[str, ...] = ("mixed", "one", "per_task")) -> dict:
    from unipipe.compiler.driver import compile_ir

    repeats = 1 if quick else 5
    results = []
    with tempfile.TemporaryDirectory(prefix="unipipe-airflow-bench-") as tmp:
        for shape in shapes:
            for n in ((10, 100) if quick else (10, 100, 1000)):
                folders = {k: Path(tmp) / f"{shape}-{k}-{n}" for k in
                           ("generated", *SHAPES[shape])}
                for f in folders.values():
                    f.mkdir()
                if shape == "per_task":  # not imported while parsing; written as it would be
                    synthetic.write_per_task_module(n, Path(tmp) / f"modules-{n}")
                compile_ir(synthetic.build(shape, n), "airflow", folders["generated"])
                for kind, write in SHAPES[shape].items():
                    (folders[kind] / f"{kind}_{n}.py").write_text(write(n))
                row: dict = {"shape": shape, "tasks": n}
                for kind, (seconds, tasks) in parse_seconds(folders, repeats).items():
                    assert tasks == n, (kind, tasks)
                    row[kind] = round(seconds, 4)
                    row[f"{kind}_bytes"] = sum(p.stat().st_size for p in folders[kind].glob("*.py"))
                row["ratio"] = round(row["generated"] / row["hand_written"], 3)
                if "hand_written_loop" in row:
                    row["ratio_vs_loop"] = round(row["generated"] / row["hand_written_loop"], 3)
                results.append(row)
                print(f"dagbag {shape:8s} {n:5d} tasks: ratio {row['ratio']}", flush=True)
    figures = {"dagbag_parse": results, "repeats": repeats}
    figures["markdown"] = table(figures)
    return figures


def table(figures: dict) -> str:
    lines = [f"DagBag parse time, median seconds of {figures['repeats']} fresh interpreter(s); "
             "goal: generated / hand-written at most 1.05 for every shape and size. Shapes "
             "(comparisons/perf/synthetic.py): `mixed`, a chain with a join every 10th task, "
             "hand-written with one `@task` per task; `one`, N calls of one task function, "
             "hand-written with one `@task` and N `.override(task_id=...)` calls written out "
             "(the loop: the same calls in a `for` loop); `per_task`, N distinct task "
             "functions, hand-written with one `@task` per task.", "",
             "| shape | tasks | generated | hand-written | ratio | hand-written loop "
             "| ratio vs loop |", "|---|---|---|---|---|---|---|"]
    for r in figures["dagbag_parse"]:
        lines.append(f"| {r.get('shape', 'mixed')} | {r['tasks']} | {r['generated']} "
                     f"| {r['hand_written']} | {r['ratio']} | {r.get('hand_written_loop', '-')} "
                     f"| {r.get('ratio_vs_loop', '-')} |")
    return "\n".join(lines)


def write(figures: dict) -> None:
    import platform
    from importlib.metadata import version

    figures = {"airflow": version("apache-airflow"), "python": platform.python_version(),
               **figures}
    (HERE / "results.json").write_text(json.dumps(figures, indent=2) + "\n")
    lines = ["# Airflow DagBag parse time", "",
             f"Airflow {figures['airflow']}, Python {figures['python']}.", "", figures["markdown"]]
    (HERE / "RESULTS.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    figures = run(quick="--quick" in sys.argv)
    write(figures)
    print(json.dumps(figures, indent=2))
