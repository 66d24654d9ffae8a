"""Comparing a run trace with a case's expectations, the IR's policies and the reference runner.

Every function returns a list of differences, each one sentence a person can act on; an empty
list means "behaves the same".
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from unipipe.harness.cases import Expectation
from unipipe.harness.normalise import alert_key, delays, jsonable


def _fmt(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 160 else text[:157] + "..."


def check_expectation(run: dict[str, Any], exp: Expectation, where: str = "") -> list[str]:
    """The case's expected outcome: refusal, state, output, tasks, alerts."""
    pre = f"{where}: " if where else ""
    if exp.refused:
        if run["status"] != "refused":
            got = run["state"] if run["status"] == "ok" else run["status"]
            return [f"{pre}expected the run to be refused before running, got {got}"]
        return []
    if run["status"] != "ok":
        return [f"{pre}the run did not finish: {run['status']}: {run.get('error')}"]
    diffs: list[str] = []
    if exp.state is not None and run["state"] != exp.state:
        diffs.append(f"{pre}state is {run['state']}, expected {exp.state}")
    if exp.run_attempts is not None and run.get("run_attempts") != exp.run_attempts:
        diffs.append(f"{pre}the run was tried {run.get('run_attempts')} time(s), expected "
                     f"{exp.run_attempts}")
    if exp.check_output and run["output"] != jsonable(exp.output):
        diffs.append(f"{pre}output is {_fmt(run['output'])}, expected {_fmt(exp.output)}")
    for label, fields in exp.tasks.items():
        got = run["tasks"].get(label)
        if got is None:
            diffs.append(f"{pre}task {label} is missing from the result")
            continue
        for key, want in fields.items():
            if key == "max_concurrent":
                peak = peak_concurrency(run, label)
                if peak > want:
                    diffs.append(f"{pre}task {label}: {peak} of its elements' attempts ran at "
                                 f"once, expected at most {want}")
                continue
            have = got.get(key)
            if key == "output":
                have, want = have, jsonable(want)
            if key == "error_type" and have != want:
                log_types = {e.get("error_type") for e in got.get("attempt_log", [])}
                if want in log_types:
                    continue  # the shim saw the user's error; the engine reported its wrapper
            if have != want:
                diffs.append(f"{pre}task {label}.{key} is {_fmt(have)}, expected {_fmt(want)}")
    if exp.alerts is not None:
        diffs += _alert_diff(run["alerts"], exp.alerts, pre, "expected")
    for key, want in (("metrics", exp.metrics), ("artifacts", exp.artifacts),
                      ("reports", exp.reports)):
        if want is not None and run.get(key, {}) != jsonable(want):
            diffs.append(f"{pre}{key} are {_fmt(run.get(key))}, expected {_fmt(want)}")
    return diffs


def peak_concurrency(run: dict[str, Any], label: str) -> int:
    """How many attempts of a mapped task's elements (``label[i]``) overlapped at most, from
    each attempt's start and end (an attempt that ends when another starts does not overlap)."""
    edges: list[tuple[float, int]] = []
    prefix = f"{label}["
    for name, task in run["tasks"].items():
        if not name.startswith(prefix):
            continue
        for e in task.get("attempt_log", []):
            if e.get("start") is not None and e.get("end") is not None:
                edges += [(float(e["start"]), 1), (float(e["end"]), -1)]
    peak = running = 0
    for _, step in sorted(edges):  # at equal times the end (-1) sorts before the start
        running += step
        peak = max(peak, running)
    return peak


def _alert_diff(got: list[dict[str, Any]], want: list[dict[str, Any]], pre: str,
                other: str) -> list[str]:
    g, w = Counter(map(alert_key, got)), Counter(map(alert_key, want))
    if g == w:
        return []
    extra = sorted((g - w).elements())
    missing = sorted((w - g).elements())
    parts = []
    if missing:
        parts.append("missing " + ", ".join(_alert_text(k) for k in missing))
    if extra:
        parts.append("unexpected " + ", ".join(_alert_text(k) for k in extra))
    return [f"{pre}alerts differ from {other}: " + "; ".join(parts)]


def _alert_text(key: tuple[str, str, str]) -> str:
    task, event, channel = key
    return f"{event} of {task or 'pipeline'} via {channel}"


def check_delays(run: dict[str, Any], ir: Any, tolerance: dict[str, float],
                 where: str = "") -> list[str]:
    """Every observed wait before a retry against the IR formula, within the stated tolerance.

    A wait may not be shorter than ``base - early`` (retrying sooner than declared changes what a
    pipeline does to the system it calls) nor longer than ``base*(1+jitter) + late +
    late_ratio*base``: engines add process start-up and polling to every wait (Airflow starts
    a task process per attempt, seconds on a loaded 2-core machine), so the upper bound catches
    gross errors (an engine default of minutes) while the timeline shows the exact gaps.
    """
    from unipipe.runtime.retry import base_delay

    if run["status"] != "ok":
        return []
    pre = f"{where}: " if where else ""
    diffs: list[str] = []
    for label, t in run["tasks"].items():
        if t.get("aggregate"):
            continue
        task_id = label.split("[", 1)[0]
        try:
            retry = ir.effective(task_id).retry
        except KeyError:
            continue
        if retry is None or retry.max_retries == 0:
            continue
        r = retry.model_dump()
        for k, gap in enumerate(delays(t), start=1):
            if gap is None:
                continue
            base = base_delay(r, k)
            low = base - tolerance["early"]
            high = base * (1 + r.get("jitter", 0.0)) + tolerance["late"] + \
                tolerance["late_ratio"] * base
            if gap < low:
                diffs.append(f"{pre}retry {k} of {label} came after {gap:.2f}s, sooner than the "
                             f"policy's {base:.2f}s (tolerance {tolerance['early']:g}s)")
            elif gap > high:
                diffs.append(f"{pre}retry {k} of {label} came after {gap:.2f}s, later than "
                             f"{high:.2f}s (policy {base:.2f}s plus tolerance)")
    return diffs


def check_order(run: dict[str, Any], ir: Any, where: str = "") -> list[str]:
    """No task starts before the tasks it depends on (data, condition, after) have finished."""
    if run["status"] != "ok":
        return []
    pre = f"{where}: " if where else ""
    spans: dict[str, tuple[float, float]] = {}
    copies: dict[str, tuple[float, float]] = {}  # label ``task[i]`` -> its own span
    for label, t in run["tasks"].items():
        # A cache hit executes nothing (engines such as KFP report it after the fact), so
        # only real executions are ordered.
        log = [e for e in t.get("attempt_log", []) if e.get("start") is not None
               and e.get("end") is not None and not e.get("cache_hit")]
        if not log:
            continue
        task_id = label.split("[", 1)[0]
        s, e = min(x["start"] for x in log), max(x["end"] for x in log)
        if task_id != label:
            copies[label] = (s, e)
        if task_id in spans:
            s, e = min(s, spans[task_id][0]), max(e, spans[task_id][1])
        spans[task_id] = (s, e)
    # in a mapped sub-pipeline each copy is ordered on its own: clean[1] after load[1] only
    mapped = {t.id: t.group for t in ir.tasks
              if t.group is not None and ir.group(t.group).map_over is not None}
    diffs = []
    for task in ir.tasks:
        if task.id not in spans:
            continue
        for dep in task.upstream():
            if task.id in mapped and mapped.get(dep) == mapped[task.id]:
                pairs = [(label, f"{dep}[{label.split('[', 1)[1]}") for label in copies
                         if label.split("[", 1)[0] == task.id]
            else:
                pairs = [(task.id, dep)]
            for mine, theirs in pairs:
                have = copies if mine in copies else spans
                if theirs not in copies and theirs not in spans:
                    continue
                start, end = have[mine][0], (copies.get(theirs) or spans[theirs])[1]
                if start < end - 0.05:
                    diffs.append(f"{pre}{mine} started at {start:.2f}s, before its "
                                 f"upstream {theirs} finished at {end:.2f}s")
    return diffs


def check_consistency(run: dict[str, Any], where: str = "") -> list[str]:
    pre = f"{where}: " if where else ""
    return [pre + n for n in run.get("notes", [])]


def compare_runs(run: dict[str, Any], ref: dict[str, Any], backend: str,
                 where: str = "") -> list[str]:
    """What the backend did against what the reference runner did, field by field."""
    pre = f"{where}: " if where else ""
    if ref["status"] != run["status"]:
        return [f"{pre}{backend} {run['status']} ({run.get('error') or run.get('state')}), "
                f"reference {ref['status']} ({ref.get('error') or ref.get('state')})"]
    if run["status"] != "ok":
        return []
    diffs = []
    if run["state"] != ref["state"]:
        diffs.append(f"{pre}state: {backend} {run['state']}, reference {ref['state']}")
    if run.get("run_attempts") != ref.get("run_attempts"):
        diffs.append(f"{pre}run tries: {backend} {run.get('run_attempts')}, reference "
                     f"{ref.get('run_attempts')}")
    if run["output"] != ref["output"]:
        diffs.append(f"{pre}output: {backend} {_fmt(run['output'])}, reference {_fmt(ref['output'])}")
    labels = sorted(set(run["tasks"]) | set(ref["tasks"]))
    for label in labels:
        a, b = run["tasks"].get(label), ref["tasks"].get(label)
        if a is None or b is None:
            diffs.append(f"{pre}task {label}: reported by "
                         f"{'the reference only' if a is None else backend + ' only'}")
            continue
        for key in ("state", "attempts", "cache_hit"):
            if a.get(key) != b.get(key):
                diffs.append(f"{pre}task {label}.{key}: {backend} {a.get(key)}, "
                             f"reference {b.get(key)}")
    diffs += _alert_diff(run["alerts"], ref["alerts"], pre, "the reference")
    for key in ("metrics", "artifacts", "reports"):
        if run.get(key, {}) != ref.get(key, {}):
            diffs.append(f"{pre}{key}: {backend} {_fmt(run.get(key))}, "
                         f"reference {_fmt(ref.get(key))}")
    return diffs


def check_chain(chain: dict[str, Any] | None, spec: Any, ref: dict[str, Any] | None,
                backend: str = "") -> list[str]:
    """What an event chain started (``{"consumer_runs": [n per producer run], "consumer":
    [[B run traces] per producer run]}``) against the case's ``chain:`` (:class:`Chain`) and,
    for a backend, the reference's chain: the count of consumer runs after each producer run,
    and each consumer run's expectation and fields."""
    if chain is None:
        return ["the chain was not observed"]
    diffs: list[str] = []
    want = [r.consumer_runs for r in spec.runs]
    if chain["consumer_runs"] != want:
        diffs.append(f"consumer runs the engine created after each producer run: "
                     f"{chain['consumer_runs']}, expected {want}")
    ref_runs = [r for rs in (ref or {}).get("consumer", []) for r in rs]
    for i, runs in enumerate(chain["consumer"], start=1):
        for k, run in enumerate(runs, start=1):
            where = f"consumer run {k} after producer run {i}"
            diffs += check_expectation(run, spec.expect, where)
            diffs += check_consistency(run, where)
            if ref is not None and ref_runs:  # every reference B run is alike: the first one
                diffs += compare_runs(run, ref_runs[0], backend, where)
    if ref is not None and not ref_runs and any(chain["consumer_runs"]):
        diffs.append("the reference started no consumer run to compare with")
    return diffs
