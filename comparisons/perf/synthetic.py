"""Synthetic pipelines of N tasks, built as IR directly, in three shapes.

- ``mixed`` (:func:`pipeline`, the original shape): a chain where every 10th task also joins the
  output of the task 10 steps back, so the graph has long paths, fan-in and data edges, like a
  real wide ETL pipeline; two task functions (``step``, ``join``);
- ``one`` (:func:`one_callable`, "one callable"): a plain chain of N calls of ONE task function
  (``step``), the way a person writes ``v = step(v)`` in a loop;
- ``per_task`` (:func:`function_per_task`, "function per task"): a plain chain of N distinct task
  functions, defined in a module written to a folder on ``sys.path`` (:func:`write_per_task_module`).

Every task has one retry with a 1 s delay (the pipeline's defaults), as in native_kfp.py.
"""

from __future__ import annotations

import hashlib
import inspect
import sys
from pathlib import Path

import perf_tasks

from unipipe.ir import models as m

SHAPES = ("mixed", "one", "per_task")
#: the module :func:`write_per_task_module` writes (importable once its folder is on sys.path)
PER_TASK_MODULE = "perf_per_task"


def _hash(fn: object) -> str:
    return hashlib.sha256(inspect.getsource(fn).encode()).hexdigest()  # type: ignore[arg-type]


def _pipeline(name: str, tasks: list[m.Task], module: str, retries: int) -> m.Pipeline:
    return m.Pipeline(
        name=name,
        params=(m.Param(name="start", type="int", default=0),),
        tasks=tuple(tasks),
        output=m.OutputInput(task=tasks[-1].id),
        defaults=m.Policies(retry=m.Retry(max_retries=retries, delay=1.0)),
        module=module,
    )


def pipeline(n: int, *, retries: int = 1) -> m.Pipeline:
    """The ``mixed`` shape: a chain of ``step`` with a ``join`` every 10th task."""
    step_hash, join_hash = _hash(perf_tasks.step), _hash(perf_tasks.join)
    tasks: list[m.Task] = []
    for i in range(n):
        tid = f"t{i:05d}"
        if i == 0:
            tasks.append(m.Task(id=tid, fn="perf_tasks:step", source_hash=step_hash,
                                inputs={"x": m.ParamInput(name="start")}, returns="int"))
        elif i % 10 == 0 and i >= 10:
            tasks.append(m.Task(id=tid, fn="perf_tasks:join", source_hash=join_hash, inputs={
                "a": m.OutputInput(task=f"t{i - 1:05d}"), "b": m.OutputInput(task=f"t{i - 10:05d}")},
                returns="int"))
        else:
            tasks.append(m.Task(id=tid, fn="perf_tasks:step", source_hash=step_hash,
                                inputs={"x": m.OutputInput(task=f"t{i - 1:05d}")}, returns="int"))
    return _pipeline(f"synthetic-{n}", tasks, "perf_tasks", retries)


def _chain(n: int, fns: list[tuple[str, str]]) -> list[m.Task]:
    """A plain chain: task i calls fns[i] (spec, source hash) on task i-1's output."""
    return [m.Task(id=f"t{i:05d}", fn=fn, source_hash=h, returns="int", inputs={
        "x": m.ParamInput(name="start") if i == 0 else m.OutputInput(task=f"t{i - 1:05d}")})
        for i, (fn, h) in enumerate(fns)]


def one_callable(n: int, *, retries: int = 1) -> m.Pipeline:
    """The ``one`` shape: N calls of ``perf_tasks.step`` in a plain chain."""
    h = _hash(perf_tasks.step)
    return _pipeline(f"one-{n}", _chain(n, [("perf_tasks:step", h)] * n), "perf_tasks", retries)


def per_task_source(n: int) -> str:
    """The module of the ``per_task`` shape: N distinct functions ``f00000`` ... (``x + i + 1``)."""
    return "".join(f"def f{i:05d}(x: int) -> int:\n    return x + {i + 1}\n\n\n"
                   for i in range(n)).rstrip() + "\n"


def write_per_task_module(n: int, folder: Path) -> Path:
    """Write :data:`PER_TASK_MODULE` for N functions into ``folder`` and put it on sys.path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{PER_TASK_MODULE}.py"
    path.write_text(per_task_source(n))
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    return path


def function_per_task(n: int, *, retries: int = 1) -> m.Pipeline:
    """The ``per_task`` shape: task i calls ``perf_per_task:f{i}`` (the module need not be
    imported to compile: the IR names it and hashes each function's source)."""
    fns = [(f"{PER_TASK_MODULE}:f{i:05d}", hashlib.sha256(
        f"def f{i:05d}(x: int) -> int:\n    return x + {i + 1}\n".encode()).hexdigest())
        for i in range(n)]
    return _pipeline(f"per-task-{n}", _chain(n, fns), PER_TASK_MODULE, retries)


def build(shape: str, n: int) -> m.Pipeline:
    return {"mixed": pipeline, "one": one_callable, "per_task": function_per_task}[shape](n)
