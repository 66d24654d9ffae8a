"""Benchmark of the Prefect backend: server start, compile, and per-run cost (fork server vs a
fresh subprocess per run). Writes results.json and RESULTS.md next to this file.

    uv run python comparisons/perf/prefect/bench.py [--quick]

Also run by comparisons/perf/run.py through ``run(quick)``.
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
ROOT = HERE.parents[2]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "examples")]


def run(quick: bool = False) -> dict:
    repeats = 1 if quick else 3
    tmp = Path(tempfile.mkdtemp(prefix="unipipe-prefect-bench-"))
    for key in [k for k in os.environ if k.startswith("PREFECT_")]:
        del os.environ[key]
    os.environ.update(UNIPIPE_CACHE_URL=str(tmp / "cache"), UNIPIPE_ARTIFACT_URL=str(tmp / "art"),
                      UNIPIPE_TRACE_DIR=str(tmp / "trace"))
    import ml_training
    from pipelines import features
    from unipipe_prefect.server import LocalPrefectServer, use_shared_server

    import unipipe as up

    t0 = time.perf_counter()
    server = LocalPrefectServer(home=tmp / "server").start()
    startup = time.perf_counter() - t0
    use_shared_server(server)
    figures: dict[str, object] = {"server_start_s": round(startup, 2)}
    try:
        compile_s = []
        for i in range(repeats + 2):
            t = time.perf_counter()
            up.compile(ml_training.training, target="prefect", out_dir=tmp / f"c{i}")
            compile_s.append(time.perf_counter() - t)
        figures["compile_ml_training_s_median"] = round(statistics.median(compile_s), 3)
        for mode in ("1", "0"):
            os.environ["UNIPIPE_PREFECT_FORKSERVER"] = mode
            up.run(features.non_retryable, backend="prefect")  # warm-up (starts the fork server)
            runs = []
            for _ in range(repeats):
                t = time.perf_counter()
                r = up.run(features.fanout, backend="prefect")
                runs.append(time.perf_counter() - t)
                assert r.state == "success"
            key = "forkserver" if mode == "1" else "subprocess"
            figures[f"run_fanout_{key}_s"] = [round(x, 2) for x in runs]
            figures[f"run_fanout_{key}_s_median"] = round(statistics.median(runs), 2)
        t = time.perf_counter()
        up.run(features.fanout, backend="local")
        figures["run_fanout_local_reference_s"] = round(time.perf_counter() - t, 2)
    finally:
        server.stop()
    figures["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count(),
                          "loadavg_at_end": [round(x, 2) for x in os.getloadavg()]}
    figures["when"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    md = [
        "# Prefect backend: performance figures",
        "",
        f"Measured {figures['when']} on {os.cpu_count()} CPUs (load average at the end "
        f"{figures['machine']['loadavg_at_end']}).",  # type: ignore[index]
        "",
        "| What | Seconds |",
        "|---|---|",
        f"| `prefect server start` until /api/health answers | {figures['server_start_s']} |",
        f"| compile ml-training (flow module + prefect.yaml), median of {repeats + 2} | {figures['compile_ml_training_s_median']} |",
        f"| run `fanout` on the server, fork server (median of {repeats}) | {figures['run_fanout_forkserver_s_median']} |",
        f"| run `fanout` on the server, fresh subprocess per run (median of {repeats}) | {figures['run_fanout_subprocess_s_median']} |",
        f"| run `fanout` on the reference runner | {figures['run_fanout_local_reference_s']} |",
        "",
        "The fork server imports Prefect once; each run is still its own forked process.",
    ]
    figures["markdown"] = "\n".join(md[2:])
    return figures


if __name__ == "__main__":
    result = run(quick="--quick" in sys.argv)
    (HERE / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    (HERE / "RESULTS.md").write_text("# Prefect backend: performance figures\n\n"
                                     + result["markdown"] + "\n")
    print(result["markdown"])
