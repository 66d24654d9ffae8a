"""What an attempt's process costs when it is forked from a zygote (unipipe/runtime/zygote.py)
instead of from the engine's own process (the way before 2026-12-07, unsafe where the engine
runs threads), in a process that has Prefect and the Prefect adapter imported, as a flow run
has:

- ``direct fork``: ``unipipe.runtime.forking.fork`` from the caller, a pipe back (the old way);
- ``forked zygote``: the zygote forked from the caller while it had one thread (a harness
  lane's flow run or ``dags test``), so it shares the caller's whole heap;
- ``spawned zygote``: a fresh interpreter (a worker's flow run, which has threads before any of
  unipipe's code runs), plus what it costs to start one and run its first attempt.

Each attempt runs a target that exits at once; median and p90 of ``--rounds`` attempts (default
40) after one warm-up. Writes zygote.json and zygote.md here.

    uv run --frozen python comparisons/perf/zygote.py [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _direct() -> None:
    from unipipe.runtime.forking import fork

    read, write = os.pipe()
    pid = fork()
    if pid == 0:
        os.write(write, b"x")
        os._exit(0)
    os.close(write)
    os.read(read, 1)
    os.close(read)
    os.waitpid(pid, 0)


def _times(call, rounds: int) -> dict[str, float]:
    call()
    spans = []
    for _ in range(rounds):
        start = time.perf_counter()
        call()
        spans.append((time.perf_counter() - start) * 1000)
    spans.sort()
    return {"median_ms": round(statistics.median(spans), 2),
            "p90_ms": round(spans[int(0.9 * (len(spans) - 1))], 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    import prefect.flow_engine  # noqa: F401 - a flow run's heap
    import prefect.task_engine  # noqa: F401
    import unipipe_prefect.runtime

    from unipipe.runtime import zygote

    target = "unipipe.runtime.zygote:_exit_now"
    rows: dict[str, dict[str, float]] = {"direct fork": _times(_direct, args.rounds)}
    forked = zygote._fork_zygote()
    rows["forked zygote"] = _times(lambda: forked.run(target, ()), args.rounds)
    threading.Thread(target=threading.Event().wait, daemon=True).start()  # as a worker's run
    start = time.perf_counter()
    spawned = zygote._spawn_zygote(unipipe_prefect.runtime.ZYGOTE_PRELOAD)
    spawned.run(target, ())
    first = round((time.perf_counter() - start) * 1000, 1)
    rows["spawned zygote"] = _times(lambda: spawned.run(target, ()), args.rounds)
    data = {"rounds": args.rounds, "rows": rows, "spawn_and_first_attempt_ms": first,
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "python": sys.version.split()[0]}
    (HERE / "zygote.json").write_text(json.dumps(data, indent=2) + "\n")
    lines = ["# An attempt's process: direct fork vs the zygote", "",
             f"`comparisons/perf/zygote.py`, {args.rounds} attempts each after a warm-up, in a "
             "process with Prefect and the Prefect adapter imported; load average "
             f"{data['load_average'][0]}.", "",
             "| how | median ms | p90 ms |", "|---|---:|---:|"]
    lines += [f"| {name} | {r['median_ms']} | {r['p90_ms']} |" for name, r in rows.items()]
    lines += ["", f"Starting a spawned zygote and its first attempt: {first} ms (once per run "
              "that has threads before unipipe's code runs: a Prefect worker's flow run, a "
              "`dags test` outside a harness lane).", ""]
    (HERE / "zygote.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
