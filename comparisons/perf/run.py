"""Run unipipe's benchmarks and record the figures (JSON + a short Markdown table).

    uv run python comparisons/perf/run.py [--quick] [--skip compile,cli,shim,conformance,backends]
        [--backends airflow,prefect,shim_engines] [--shapes mixed,one,per_task]

Benchmarks (never timed tests; figures only):
- compile: `compile_ir` for every installed target on synthetic pipelines of 10..10000 tasks in
  three shapes (synthetic.py: `mixed`, the original chain with a join every 10th task; `one`, a
  plain chain of N calls of ONE task function; `per_task`, a chain of N distinct functions), all
  targets together, and kfp's own compiler on the same shape written natively (native_kfp.py, in
  a fresh process, stopped after --native-timeout seconds); the kubeflow target's time split
  into kfp's own compile (importing the generated module, compiling the YAML) and the rest;
- cli: wall time of `unipipe compile --target all` for a 10-task pipeline in a fresh process
  against `python k10.py` (the same pipeline written natively for kfp and compiled), both with
  this interpreter, median of 5 interleaved runs after one untimed run each;
- shim: overhead of `unipipe.runtime.invoke` per task attempt against calling the function;
- conformance: wall time of the conformance suite (comparisons/cases) per backend;
- per-backend benchmarks under comparisons/perf/<backend>/bench.py and shim_engines.py (each
  exposes `run(quick: bool) -> dict` with a "markdown" summary): Airflow DagBag parse time,
  Prefect server start and per-run cost, the shim's overhead per attempt on each engine.
Results land in comparisons/perf/results.json and comparisons/perf/RESULTS.md."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def machine() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    def v(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    return {"python": platform.python_version(), "platform": platform.platform(),
            "cpus": os.cpu_count(), "unipipe": v("unipipe"), "apache-airflow": v("apache-airflow"),
            "prefect": v("prefect"), "kfp": v("kfp")}


def _warm_up() -> None:
    """Compile a 10-task pipeline once per target, so no figure includes first imports."""
    import synthetic

    from unipipe.compiler.driver import compile_ir
    from unipipe.compiler.registry import compile_targets

    for target in compile_targets():
        with tempfile.TemporaryDirectory() as tmp:
            compile_ir(synthetic.pipeline(10), target, tmp)


def _kfp_native(n: int, *, speedups: bool, timeout_s: float, shape: str = "mixed") -> dict:
    """kfp's own compile of the same shape written natively, in a fresh process (timed inside)."""
    import subprocess

    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, str(HERE / "native_kfp.py"), str(n), str(Path(tmp) / "n.yaml"),
               "--shape", shape]
        try:
            done = subprocess.run(cmd + (["--speedups"] if speedups else []), capture_output=True,
                                  text=True, timeout=timeout_s, check=True)
        except subprocess.TimeoutExpired:
            return {"seconds": None, "note": f"stopped after {timeout_s:.0f} s"}
        except subprocess.CalledProcessError as exc:
            return {"seconds": None, "note": f"failed: {exc.stderr.strip().splitlines()[-1][:200]}"}
    return {"seconds": json.loads(done.stdout.strip().splitlines()[-1])["seconds"]}


@contextlib.contextmanager
def _timing_kfp_compile(into: list[float]) -> Iterator[None]:
    """Time ``unipipe_kubeflow.kfp_compile.compile_yaml`` (kfp's own part of the kubeflow
    target: importing the generated module, whose decorators and ``@dsl.pipeline`` build the
    PipelineSpec, and writing the YAML); the backend looks it up on the module per call."""
    try:
        from unipipe_kubeflow import kfp_compile
    except ImportError:
        yield
        return
    real = kfp_compile.compile_yaml

    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            into.append(time.perf_counter() - start)

    kfp_compile.compile_yaml = timed
    try:
        yield
    finally:
        kfp_compile.compile_yaml = real


def bench_compile(sizes: list[int], budget_s: float, native_timeout_s: float,
                  shapes: tuple[str, ...] = ("mixed",)) -> list[dict]:
    """`compile_ir` per shape, target and size; kfp's own compile of the same shape, plain and
    with unipipe's speedups; a target is not tried at the next size once one took over budget_s.
    The kubeflow rows say how much of their time kfp's own compile took (``kfp_s``)."""
    import synthetic

    from unipipe.compiler.driver import compile_ir
    from unipipe.compiler.registry import compile_targets

    _warm_up()
    rows = []
    modules = tempfile.TemporaryDirectory(prefix="unipipe-perf-shapes-")
    for shape in shapes:
        over: set[str] = set()
        for n in sizes:
            if shape == "per_task":
                synthetic.write_per_task_module(n, Path(modules.name))
            ir = synthetic.build(shape, n)
            total, complete = 0.0, True
            for target in compile_targets():
                if target in over:
                    rows.append({"shape": shape, "target": target, "tasks": n, "seconds": None,
                                 "note": f"not tried: the previous size took over {budget_s:.0f} s"})
                    complete = False
                    continue
                kfp_parts: list[float] = []
                with tempfile.TemporaryDirectory() as tmp, _timing_kfp_compile(kfp_parts):
                    start = time.perf_counter()
                    try:
                        compile_ir(ir, target, tmp)
                        seconds = time.perf_counter() - start
                        row = {"shape": shape, "target": target, "tasks": n,
                               "seconds": round(seconds, 4),
                               "ms_per_task": round(1000 * seconds / n, 3)}
                        if kfp_parts:
                            row["kfp_s"] = round(sum(kfp_parts), 4)
                            row["unipipe_s"] = round(seconds - sum(kfp_parts), 4)
                        rows.append(row)
                        total += seconds
                    except Exception as exc:  # noqa: BLE001 - recorded, not hidden
                        rows.append({"shape": shape, "target": target, "tasks": n, "seconds": None,
                                     "note": f"failed: {type(exc).__name__}: {str(exc)[:200]}"})
                        seconds, complete = 0.0, False
                if seconds > budget_s:
                    over.add(target)
                print(f"compile {shape:8s} {target:9s} {n:6d} tasks: {rows[-1].get('seconds')} s",
                      flush=True)
            if complete:
                rows.append({"shape": shape, "target": "all targets", "tasks": n,
                             "seconds": round(total, 4), "ms_per_task": round(1000 * total / n, 3)})
            for label, speedups in (("kfp alone", False), ("kfp alone + speedups", True)):
                if label in over:
                    rows.append({"shape": shape, "target": label, "tasks": n, "seconds": None,
                                 "note": "not tried: the previous size did not finish"})
                    continue
                row = {"shape": shape, "target": label, "tasks": n, **_kfp_native(
                    n, speedups=speedups, timeout_s=native_timeout_s, shape=shape)}
                if row["seconds"] is not None:
                    row["ms_per_task"] = round(1000 * row["seconds"] / n, 3)
                else:
                    over.add(label)
                rows.append(row)
                print(f"compile {shape:8s} {label:20s} {n:6d} tasks: {row.get('seconds')} s",
                      flush=True)
    modules.cleanup()
    return rows


def compile_ratios(rows: list[dict]) -> list[dict]:
    """All targets together against kfp alone (the issue's goal: within 1.5x), per shape and size."""
    by = {(r.get("shape", "mixed"), r["target"], r["tasks"]): r.get("seconds") for r in rows}
    out = []
    for shape, n in sorted({(r.get("shape", "mixed"), r["tasks"]) for r in rows}):
        total = by.get((shape, "all targets", n))
        for label in ("kfp alone", "kfp alone + speedups"):
            base = by.get((shape, label, n))
            out.append({"shape": shape, "tasks": n, "versus": label, "all_targets_s": total,
                        "kfp_s": base, "ratio": round(total / base, 2) if total and base else None})
    return out


CLI_P10 = '''import unipipe as up


@up.task
def step(x: int) -> int:
    return x + 1


@up.pipeline(name="ten")
def ten(start: int = 0) -> int:
    v = start
    for _ in range(10):
        v = step(v)
    return v
'''

CLI_K10 = '''import sys

from kfp import compiler, dsl


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def step(x: int) -> int:
    return x + 1


@dsl.pipeline(name="ten")
def ten(start: int = 0) -> int:
    v = step(x=start)
    for _ in range(9):
        v = step(x=v.output)
    return v.output


compiler.Compiler().compile(ten, sys.argv[1])
'''


def bench_cli(repeats: int = 5) -> dict:
    """Wall time of a fresh `unipipe compile --target all` of a 10-task chain (one task function
    called 10 times) against a fresh `python k10.py` compiling the same pipeline with kfp, both
    with this interpreter; interleaved, one untimed run each first, median of ``repeats``.
    Measured twice: with bytecode caches (PYTHONPYCACHEPREFIX set to a temp folder, filled by the
    untimed run: what an installed package has) and with the environment as it is."""
    import subprocess

    out: dict = {"repeats": repeats, "modes": {}}
    with tempfile.TemporaryDirectory(prefix="unipipe-perf-cli-") as tmp:
        p10, k10 = Path(tmp) / "p10.py", Path(tmp) / "k10.py"
        p10.write_text(CLI_P10)
        k10.write_text(CLI_K10)
        cmds = {"unipipe": [sys.executable, "-m", "unipipe.cli", "compile", f"{p10}:ten",
                            "--target", "all", "--out", str(Path(tmp) / "out")],
                "kfp": [sys.executable, str(k10), str(Path(tmp) / "k10.yaml")]}
        for mode in ("bytecode cached", "environment as is"):
            env = dict(os.environ)
            if mode == "bytecode cached":
                env.pop("PYTHONDONTWRITEBYTECODE", None)
                env["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "pycache")
            times: dict[str, list[float]] = {k: [] for k in cmds}
            cpu: dict[str, list[float]] = {k: [] for k in cmds}
            for i in range(repeats + 1):
                for kind, cmd in cmds.items():
                    before = resource.getrusage(resource.RUSAGE_CHILDREN)
                    start = time.perf_counter()
                    subprocess.run(cmd, env=env, cwd=tmp, check=True, capture_output=True)
                    wall = time.perf_counter() - start
                    after = resource.getrusage(resource.RUSAGE_CHILDREN)
                    if i:
                        times[kind].append(wall)
                        cpu[kind].append(after.ru_utime + after.ru_stime
                                         - before.ru_utime - before.ru_stime)
            row: dict = {k: round(statistics.median(v), 3) for k, v in times.items()}
            row["ratio"] = round(row["unipipe"] / row["kfp"], 2)
            # CPU seconds (user + system) of the same runs: steadier than wall time on a
            # shared machine, where waiting for a core lengthens both sides unevenly
            row["cpu"] = {k: round(statistics.median(v), 3) for k, v in cpu.items()}
            row["cpu_ratio"] = round(row["cpu"]["unipipe"] / row["cpu"]["kfp"], 2)
            row["samples"] = {k: [round(x, 3) for x in v] for k, v in times.items()}
            out["modes"][mode] = row
            print(f"cli 10 tasks ({mode}): unipipe {row['unipipe']} s, kfp {row['kfp']} s, "
                  f"ratio {row['ratio']} (CPU ratio {row['cpu_ratio']})", flush=True)
    return out


def bench_shim(repeats: int) -> dict:
    import perf_tasks

    from unipipe.runtime.invoke import invoke

    spec = {"pipeline": "bench", "id": "step", "fn": "perf_tasks:step", "source_hash": "0" * 64}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, trace_dir in (("with trace", str(Path(tmp) / "trace")), ("no trace", None)):
            if trace_dir:
                os.environ["UNIPIPE_TRACE_DIR"] = trace_dir
            else:
                os.environ.pop("UNIPIPE_TRACE_DIR", None)
            samples = []
            for i in range(repeats):
                t0 = time.perf_counter()
                invoke(spec, {"x": i}, run_id="bench", attempt=1, backend="bench")
                t1 = time.perf_counter()
                perf_tasks.step(i)
                t2 = time.perf_counter()
                samples.append((t1 - t0) - (t2 - t1))
            results[label] = {"median_ms": round(statistics.median(samples) * 1000, 4),
                              "p95_ms": round(sorted(samples)[int(0.95 * len(samples))] * 1000, 4)}
    os.environ.pop("UNIPIPE_TRACE_DIR", None)
    return results


def _busy_cpu() -> float:
    """Busy CPU seconds of the whole machine so far (``/proc/stat``: user, nice, system, irq,
    softirq, steal), to tell waiting from computing.

    Machine-wide, not this process's children: the fork servers (Airflow's and Prefect's lane
    servers, the harness lanes' worker servers) ignore SIGCHLD, so the kernel reaps their runs
    and ``RUSAGE_CHILDREN`` never counts them; records before 2026-12-07 15:00 UTC undercounted
    the Airflow and Prefect lanes that way. Whatever else runs on the machine counts too: the
    record notes the load average at its start and end."""
    try:
        with open("/proc/stat") as fh:
            fields = [int(x) for x in fh.readline().split()[1:9]]
    except OSError:  # not Linux: this process's waited-for children only
        use = resource.getrusage(resource.RUSAGE_CHILDREN)
        return use.ru_utime + use.ru_stime
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _shards_text(shards: object) -> str:
    """A record's lanes per backend: ``2`` (older records) or ``{"*": 2, "airflow": 4}``."""
    if not isinstance(shards, dict):
        return f"{shards} per backend"
    own = ", ".join(f"{b} {n}" for b, n in sorted(shards.items()) if b != "*")
    return f"{shards.get('*', '?')} per backend" + (f" ({own})" if own else "")


def bench_conformance(quick: bool) -> dict:
    """Wall time of the conformance suite as ``unipipe conform`` runs it (the harness's lane
    settings: ``UNIPIPE_CONFORM_JOBS``/``_SHARDS`` or the defaults, 4 lanes at once, 2 per engine):
    each engine's lanes alone, reusing the runs of a reference suite made first, then the whole
    suite on the four backends (issue 16: the Airflow lanes alone, the whole suite)."""
    from unipipe.harness.cases import discover
    from unipipe.harness.cli import lane_settings
    from unipipe.harness.execute import REFERENCE, run_suite

    cases = discover([str(HERE.parent / "cases")])
    if quick:
        cases = [c for c in cases if c.id in ("retry_fail_twice", "cache_second_run",
                                              "quality_gate_skips")]
    jobs, shards = lane_settings()
    out: dict = {"cases": len(cases), "jobs": jobs, "shards": shards, "lanes": {}}
    backends = ("airflow", "prefect", "kubeflow")
    with tempfile.TemporaryDirectory(prefix="unipipe-perf-conform-") as tmp:
        cpu = _busy_cpu()
        ref_suite = run_suite(cases, [REFERENCE], Path(tmp) / REFERENCE, jobs=jobs, shards=shards)
        out["lanes"][REFERENCE] = {"seconds": round(ref_suite.seconds, 1),
                                   "cpu_seconds": round(_busy_cpu() - cpu, 1),
                                   "lanes": ref_suite.lane_seconds, "ok": ref_suite.ok}
        reference = {c.id: ref_suite.raws[(c.id, REFERENCE)] for c in cases}
        print(f"conformance {REFERENCE:9s}: {out['lanes'][REFERENCE]['seconds']} s", flush=True)
        for backend in backends:
            cpu = _busy_cpu()
            suite = run_suite(cases, [backend], Path(tmp) / backend, jobs=jobs, shards=shards,
                              reference=reference)
            bad = [f"{o.case}: {o.status}" for o in suite.outcomes.values() if not o.ok]
            out["lanes"][backend] = {"seconds": round(suite.seconds, 1),
                                     "cpu_seconds": round(_busy_cpu() - cpu, 1),
                                     "lanes": suite.lane_seconds, "ok": not bad,
                                     "problems": bad}
            print(f"conformance {backend:9s}: {out['lanes'][backend]['seconds']} s"
                  f"{' (problems: ' + ', '.join(bad) + ')' if bad else ''}", flush=True)
        cpu = _busy_cpu()
        whole = run_suite(cases, [REFERENCE, *backends], Path(tmp) / "whole", jobs=jobs,
                          shards=shards)
        bad = [f"{o.case} on {o.backend}: {o.status}" for o in whole.failures()]
        out["whole"] = {"seconds": round(whole.seconds, 1), "lanes": whole.lane_seconds,
                        "cpu_seconds": round(_busy_cpu() - cpu, 1),
                        "ok": not bad, "problems": bad}
        print(f"conformance whole suite: {out['whole']['seconds']} s", flush=True)
    return out


def backend_benches(quick: bool, only: set[str] | None = None) -> dict:
    """comparisons/perf/<backend>/bench.py and comparisons/perf/shim_engines.py: `run(quick)`;
    ``only``: the names to run (airflow, prefect, shim_engines), every one if None."""
    out = {}
    paths = sorted(HERE.glob("*/bench.py")) + sorted(HERE.glob("shim_engines.py"))
    for path in paths:
        if only is not None and (path.parent.name if path.name == "bench.py" else path.stem) not in only:
            continue
        spec = importlib.util.spec_from_file_location(f"bench_{path.parent.name}", path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        print(f"running {path.relative_to(HERE)}", flush=True)
        name = path.parent.name if path.name == "bench.py" else path.stem
        out[name] = module.run(quick=quick)
    return out


def _cell(value: object) -> str:
    return "-" if value is None else str(value)


def markdown(data: dict) -> str:
    m = data["machine"]
    lines = ["# unipipe benchmark results", "",
             f"Machine: {m['cpus']} CPUs, Python {m['python']}, {m['platform']}, load average "
             f"{data.get('load_average', '?')} at the start and {data.get('load_average_end', '?')} "
             f"at the end (1-minute; a shared machine: figures move with it). Versions: unipipe "
             f"{m['unipipe']}, Airflow {m['apache-airflow']}, Prefect {m['prefect']}, kfp "
             f"{m['kfp']}. Recorded {data['recorded']} with `uv run python "
             f"comparisons/perf/run.py{data.get('args') or (' --quick' if data.get('quick') else '')}`.",
             "",
             "## Compile time (synthetic pipelines, comparisons/perf/synthetic.py)", "",
             *_carried(data, "compile"),
             "`kfp alone` is kfp's compiler on the same shape written natively "
             "(comparisons/perf/native_kfp.py: the `@dsl.pipeline` build and the YAML write); "
             "`+ speedups` is the same with the byte-identical speedups unipipe applies to kfp "
             "while compiling (unipipe_kubeflow.kfp_compile.kfp_speedups).", "",
             "Shapes: `mixed`, a chain with a `join` every 10th task (two task functions); "
             "`one`, a plain chain of N calls of ONE task function (one `@dsl.component` "
             "natively); `per_task`, a chain of N distinct task functions (N components "
             "natively, their decorators timed too). For the kubeflow target, `kfp s` is the "
             "part spent in kfp's own compile of the generated module (importing it, which "
             "builds the components and the PipelineSpec, and writing the YAML) and `unipipe s` "
             "the rest (validation, code generation, formatting).", "",
             "| shape | target | tasks | seconds | ms/task | kfp s | unipipe s |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in data["compile"]:
        secs = _cell(r.get('seconds')) if r.get('seconds') is not None else r.get('note', '-')
        lines.append(f"| {r.get('shape', 'mixed')} | {r['target']} | {r['tasks']} | {secs} "
                     f"| {_cell(r.get('ms_per_task'))} | {_cell(r.get('kfp_s'))} "
                     f"| {_cell(r.get('unipipe_s'))} |")
    kfp_rows = [r for r in data["compile"] if r["target"] == "kubeflow" and r.get("kfp_s")]
    if kfp_rows:
        top = max(r["tasks"] for r in kfp_rows)
        shares = ", ".join(f"{r['shape']} {round(100 * r['kfp_s'] / r['seconds'])}%"
                           for r in kfp_rows if r["tasks"] == top)
        lines += ["", f"Where the kubeflow target's time goes at {top} tasks: kfp's own compile "
                  f"takes {shares} of it. A profile (cProfile, `one` shape) puts kfp's time in "
                  "`build_spec_by_group` (kfp/compiler/pipeline_spec_builder.py ~1383 lists every "
                  "task name of the DAG once per task: n^2 `PipelineTask.name` calls, 1M at 1000 "
                  "tasks, left by unipipe's speedups) and in PyYAML's pure-Python emitter writing "
                  "the YAML (libyaml's C emitter folds long strings elsewhere, so kfp_speedups "
                  "only trims the pure-Python one: memoised scalar analysis, fewer steps per "
                  "quoted string, same bytes); unipipe's own part (code generation, one "
                  "`ruff format`, the secret scan) grows linearly (its ms/task in the "
                  "`unipipe s` column). Figures recorded under a high load average move a lot: "
                  "compare ratios measured back to back."]
    lines += ["", "All targets together against kfp alone (goal: at most 1.5x at 1000 tasks, "
              "for the `one` and `per_task` shapes):", "",
              "| shape | tasks | versus | all targets s | kfp s | ratio |",
              "|---|---:|---|---:|---:|---:|"]
    for r in data.get("compile_ratios", []):
        lines.append(f"| {r.get('shape', 'mixed')} | {r['tasks']} | {r['versus']} | "
                     f"{_cell(r['all_targets_s'])} | {_cell(r['kfp_s'])} | {_cell(r['ratio'])} |")
    cli = data.get("cli")
    if cli:
        lines += ["", "## `unipipe compile --target all` at 10 tasks, fresh process (wall time)", "",
                  *_carried(data, "cli"),
                  "A chain of 10 calls of one task function; against `python k10.py`, the same "
                  "pipeline written for kfp and compiled (`import kfp` included on both sides), "
                  f"same interpreter, median of {cli['repeats']} interleaved runs after one "
                  "untimed run each (goal: at most 2x). `bytecode cached`: PYTHONPYCACHEPREFIX "
                  "set to a temp folder the untimed run fills (as an installed package has its "
                  ".pyc); `environment as is`: this machine's settings "
                  f"(PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', '')!r}).",
                  "CPU columns: user + system seconds of the same runs (steadier than wall "
                  "time when other work shares the cores).",
                  "", "| mode | unipipe s | kfp s | ratio | unipipe CPU s | kfp CPU s | CPU ratio |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for mode, r in cli["modes"].items():
            lines.append(f"| {mode} | {r['unipipe']} | {r['kfp']} | {r['ratio']} | "
                         f"{r['cpu']['unipipe']} | {r['cpu']['kfp']} | {r['cpu_ratio']} |")
    if data["shim"]:
        lines += ["", "## Runtime shim overhead per attempt (in-process, vs calling the function)",
                  "", *_carried(data, "shim"), "| mode | median ms | p95 ms |", "|---|---:|---:|"]
    for label, r in data["shim"].items():
        lines.append(f"| {label} | {r['median_ms']} | {r['p95_ms']} |")
    conf = data.get("conformance")
    if conf:
        lines += ["", f"## Conformance suite wall time ({conf['cases']} cases)", "",
                  f"The harness's lanes, as this run set them (UNIPIPE_CONFORM_SHARDS / _JOBS): "
                  f"{_shards_text(conf.get('shards', '?'))}, {conf.get('jobs', '?')} at once, "
                  "engine start-up included. Each backend "
                  "alone (the engines reuse the reference runner's records), then the whole suite "
                  "on the four backends. CPU: busy CPU seconds of the whole machine during the "
                  "run (/proc/stat; fork servers' runs are not the harness's children). Wall time near CPU / cores means the run is bound by computing; far "
                  "above it, that it mostly waits (timeouts, retry delays, schedulers' loops).",
                  "", *_carried(data, "conformance"),
                  "| backend | seconds | CPU s | all match |", "|---|---:|---:|---|"]
        rows = [*conf["lanes"].items(), *([("whole suite", conf["whole"])] if "whole" in conf else [])]
        for b, r in rows:
            lines.append(f"| {b} | {_cell(r['seconds'])} | {_cell(r.get('cpu_seconds'))} | "
                         f"{'yes' if r['ok'] else 'no: ' + '; '.join(r.get('problems', []))} |")
    for name, result in data.get("backends", {}).items():
        lines += ["", f"## {name}", "", *_carried(data, name)]
        md = result.get("markdown") if isinstance(result, dict) else None
        lines.append(md if md else "```json\n" + json.dumps(result, indent=2) + "\n```")
    return "\n".join(lines) + "\n"


def _carry_over(data: dict, previous: Path) -> None:
    """Sections this run skipped keep the figures of the previous run in the same folder (each
    marked with the date it was recorded), so a partial run does not erase the others."""
    if not previous.exists():
        return
    old = json.loads(previous.read_text())
    when = old.get("carried_over", {})
    for key in ("compile", "cli", "shim", "conformance"):
        if key not in data and old.get(key):
            data[key] = old[key]
            data.setdefault("carried_over", {})[key] = when.get(key, old.get("recorded"))
            if key == "compile":
                data["compile_ratios"] = old.get("compile_ratios", [])
    for name, result in (old.get("backends") or {}).items():
        if name not in data.setdefault("backends", {}):
            data["backends"][name] = result
            data.setdefault("carried_over", {})[name] = when.get(name, old.get("recorded"))


def _carried(data: dict, key: str) -> list[str]:
    when = data.get("carried_over", {}).get(key)
    return [f"(Not measured in this run: carried over from the run recorded {when}.)", ""] \
        if when else []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes only (a smoke run)")
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--max-tasks", type=int, default=10000,
                        help="largest synthetic pipeline to compile")
    parser.add_argument("--native-timeout", type=float, default=300.0,
                        help="seconds before kfp's native compile of one size is stopped")
    parser.add_argument("--skip", default="", help="comma-separated sections to skip: "
                        "compile, cli, shim, conformance, backends")
    parser.add_argument("--backends", default="", help="comma-separated backend benchmarks to "
                        "run (airflow, prefect, shim_engines); default: all of them")
    parser.add_argument("--shapes", default="mixed,one,per_task",
                        help="comma-separated synthetic shapes to compile (mixed, one, per_task)")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    sizes = [n for n in ([10, 100] if args.quick else [10, 100, 1000, 2000, 5000, 10000])
             if n <= args.max_tasks]
    data: dict = {"machine": machine(), "quick": args.quick,
                  "recorded": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                  "load_average": round(os.getloadavg()[0], 2),
                  "args": "".join(f" {a}" for a in sys.argv[1:])}
    if "compile" not in skip:
        data["compile"] = bench_compile(sizes, budget_s=150.0 if not args.quick else 30.0,
                                        native_timeout_s=args.native_timeout,
                                        shapes=tuple(filter(None, args.shapes.split(","))))
        data["compile_ratios"] = compile_ratios(data["compile"])
    if "cli" not in skip:
        data["cli"] = bench_cli(2 if args.quick else 5)
    if "shim" not in skip:
        data["shim"] = bench_shim(200 if args.quick else 2000)
    if "conformance" not in skip:
        data["conformance"] = bench_conformance(args.quick)
    if "backends" not in skip:
        data["backends"] = backend_benches(args.quick, set(filter(None, args.backends.split(",")))
                                           or None)
    data["load_average_end"] = round(os.getloadavg()[0], 2)
    _carry_over(data, args.out / "results.json")
    data.setdefault("compile", [])
    data.setdefault("shim", {})
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(data, indent=2) + "\n")
    (args.out / "RESULTS.md").write_text(markdown(data))
    print(f"wrote {args.out / 'results.json'} and {args.out / 'RESULTS.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
