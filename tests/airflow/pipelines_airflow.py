"""Pipelines that exercise what is specific to the Airflow backend."""

from __future__ import annotations

import unipipe as up

HOSTILE = "{{ ds }} {% raw %}'\"\"\"); import os; os.system('echo pwned') #\n\\x00 é"


@up.task
def echo(text: str, extra: str) -> dict:
    '''Returns its inputs. Docstring with """ quotes """ and {{ ds }} and a path.md'''
    return {"text": text, "extra": extra}


@up.pipeline(name="hostile-strings", description='Strings that must stay data: """ {{ ds }}',
             tags=["{{ ds }}"])
def hostile(extra: str = HOSTILE):
    return echo(HOSTILE, extra)


# ---------------------------------------------------------------- names Airflow or the DAG uses


@up.task(id="task")
def task_named_task(params: str, ti: int) -> str:
    return f"{params}:{ti}"


@up.task(id="dag")
def dag_named_dag(run_task: str) -> str:
    return run_task.upper()


@up.pipeline(name="reserved-names")
def reserved(params: str = "p", ti: int = 1):
    first = task_named_task(params, ti)
    return dag_named_dag(first)


# ---------------------------------------------------------------- fan-out from anywhere, gates


@up.task
def table() -> dict:
    return {"rows": ["a {{ ds }}", "b"], "ok": False}


@up.task
def shout(word: str, suffix: str) -> str:
    return word.upper() + suffix


@up.task
def double(n: int) -> int:
    return 2 * n


@up.task
def not_ok_branch(data: dict) -> str:
    return f"{len(data['rows'])} rows, not ok"


@up.pipeline(name="map-sources")
def map_sources(numbers: list = [1, 2, 3]):  # noqa: B006 - a JSON default
    data = table()
    literal = shout.map(word=["x {{ ds }}", "y"], suffix="!")
    from_param = double.map(n=numbers)
    from_path = shout.map(word=data["rows"], suffix="?")
    with up.when(data["ok"], expect=False):
        branch = not_ok_branch(data)
    return {"literal": literal, "param": from_param, "path": from_path, "branch": branch}


# ---------------------------------------------------------------- exponential backoff, capped


@up.task(retry=up.Retry(max_retries=3, delay="1s", backoff=2.0, max_delay="2.5s"))
def slow_to_work(fail_times: int) -> int:
    attempt = up.current().attempt
    if attempt <= fail_times:
        raise ConnectionError(f"attempt {attempt}")
    return attempt


@up.pipeline(name="capped-backoff")
def capped_backoff(fail_times: int = 3):
    return slow_to_work(fail_times)


# ---------------------------------------------------------------- pods, interval schedule


@up.task(resources=up.Resources(cpu="500m", memory="256Mi", gpu=1), image="python:3.11-slim",
         retries=1)
def in_a_pod(n: int) -> int:
    return n + 1


@up.task(image="ghcr.io/example/worker:1.2")
def image_only(n: int) -> int:
    return n * 10


@up.pipeline(name="pod-tasks", schedule="1h")
def pod_tasks(n: int = 1):
    return image_only(in_a_pod(n))


# ---------------------------------------------------------------- a declared difference


@up.task
def count(values: list) -> int:
    return len(values)


@up.pipeline(name="empty-map")
def empty_map(numbers: list = []):  # noqa: B006 - a JSON default
    doubled = double.map(n=numbers)
    return count(doubled)


# ---------------------------------------------------------------- a try that kills its process


@up.task(retries=1)
def dies_once() -> str:
    import os
    import signal

    if up.current().attempt == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return "survived"


@up.pipeline(name="killed-once")
def killed_once():
    return dies_once()


# ---------------------------------------------------------------- sub-pipelines (TaskGroups)


@up.task
def numbers(n: int) -> list:
    return list(range(1, n + 1))


@up.task
def square_it(x: int) -> int:
    return x * x


@up.task
def total(values: list) -> int:
    return sum(values)


@up.task
def is_big(value: int) -> bool:
    return value > 10


@up.task
def big_label(value: int) -> str:
    return f"big {value}"


@up.task(run_if="all_done")
def tidy() -> str:
    return "tidied"


@up.pipeline(name="sum-squares")
def sum_squares(n: int):
    """Squares 1..n (one mapped task instance each) and sums them."""
    return total(square_it.map(x=numbers(n)))


@up.pipeline(name="checked-total",
             alerts=[up.Alert(on=("success", "failure"), webhook="env:UNIPIPE_TEST_WEBHOOK")])
def checked_total(n: int):
    """Sums the squares, labels a big total, then tidies up."""
    value = sum_squares(n)
    with up.when(is_big(value)):
        text = big_label(value)
    tidy().after(text)
    return text


@up.pipeline(name="subpipelines")
def subpipelines(n: int = 3):
    """Nested groups (checked_total calls sum_squares), a repeated one (sum_squares twice), a
    mapped task, a condition and a run_if task inside groups, and a group with alerts."""
    return {"checked": checked_total(n), "small": sum_squares(2)}


@up.task
def explode(n: int) -> int:
    raise ValueError(f"{n} is not welcome")


@up.pipeline(name="alerted-sink",
             alerts=[up.Alert(on=("success", "failure"), webhook="env:UNIPIPE_TEST_WEBHOOK")])
def alerted_sink(n: int):
    return explode(n)


@up.pipeline(name="alerted-never",
             alerts=[up.Alert(on=("success", "failure"), webhook="env:UNIPIPE_TEST_WEBHOOK")])
def alerted_never(value: int):
    return big_label(value)


@up.pipeline(name="subpipeline-failures")
def subpipeline_failures(n: int = 2):
    """A group whose upstream failed never runs (no alert); a group at the end of the DAG
    whose task fails alerts failure once, and the run fails although no task is after it."""
    alerted_never(explode(n))
    return alerted_sink(n)


# ---------------------------------------------------------------- mapped sub-pipelines


@up.task
def shard_table(n: int) -> dict:
    return {"shards": list(range(n)), "n": n}


@up.task
def offset_of(n: int) -> int:
    return 100 * n


@up.task
def shifted(shard: int, offset: int) -> int:
    return shard + offset


@up.task
def labelled(value: int, shard: int) -> str:
    return f"{shard}:{value}"


@up.task
def joined(labels: list) -> str:
    return ",".join(labels)


@up.pipeline(name="shift-shard")
def shift_shard(shard: int, offset: int):
    """Shifts one shard by the offset and labels it."""
    value = shifted(shard, offset)
    return {"value": value, "label": labelled(value, shard)}


@up.pipeline(name="mapped-groups")
def mapped_groups(n: int = 3):
    """A sub-pipeline mapped over a key of a task's output, two copies at a time, its tasks
    reading another task's output; a task reads the labels as a list, a cleanup runs after."""
    table = shard_table(n)
    out = shift_shard.map(shard=table["shards"], offset=offset_of(n), max_parallel=2)
    tidy().after(out["label"])
    return {"labels": joined(out["label"]), "values": out["value"]}


@up.pipeline(name="mapped-group-edges")
def mapped_group_edges(one: list = [7]):  # noqa: B006 - a parameter default, never mutated
    """One copy (its consumer still gets a list of one), and a copy-less group whose items'
    task failed (every member upstream_failed)."""
    single = shift_shard.map(shard=one, offset=offset_of(1))
    broken = shift_shard.map(shard=explode(1), offset=offset_of(2))
    return {"single": joined(single["label"]), "broken": joined(broken["label"])}


@up.pipeline(name="mapped-group-empty")
def mapped_group_empty():
    """A sub-pipeline mapped over no items."""
    return joined(shift_shard.map(shard=[], offset=offset_of(0))["label"])


# ---------------------------------------------------------------- the harness lane's fork server


@up.task
def whoami(label: str) -> dict:
    import os
    import sys

    return {"label": label, "mark": os.environ.get("UNIPIPE_TEST_MARK"),
            "home": os.environ.get("AIRFLOW_HOME"),
            "imported_before": "unipipe_test_fork_marker" in sys.modules}


@up.pipeline(name="who-runs-me")
def who_runs(label: str = "first"):
    return whoami(label)


@up.task
def nap(seconds: float) -> float:
    import sys
    import time

    sys.modules["unipipe_test_fork_marker"] = sys  # seen by a later run if state leaked
    time.sleep(seconds)
    return seconds


@up.pipeline(name="naps")
def naps(seconds: float = 120.0):
    return nap(seconds)


# ---------------------------------------------------------------- which process runs a try


@up.task
def process_titles() -> dict:
    import os

    def title(pid: object) -> str:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace").strip()

    with open(f"/proc/{os.getppid()}/stat") as fh:  # the parent's parent: field 4
        grandparent = fh.read().rsplit(")", 1)[1].split()[1]
    return {"self": title("self"), "parent": title(os.getppid()),
            "grandparent": title(grandparent)}


@up.pipeline(name="process-titles")
def titles():
    return process_titles()


# ---------------------------------------------------------------- artifacts (issue 15)
# a Model read by the members of a group mapped over its producer's value, and by a gated task


@up.task
def make(model: up.Output[up.Model]) -> list:
    with open(model.path, "w") as fh:
        fh.write("m")
    return [1, 2]


@up.task
def use(x: int, model: up.Input[up.Model]) -> int:
    with open(model.path) as fh:
        return x + len(fh.read())


@up.task
def gate() -> bool:
    return True


@up.pipeline(name="per-item")
def per_item(x: int, model):
    return use(x, model=model)


@up.pipeline(name="mapped-and-gated-consumers")
def mapped_and_gated():
    made = make()
    out = per_item.map(x=made, model=made.outputs["model"])
    with up.when(gate()):
        gated = use(1, model=made.outputs["model"])
    return {"out": out, "gated": gated}
