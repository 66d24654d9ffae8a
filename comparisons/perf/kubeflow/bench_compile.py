"""Compile time of a 1000-task pipeline: unipipe -> KFP (module + YAML) vs kfp's compiler alone.

Run: ``.venv/bin/python comparisons/perf/kubeflow/bench_compile.py`` (writes compile.json and
compile.md next to this file). Each figure is the median of REPEATS runs in this process, after
one warm-up run (imports of kfp, libcst and black excluded from all figures). The machine is
shared with other jobs, so figures carry the load average at the start and end of the run.
"""

from __future__ import annotations

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
REPEATS = 3


def timed(fn) -> float:  # noqa: ANN001
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    import bench_tasks
    import kfp
    from kfp import compiler
    from unipipe_kubeflow import codegen, kfp_compile

    import unipipe as up

    out = Path(tempfile.mkdtemp(prefix="bench-kfp-"))
    ir = up.load(bench_tasks.bench_unipipe)

    def generate() -> None:
        codegen.module_text(ir, target_version="2.16", yaml_name="bench.yaml")

    def unipipe_total() -> None:
        up.compile(ir, target="kubeflow", out_dir=out / "unipipe")

    text, _plans, names = codegen.module_text(ir, target_version="2.16", yaml_name="bench.yaml")
    module = out / "bench_kfp.py"
    module.write_text(text)

    def kfp_on_generated() -> None:
        kfp_compile.compile_yaml(module, names.pipeline, out / "generated.yaml")

    def kfp_native() -> None:
        compiler.Compiler().compile(bench_tasks.bench_native, str(out / "native.yaml"))

    load_before = os.getloadavg()[0]
    figures = {}
    for label, fn in [("codegen_module", generate),
                      ("kfp_compile_generated_module", kfp_on_generated),
                      ("unipipe_compile_total", unipipe_total),
                      ("kfp_compile_native_pipeline", kfp_native)]:
        fn()  # warm-up
        runs = [timed(fn) for _ in range(REPEATS)]
        figures[label] = {"median_s": round(statistics.median(runs), 3),
                          "runs_s": [round(r, 3) for r in runs]}
    load_after = os.getloadavg()[0]
    sizes = {
        "generated_module_bytes": len(text.encode()),
        "generated_yaml_bytes": (out / "generated.yaml").stat().st_size,
        "native_yaml_bytes": (out / "native.yaml").stat().st_size,
    }
    ratio = figures["unipipe_compile_total"]["median_s"] / figures["kfp_compile_native_pipeline"]["median_s"]
    result = {
        "benchmark": "compile a 1000-task chain (retries on every task)",
        "tasks": bench_tasks.N_TASKS,
        "python": platform.python_version(), "kfp": kfp.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus (shared with other jobs)",
        "repeats": REPEATS, "figures": figures, "sizes": sizes,
        "load_average_1m": [round(load_before, 2), round(load_after, 2)],
        "unipipe_over_native_ratio": round(ratio, 2),
    }
    (HERE / "compile.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Kubeflow compile benchmark: 1000-task pipeline", "",
        f"kfp {kfp.__version__}, Python {platform.python_version()}, {result['machine']}; "
        f"median of {REPEATS} runs after a warm-up; 1-minute load average {load_before:.1f} -> "
        f"{load_after:.1f} (other jobs share the machine).", "",
        "| step | median (s) |", "|---|---|",
        *[f"| {k} | {v['median_s']} |" for k, v in figures.items()], "",
        f"unipipe's full compile (IR -> module -> kfp compiler -> YAML) takes {ratio:.2f}x the time of "
        "kfp's compiler on the same chain written natively. The 1000 calls share one generated "
        "component (same function and policies; the task id is a constant argument), as the "
        "native pipeline shares `native_step`; the rest is building and formatting the module "
        "(libcst + black) and a larger YAML (each executor's command carries the task spec).", "",
        f"Sizes: module {sizes['generated_module_bytes']} B, YAML {sizes['generated_yaml_bytes']} B "
        f"(native YAML {sizes['native_yaml_bytes']} B).",
    ]
    (HERE / "compile.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
