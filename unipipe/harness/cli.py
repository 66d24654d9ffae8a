"""``unipipe conform PIPELINE_OR_CASE... --backends local,airflow,prefect,kubeflow --out DIR``.

Exit codes: 0 when every case matches on every backend (declared differences included, strict),
1 otherwise, 2 on invalid input (an unreadable case, an unknown backend).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

JOBS_ENV = "UNIPIPE_CONFORM_JOBS"  # lanes running at once (default 6; 4 isolated)
SHARDS_ENV = "UNIPIPE_CONFORM_SHARDS"  # lanes per engine: "2", or "2,airflow=4" (a backend's own)
# Measured on 2 cores with 69 cases (2026-12-07; whole suite = the reference runner and three
# engines; figures vary by about 10% between runs of one setting on this machine):
# - 4 lanes at once, 2 per backend: 296 s for 398 s of CPU. The reference runner's and Kubeflow's
#   first lanes, which mostly wait (the cases' own timeouts), held two of the four places for
#   145-160 s while the second Airflow and Prefect lanes waited for one.
# - 6 at once: 245 s for 407-412 s of CPU, with the lanes started in the order of what a lane
#   takes off its backend's queue (execute.lane_order: Prefect's and Airflow's second lanes
#   first). The suite is then bound by the 2 cores (410 s of CPU is at least 205 s).
# - Airflow alone: 2 lanes 148 s (116 s of CPU: its lanes mostly wait, on the hanging and
#   timed-out cases and the chains' schedulers), 3 lanes 105-122 s, 4 lanes 109 s. The suite's
#   Airflow lanes share one prepared Airflow (unipipe.forkserver.shared), so a lane costs no
#   warm-up of its own; in the whole suite the third and fourth start only when a place frees.
# - Earlier, with the cases dealt to lanes up front: 8 at once ended with Prefect's asset_chain_all
#   seeing a consumer run late once (the chain's quiet window, unipipe_prefect.chain.settle, is
#   shorter than the server's trigger evaluation under that load); three lanes per engine (12 at
#   once) was slower, each lane starting its own services.
DEFAULT_JOBS = 6
DEFAULT_SHARDS = 2
#: the lanes per backend when ``UNIPIPE_CONFORM_SHARDS`` is not set; an isolated suite
#: (``--isolated``) keeps 2 per backend: each of its Airflow lanes runs a broker, a scheduler and
#: an API server of its own
DEFAULT_LANES = f"{DEFAULT_SHARDS},airflow=4"
#: lanes at once in an isolated suite (its lanes start real schedulers and workers)
ISOLATED_JOBS = 4


def lane_settings(isolated: bool = False) -> tuple[int, dict[str, int]]:
    """``(jobs, shards)`` for ``run_suite``: the environment's, else the defaults (for an
    isolated suite, ``isolated``: 4 at once, 2 lanes per backend). ``shards`` maps a backend to
    its lanes, ``"*"`` to every other backend's."""
    default = str(DEFAULT_SHARDS) if isolated else DEFAULT_LANES
    jobs = ISOLATED_JOBS if isolated else DEFAULT_JOBS
    return (_count(JOBS_ENV, os.environ.get(JOBS_ENV, str(jobs))),
            parse_shards(os.environ.get(SHARDS_ENV, default)))


def _count(setting: str, text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"{setting}: {text!r} is not a lane count (a whole number, at least 1)")
    return n


def parse_shards(text: str) -> dict[str, int]:
    """``"2"`` -> every backend 2 lanes; ``"2,airflow=4"`` -> Airflow 4, the others 2."""
    shards = {"*": DEFAULT_SHARDS}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, count = part.rpartition("=")
        shards[name.strip() or "*"] = _count(f"{SHARDS_ENV} ({part})", count.strip())
    return shards


def conform_main(pipelines: list[str], backends: list[str], out_dir: Path, console: Any, *,
                 store: str | None = None, isolated: bool = False) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from unipipe.compiler.registry import available
    from unipipe.harness.cases import CaseError, check_tags, discover
    from unipipe.harness.execute import ISOLATED_BACKENDS, REFERENCE, Placement, run_suite
    from unipipe.harness.report import SYMBOL, write_reports
    from unipipe.ir.errors import PipelineError

    if isolated:
        lacking = [b for b in backends if b != REFERENCE and b not in ISOLATED_BACKENDS]
        if lacking:
            console.print(f"[bold red]error:[/] --isolated runs on {', '.join(ISOLATED_BACKENDS)} "
                          f"(the installed engine versions): {', '.join(lacking)} cannot put each "
                          f"attempt in a sandbox (no isolated lane is built for it)")
            return 2
    known = available()
    unknown = [b for b in backends if b.partition("@")[0] not in known
               and b.partition("@")[0] not in ("airflow", "prefect", "kubeflow")]
    if unknown:
        console.print(f"[bold red]error:[/] unknown backend(s) {', '.join(unknown)} "
                      f"(installed: {', '.join(known) or 'none'})")
        return 2
    from unipipe.compiler.registry import UnknownBackend, get_backend_for, split_label

    for label in backends:
        if split_label(label)[1].get("version") and label.partition("@")[0] in known:
            try:
                get_backend_for(label)
            except UnknownBackend as exc:
                console.print(f"[bold red]error:[/] {exc}", markup=True, highlight=False)
                return 2
    try:
        cases = discover(pipelines)
        problems = [p for c in cases if not c.adhoc for p in check_tags(c)]
    except (CaseError, PipelineError) as exc:
        console.print(f"[bold red]error:[/] {exc}", markup=True, highlight=False)
        return 2
    if problems:
        console.print("[bold red]error:[/] case tags must equal features_used():\n  "
                      + "\n  ".join(problems), markup=True, highlight=False)
        return 2
    if not cases:
        console.print("[bold red]error:[/] no case found")
        return 2
    names = list(dict.fromkeys([REFERENCE, *backends]))
    try:
        jobs, shards = lane_settings(isolated)
    except ValueError as exc:
        console.print(f"[bold red]error:[/] {exc}", markup=True, highlight=False)
        return 2
    with Progress(TextColumn("{task.fields[backend]:>9}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.description}"), TimeElapsedColumn(), console=console,
                  transient=False) as progress:
        bars = {b: progress.add_task("waiting", total=len(cases), backend=b) for b in names}

        live = bool(getattr(console, "is_terminal", False))

        def on_event(event: str, case: str, backend: str) -> None:
            if event == "start":
                progress.update(bars[backend], description=case)
            else:
                progress.advance(bars[backend])
                if not live:  # a CI log: one line per finished run instead of redrawn bars
                    console.print(f"{backend:>9} {case}", highlight=False)

        suite = run_suite(cases, names, out_dir / "work", jobs=jobs, shards=shards,
                          on_event=on_event, placement=Placement(store, isolated))
        for b in names:
            progress.update(bars[b], description="done")
    suite.out_dir = out_dir
    paths = write_reports(suite, out_dir)
    table = Table(title=f"conformance: {len(cases)} case(s), {suite.seconds:.0f} s")
    table.add_column("case")
    for b in names:
        table.add_column(b)
    for case in sorted(cases, key=lambda c: c.id):
        cells = []
        for b in names:
            o = suite.outcome(case.id, b)
            label = o.declared if o.status == "xfail" and o.declared else o.status
            cells.append(f"{SYMBOL.get(o.status, '?')} {label}")
        table.add_row(case.id + (" *" if case.required else ""), *cells)
    console.print(table)
    for o in sorted(suite.failures(), key=lambda o: (o.case, o.backend)):
        console.print(f"[red]{o.case} on {o.backend}: {o.status}[/]: {o.reason}", markup=True,
                      highlight=False, soft_wrap=True)
        for d in o.diffs[1:6]:
            console.print(f"    {d}", markup=False, highlight=False, soft_wrap=True)
    console.print(f"reports: {paths['markdown']}, {paths['html']}", highlight=False)
    return 0 if suite.ok else 1
