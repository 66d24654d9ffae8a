"""Run unipipe's benchmarks and record the figures (JSON + a short Markdown table).

    uv run python comparisons/perf/run.py [--quick]

Benchmarks (never timed tests; figures only):
- compile: `compile_ir` for every installed target on synthetic pipelines of 10..10000 tasks;
- shim: overhead of `unipipe.runtime.invoke` per task attempt against calling the function;
- per-backend benchmarks under comparisons/perf/<backend>/bench.py (each exposes
  `run(quick: bool) -> dict`), e.g. Airflow DagBag parse time, KFP compile vs kfp natively.
Results land in comparisons/perf/results.json and comparisons/perf/RESULTS.md.
"""

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


def bench_compile(sizes: list[int], budget_s: float) -> list[dict]:
    import synthetic

    from unipipe.compiler.driver import compile_ir
    from unipipe.compiler.registry import compile_targets

    rows = []
    for target in compile_targets():
        skip_rest = False
        for n in sizes:
            if skip_rest:
                rows.append({"target": target, "tasks": n, "seconds": None,
                             "note": f"skipped: the previous size exceeded {budget_s:.0f} s"})
                continue
            ir = synthetic.pipeline(n)
            with tempfile.TemporaryDirectory() as tmp:
                start = time.perf_counter()
                try:
                    compile_ir(ir, target, tmp)
                    seconds = time.perf_counter() - start
                    rows.append({"target": target, "tasks": n, "seconds": round(seconds, 4),
                                 "ms_per_task": round(1000 * seconds / n, 3)})
                except Exception as exc:  # noqa: BLE001 - recorded, not hidden
                    rows.append({"target": target, "tasks": n, "seconds": None,
                                 "note": f"failed: {type(exc).__name__}: {str(exc)[:200]}"})
                    seconds = 0.0
            if seconds > budget_s:
                skip_rest = True
            print(f"compile {target:9s} {n:6d} tasks: {rows[-1].get('seconds')} s", flush=True)
    return rows


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


def backend_benches(quick: bool) -> dict:
    out = {}
    for path in sorted(HERE.glob("*/bench.py")):
        spec = importlib.util.spec_from_file_location(f"bench_{path.parent.name}", path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        print(f"running {path.relative_to(HERE)}", flush=True)
        out[path.parent.name] = module.run(quick=quick)
    return out


def markdown(data: dict) -> str:
    lines = ["# unipipe benchmark results", "",
             f"Machine: {data['machine']['cpus']} CPUs, Python {data['machine']['python']}, "
             f"{data['machine']['platform']}. Versions: unipipe {data['machine']['unipipe']}, "
             f"Airflow {data['machine']['apache-airflow']}, Prefect {data['machine']['prefect']}, "
             f"kfp {data['machine']['kfp']}. Recorded {data['recorded']}.", "",
             "## Compile time (synthetic pipelines)", "", "| target | tasks | seconds | ms/task |",
             "|---|---:|---:|---:|"]
    for r in data["compile"]:
        lines.append(f"| {r['target']} | {r['tasks']} | {r.get('seconds') if r.get('seconds') is not None else r.get('note', '')} | "
                     f"{r.get('ms_per_task', '')} |")
    lines += ["", "## Runtime shim overhead per attempt (in-process, vs calling the function)", "",
              "| mode | median ms | p95 ms |", "|---|---:|---:|"]
    for label, r in data["shim"].items():
        lines.append(f"| {label} | {r['median_ms']} | {r['p95_ms']} |")
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
                        help="largest synthetic pipeline to compile (10000 takes minutes on KFP)")
    args = parser.parse_args()
    sizes = [n for n in ([10, 100] if args.quick else [10, 100, 1000, 10000]) if n <= args.max_tasks]
    data = {"machine": machine(), "recorded": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "compile": bench_compile(sizes, budget_s=120.0 if not args.quick else 30.0),
            "shim": bench_shim(200 if args.quick else 2000),
            "backends": backend_benches(args.quick)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(data, indent=2) + "\n")
    (args.out / "RESULTS.md").write_text(markdown(data))
    print(f"wrote {args.out / 'results.json'} and {args.out / 'RESULTS.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
