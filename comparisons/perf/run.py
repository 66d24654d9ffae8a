"""Run unipipe's benchmarks and record the figures (JSON + a short Markdown table).

    uv run python comparisons/perf/run.py [--quick] [--skip compile,shim,conformance,backends]

Benchmarks (never timed tests; figures only):
- compile: `compile_ir` for every installed target on synthetic pipelines of 10..10000 tasks,
  all targets together, and kfp's own compiler on the same shape written natively
  (native_kfp.py, in a fresh process, stopped after --native-timeout seconds);
- shim: overhead of `unipipe.runtime.invoke` per task attempt against calling the function;
- conformance: wall time of the conformance suite (comparisons/cases) per backend;
- per-backend benchmarks under comparisons/perf/<backend>/bench.py and shim_engines.py (each
  exposes `run(quick: bool) -> dict` with a "markdown" summary): Airflow DagBag parse time,
  Prefect server start and per-run cost, the shim's overhead per attempt on each engine.
Results land in comparisons/perf/results.json and comparisons/perf/RESULTS.md."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

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


def _kfp_native(n: int, *, speedups: bool, timeout_s: float) -> dict:
    """kfp's own compile of the same shape written natively, in a fresh process (timed inside)."""
    import subprocess

    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, str(HERE / "native_kfp.py"), str(n), str(Path(tmp) / "n.yaml")]
        try:
            done = subprocess.run(cmd + (["--speedups"] if speedups else []), capture_output=True,
                                  text=True, timeout=timeout_s, check=True)
        except subprocess.TimeoutExpired:
            return {"seconds": None, "note": f"stopped after {timeout_s:.0f} s"}
        except subprocess.CalledProcessError as exc:
            return {"seconds": None, "note": f"failed: {exc.stderr.strip().splitlines()[-1][:200]}"}
    return {"seconds": json.loads(done.stdout.strip().splitlines()[-1])["seconds"]}


def bench_compile(sizes: list[int], budget_s: float, native_timeout_s: float) -> list[dict]:
    """`compile_ir` per target and size; kfp's own compile of the same shape, plain and with
    unipipe's speedups; a target is not tried at the next size once one took over budget_s."""
    import synthetic

    from unipipe.compiler.driver import compile_ir
    from unipipe.compiler.registry import compile_targets

    _warm_up()
    rows = []
    over: set[str] = set()
    for n in sizes:
        ir = synthetic.pipeline(n)
        total, complete = 0.0, True
        for target in compile_targets():
            if target in over:
                rows.append({"target": target, "tasks": n, "seconds": None,
                             "note": f"not tried: the previous size took over {budget_s:.0f} s"})
                complete = False
                continue
            with tempfile.TemporaryDirectory() as tmp:
                start = time.perf_counter()
                try:
                    compile_ir(ir, target, tmp)
                    seconds = time.perf_counter() - start
                    rows.append({"target": target, "tasks": n, "seconds": round(seconds, 4),
                                 "ms_per_task": round(1000 * seconds / n, 3)})
                    total += seconds
                except Exception as exc:  # noqa: BLE001 - recorded, not hidden
                    rows.append({"target": target, "tasks": n, "seconds": None,
                                 "note": f"failed: {type(exc).__name__}: {str(exc)[:200]}"})
                    seconds, complete = 0.0, False
            if seconds > budget_s:
                over.add(target)
            print(f"compile {target:9s} {n:6d} tasks: {rows[-1].get('seconds')} s", flush=True)
        if complete:
            rows.append({"target": "all targets", "tasks": n, "seconds": round(total, 4),
                         "ms_per_task": round(1000 * total / n, 3)})
        for label, speedups in (("kfp alone", False), ("kfp alone + speedups", True)):
            if label in over:
                rows.append({"target": label, "tasks": n, "seconds": None,
                             "note": "not tried: the previous size did not finish"})
                continue
            row = {"target": label, "tasks": n, **_kfp_native(n, speedups=speedups,
                                                              timeout_s=native_timeout_s)}
            if row["seconds"] is not None:
                row["ms_per_task"] = round(1000 * row["seconds"] / n, 3)
            else:
                over.add(label)
            rows.append(row)
            print(f"compile {label:20s} {n:6d} tasks: {row.get('seconds')} s", flush=True)
    return rows


def compile_ratios(rows: list[dict]) -> list[dict]:
    """All targets together against kfp alone (the issue's goal: within 1.5x), per size."""
    by = {(r["target"], r["tasks"]): r.get("seconds") for r in rows}
    out = []
    for n in sorted({r["tasks"] for r in rows}):
        total = by.get(("all targets", n))
        for label in ("kfp alone", "kfp alone + speedups"):
            base = by.get((label, n))
            out.append({"tasks": n, "versus": label, "all_targets_s": total, "kfp_s": base,
                        "ratio": round(total / base, 2) if total and base else None})
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


def bench_conformance(quick: bool) -> dict:
    """Wall time of the conformance suite per backend: each engine's lane alone (one case after
    another, nothing else running), after one reference-runner lane whose runs they reuse."""
    from unipipe.harness.cases import discover
    from unipipe.harness.execute import REFERENCE, run_suite

    cases = discover([str(HERE.parent / "cases")])
    if quick:
        cases = [c for c in cases if c.id in ("retry_fail_twice", "cache_second_run",
                                              "quality_gate_skips")]
    out: dict = {"cases": len(cases), "lanes": {}}
    with tempfile.TemporaryDirectory(prefix="unipipe-perf-conform-") as tmp:
        ref_suite = run_suite(cases, [REFERENCE], Path(tmp) / REFERENCE, jobs=1, shards=1)
        out["lanes"][REFERENCE] = {"seconds": ref_suite.lane_seconds.get(REFERENCE),
                                   "ok": ref_suite.ok}
        reference = {c.id: ref_suite.raws[(c.id, REFERENCE)] for c in cases}
        print(f"conformance {REFERENCE:9s}: {out['lanes'][REFERENCE]['seconds']} s", flush=True)
        for backend in ("airflow", "prefect", "kubeflow"):
            suite = run_suite(cases, [backend], Path(tmp) / backend, jobs=1, shards=1,
                              reference=reference)
            bad = [f"{o.case}: {o.status}" for o in suite.outcomes.values() if not o.ok]
            out["lanes"][backend] = {"seconds": suite.lane_seconds.get(backend), "ok": not bad,
                                     "problems": bad}
            print(f"conformance {backend:9s}: {out['lanes'][backend]['seconds']} s"
                  f"{' (problems: ' + ', '.join(bad) + ')' if bad else ''}", flush=True)
    return out


def backend_benches(quick: bool) -> dict:
    """comparisons/perf/<backend>/bench.py and comparisons/perf/shim_engines.py: `run(quick)`."""
    out = {}
    paths = sorted(HERE.glob("*/bench.py")) + sorted(HERE.glob("shim_engines.py"))
    for path in paths:
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
             f"{data.get('load_average', '?')} at the start. Versions: unipipe {m['unipipe']}, "
             f"Airflow {m['apache-airflow']}, Prefect {m['prefect']}, kfp {m['kfp']}. "
             f"Recorded {data['recorded']} with `uv run python comparisons/perf/run.py"
             f"{' --quick' if data.get('quick') else ''}`.", "",
             "## Compile time (synthetic pipelines, comparisons/perf/synthetic.py)", "",
             "`kfp alone` is kfp's compiler on the same shape written natively "
             "(comparisons/perf/native_kfp.py: the `@dsl.pipeline` build and the YAML write); "
             "`+ speedups` is the same with the byte-identical speedups unipipe applies to kfp "
             "while compiling (unipipe_kubeflow.kfp_compile.kfp_speedups).", "",
             "| target | tasks | seconds | ms/task |", "|---|---:|---:|---:|"]
    for r in data["compile"]:
        lines.append(f"| {r['target']} | {r['tasks']} | {_cell(r.get('seconds')) if r.get('seconds') is not None else r.get('note', '-')} "
                     f"| {_cell(r.get('ms_per_task'))} |")
    lines += ["", "All targets together against kfp alone (goal: at most 1.5x):", "",
              "| tasks | versus | all targets s | kfp s | ratio |", "|---:|---|---:|---:|---:|"]
    for r in data.get("compile_ratios", []):
        lines.append(f"| {r['tasks']} | {r['versus']} | {_cell(r['all_targets_s'])} | "
                     f"{_cell(r['kfp_s'])} | {_cell(r['ratio'])} |")
    lines += ["", "## Runtime shim overhead per attempt (in-process, vs calling the function)", "",
              "| mode | median ms | p95 ms |", "|---|---:|---:|"]
    for label, r in data["shim"].items():
        lines.append(f"| {label} | {r['median_ms']} | {r['p95_ms']} |")
    conf = data.get("conformance")
    if conf:
        lines += ["", f"## Conformance suite wall time per backend ({conf['cases']} cases)", "",
                  "Each backend's lane alone, one case after another (engine start-up included); "
                  "the engines reuse the reference runner's records.", "",
                  "| backend | seconds | all match |", "|---|---:|---|"]
        for b, r in conf["lanes"].items():
            lines.append(f"| {b} | {_cell(r['seconds'])} | {'yes' if r['ok'] else 'no: ' + '; '.join(r.get('problems', []))} |")
    for name, result in data.get("backends", {}).items():
        lines += ["", f"## {name}", ""]
        md = result.get("markdown") if isinstance(result, dict) else None
        lines.append(md if md else "```json\n" + json.dumps(result, indent=2) + "\n```")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes only (a smoke run)")
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--max-tasks", type=int, default=10000,
                        help="largest synthetic pipeline to compile")
    parser.add_argument("--native-timeout", type=float, default=300.0,
                        help="seconds before kfp's native compile of one size is stopped")
    parser.add_argument("--skip", default="", help="comma-separated sections to skip: "
                        "compile, shim, conformance, backends")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    sizes = [n for n in ([10, 100] if args.quick else [10, 100, 1000, 2000, 5000, 10000])
             if n <= args.max_tasks]
    data: dict = {"machine": machine(), "quick": args.quick,
                  "recorded": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                  "load_average": round(os.getloadavg()[0], 2)}
    if "compile" not in skip:
        data["compile"] = bench_compile(sizes, budget_s=150.0 if not args.quick else 30.0,
                                        native_timeout_s=args.native_timeout)
        data["compile_ratios"] = compile_ratios(data["compile"])
    if "shim" not in skip:
        data["shim"] = bench_shim(200 if args.quick else 2000)
    if "conformance" not in skip:
        data["conformance"] = bench_conformance(args.quick)
    if "backends" not in skip:
        data["backends"] = backend_benches(args.quick)
    data.setdefault("compile", [])
    data.setdefault("shim", {})
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(data, indent=2) + "\n")
    (args.out / "RESULTS.md").write_text(markdown(data))
    print(f"wrote {args.out / 'results.json'} and {args.out / 'RESULTS.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
