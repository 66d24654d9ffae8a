"""Wall time of the isolated conformance lanes (``unipipe conform --isolated --store s3://...``).

    uv run python comparisons/perf/isolated.py [--required] [--backends kubeflow,prefect]

Starts a real moto S3 server on 127.0.0.1 (the only medium the sandboxes share), runs the cases
on each isolated backend against the reference runner, and writes ``isolated-<backends>.json``
and ``isolated-<backends>.md`` next to this file (``isolated-airflow.md`` for ``--backends airflow``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def run(backends: list[str], required_only: bool) -> dict:
    import boto3
    from deploy.standins import moto_s3

    from unipipe.harness.cases import discover
    from unipipe.harness.execute import Placement, run_suite

    cases = [c for c in discover([ROOT / "comparisons" / "cases"]) if c.required or not required_only]
    with tempfile.TemporaryDirectory(prefix="unipipe-perf-isolated-") as tmp:
        server = moto_s3(Path(tmp))
        try:
            os.environ.update({"AWS_ENDPOINT_URL": server.url, "AWS_ACCESS_KEY_ID": "perf",
                               "AWS_SECRET_ACCESS_KEY": "perf", "AWS_DEFAULT_REGION": "us-east-1"})
            boto3.client("s3").create_bucket(Bucket="unipipe-perf-store")
            start = time.time()
            suite = run_suite(cases, backends, Path(tmp) / "work", jobs=2, shards=1,
                              placement=Placement(store="s3://unipipe-perf-store/conform",
                                                  isolated=True))
            seconds = round(time.time() - start, 1)
        finally:
            server.stop()
    lanes = {}
    for b in backends:
        outcomes = [o for (c, name), o in suite.outcomes.items() if name == b]
        lanes[b] = {"seconds": suite.lane_seconds.get(b),
                    "passed": sum(o.status == "pass" for o in outcomes),
                    "ok": sum(o.ok for o in outcomes), "cases": len(outcomes),
                    "problems": [f"{o.case}: {o.status}" for o in outcomes if not o.ok]}
    return {"recorded": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "load_average": round(os.getloadavg()[0], 2), "cases": len(cases),
            "required_only": required_only, "wall_seconds": seconds,
            "reference_seconds": suite.lane_seconds.get("local"), "lanes": lanes}


def markdown(data: dict) -> str:
    lines = ["# Isolated conformance lanes", "",
             f"`unipipe conform comparisons/cases --isolated --store s3://... --backends "
             f"{','.join(data['lanes'])}`: {data['cases']} cases"
             f"{' (required only)' if data['required_only'] else ''}, every task attempt in a "
             f"sandbox of its own, a moto S3 server the only shared medium. Recorded "
             f"{data['recorded']} (load average {data['load_average']} at the start) with "
             f"`uv run python comparisons/perf/isolated.py --backends {','.join(data['lanes'])}`.", "",
             f"Whole suite, lanes side by side (2 at a time): {data['wall_seconds']} s; the "
             f"reference runner's lane {data['reference_seconds']} s.", "",
             "| backend | lane seconds | pass | ok (pass, xfail, unsupported) | cases |",
             "|---|---:|---:|---:|---:|"]
    for b, r in data["lanes"].items():
        lines.append(f"| {b} | {r['seconds']} | {r['passed']} | {r['ok']} | {r['cases']} |")
    for b, r in data["lanes"].items():
        if r["problems"]:
            lines += ["", f"{b} problems: " + "; ".join(r["problems"])]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--required", action="store_true", help="the required cases only")
    parser.add_argument("--backends", default=None, help="default: every isolated backend")
    args = parser.parse_args()
    from unipipe.harness.execute import ISOLATED_BACKENDS

    backends = args.backends.split(",") if args.backends else list(ISOLATED_BACKENDS)
    data = run(backends, args.required)
    stem = "isolated-" + "-".join(backends)
    (HERE / f"{stem}.json").write_text(json.dumps(data, indent=2) + "\n")
    (HERE / f"{stem}.md").write_text(markdown(data))
    print(markdown(data))
    return 0 if all(not r["problems"] for r in data["lanes"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
