"""Synthetic pipelines of N tasks, built as IR directly (no N Python functions needed).

Shape: a chain where every 10th task also joins the output of the task 10 steps back, so the
graph has long paths, fan-in and data edges, like a real wide ETL pipeline.
"""

from __future__ import annotations

import hashlib
import inspect

import perf_tasks

from unipipe.ir import models as m


def _hash(fn: object) -> str:
    return hashlib.sha256(inspect.getsource(fn).encode()).hexdigest()  # type: ignore[arg-type]


def pipeline(n: int, *, retries: int = 1) -> m.Pipeline:
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
    return m.Pipeline(
        name=f"synthetic-{n}",
        params=(m.Param(name="start", type="int", default=0),),
        tasks=tuple(tasks),
        output=m.OutputInput(task=tasks[-1].id),
        defaults=m.Policies(retry=m.Retry(max_retries=retries, delay=1.0)),
        module="perf_tasks",
    )
