"""The ``unipipe`` command (typer + rich).

Exit codes: 0 success, 1 a run that failed, 2 invalid input (nothing written).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import typer

app = typer.Typer(
    name="unipipe",
    help="Write a pipeline once; compile and run it on Airflow, Prefect and Kubeflow Pipelines.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@functools.cache
def _console(stderr: bool) -> Any:
    """The rich Console for stdout or stderr, made on first use: importing rich.console costs
    about 30 ms, and ``compile`` prints its plain lines (paths, diagnostics) without it. No
    emoji codes: ":name:" in a pipeline name or path stays as written."""
    from rich.console import Console

    return Console(stderr=stderr, emoji=False)


def _out() -> Any:
    return _console(False)


def _err() -> Any:
    return _console(True)

PIPELINE_HELP = "path/to/file.py:name, module:name, or an IR .json/.yaml file"


def _invalid(message: str) -> NoReturn:
    from rich.markup import escape

    _err().print(f"[bold red]error:[/] {escape(message)}", markup=True, highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _load(spec: str) -> Any:
    from unipipe.authoring.loader import load_ir, unproduced_trigger_assets
    from unipipe.ir.errors import PipelineError

    try:
        ir = load_ir(spec)
    except PipelineError as exc:
        _invalid(f"invalid pipeline {spec}:\n{exc}")
    for uri in unproduced_trigger_assets(ir):
        where = f"{ir.location.file}:{ir.location.line}: " if ir.location else ""
        _err().print(f"warning: {where}trigger: no pipeline in {ir.module} produces {uri!r} "
                     f"(produces=[up.Asset(...)] on a task); the trigger fires only if another "
                     f"pipeline or an outside process updates it", markup=False, highlight=False,
                     soft_wrap=True)
    return ir


STORE_HELP = ("shared store for artifacts, cache, attempt markers (fsspec URL: s3://bucket/prefix, "
              "gs://..., file:///path), or 'local' for each machine's own folder; default "
              "$UNIPIPE_STORE_URL")


def _store_option() -> Any:
    return typer.Option(None, "--store", envvar="UNIPIPE_STORE_URL", help=STORE_HELP)


def _with_store(ir: Any, store: str | None) -> Any:
    """``ir`` compiled for ``--store`` (exit 2 on a URL that cannot be a shared store)."""
    from unipipe.store import StoreError, with_store

    try:
        return with_store(ir, store)
    except StoreError as exc:
        _invalid(f"--store: {exc}")


def _targets(value: str) -> list[str]:
    from unipipe.compiler.registry import available, compile_targets

    if value == "all":
        names = compile_targets()
        if not names:
            _invalid("no backend is installed (install unipipe-airflow, unipipe-prefect or unipipe-kubeflow)")
        return names
    names = [t.strip() for t in value.split(",") if t.strip()]
    known = available()
    for n in names:
        if n not in known:
            _invalid(f"unknown target {n!r} (installed: {', '.join(known) or 'none'})")
    return names


def _steps(names: list[str], label: str) -> Iterator[str]:
    """``names``, with a transient progress bar on stderr when it is a terminal (elsewhere a
    transient bar draws nothing, so rich.progress is not even imported)."""
    if not sys.stderr.isatty():
        yield from names
        return
    from rich.progress import Progress

    with Progress(console=_err(), transient=True) as progress:
        job = progress.add_task(label, total=len(names))
        for n in names:
            progress.update(job, description=f"{label} for {n}")
            yield n
            progress.advance(job)


@app.command()
def compile(
    pipeline: str = typer.Argument(..., help=PIPELINE_HELP),
    target: str = typer.Option("all", "--target", "-t", help="backend name(s), comma-separated, or 'all'"),
    out_dir: Path = typer.Option(Path("build"), "--out", "-o", help="output folder (one sub-folder per target)"),
    allow_unsupported: bool = typer.Option(False, "--allow-unsupported",
                                           help="warn instead of failing on features a target cannot honour"),
    airflow_version: str | None = typer.Option(None, "--airflow-version", help="Airflow dialect, e.g. 3.3 or 2.11"),
    airflow_executor: str | None = typer.Option(None, "--airflow-executor",
                                                help="kubernetes (default: resources/image become pods), "
                                                     "celery or local (they are reported as not honoured)"),
    dockerfile: bool = typer.Option(False, "--dockerfile",
                                    help="also write each target's code package (package/) and a Dockerfile"),
    store: str | None = _store_option(),
) -> None:
    """Compile a pipeline for one or more targets."""
    from unipipe.compiler.diagnostics import ErrorLevel, UnsupportedFeature, check_features
    from unipipe.compiler.driver import compile_ir
    from unipipe.compiler.registry import get_backend
    from unipipe.ir.features import features_used

    ir = _with_store(_load(pipeline), store)
    names = _targets(target)
    level = ErrorLevel.WARN if allow_unsupported else ErrorLevel.RAISE
    versions = {n: (airflow_version if n == "airflow" else None) for n in names}
    if airflow_executor not in (None, "kubernetes", "celery", "local"):
        _invalid(f"--airflow-executor {airflow_executor!r}: choose kubernetes, celery or local")
    # Check every target before writing anything: a refused feature leaves no files behind.
    from unipipe.compiler.registry import UnknownBackend

    for n in names:
        try:
            backend = get_backend(n)
        except UnknownBackend as exc:
            _invalid(str(exc))
        version = versions[n] or backend.versions[0]
        if version not in backend.versions:
            _invalid(f"{n} cannot target version {version!r}; choose one of {', '.join(backend.versions)}")
        try:
            check_features(n, backend.support(version), features_used(ir), ErrorLevel.RAISE
                           if level is ErrorLevel.RAISE else ErrorLevel.IGNORE)
        except UnsupportedFeature as exc:
            _invalid(str(exc))
    written: list[Path] = []
    for n in _steps(names, "compiling"):
        try:
            result = compile_ir(ir, n, out_dir / n, error_level=level,
                                target_version=versions[n],
                                **({"airflow_executor": airflow_executor}
                                   if n == "airflow" and airflow_executor else {}))
        except UnsupportedFeature as exc:  # a backend may refuse a combination of features
            _invalid(str(exc))
        for d in result.diagnostics:
            print(f"{d.level}: {d}", file=sys.stderr)
        written += result.paths
        if dockerfile:
            from unipipe.api import search_path
            from unipipe.deploy.image import write_image_context
            from unipipe.deploy.package import PackageError

            try:
                written += write_image_context(ir, n, out_dir / n, search_path(ir), version=versions[n])
            except PackageError as exc:
                _invalid(str(exc))
    for p in written:  # one path a line, as written: no markup, emoji codes or wrapping
        print(p)


@app.command()
def validate(pipeline: str = typer.Argument(..., help=PIPELINE_HELP)) -> None:
    """Check a pipeline; exit 2 with every problem (file, line, field) if it is invalid."""
    from unipipe.ir.features import features_used

    ir = _load(pipeline)
    feats = ", ".join(f.value for f in features_used(ir)) or "none"
    _out().print(f"valid: pipeline {ir.name!r}, {len(ir.tasks)} tasks, "
                 f"{len(ir.params)} params; features: {feats}", markup=False, highlight=False)


@app.command()
def run(
    pipeline: str = typer.Argument(..., help=PIPELINE_HELP),
    backend: str = typer.Option("local", "--backend", "-b", help="local, airflow[@2.11|@scheduler], prefect, kubeflow"),
    param: list[str] = typer.Option([], "--param", "-p", help="name=value (value read as JSON when it parses)"),
    as_json: bool = typer.Option(False, "--json", help="print the RunResult as JSON on stdout"),
    host: str | None = typer.Option(None, "--host", help="a remote engine API (backends that support it)"),
    store: str | None = _store_option(),
) -> None:
    """Run a pipeline on a backend and report what happened, task by task."""
    from unipipe.api import run as run_pipeline
    from unipipe.compiler.diagnostics import UnsupportedFeature
    from unipipe.compiler.registry import UnknownBackend
    from unipipe.ir.errors import PipelineError
    from unipipe.params import parse_cli_params

    ir = _with_store(_load(pipeline), store)
    if host:  # a remote engine: its tasks run on its machines (KFP: a pod each)
        from unipipe.store import StoreError, require_shared

        try:
            require_shared(ir, f"{backend} --host {host}", explicit_local=store == "local",
                           why="each task on a machine of the remote engine", flag="--backend")
        except StoreError as exc:
            _invalid(str(exc))
    try:
        params = parse_cli_params(param)
        extra = {"host": host} if host else {}
        with _err().status(f"running {ir.name} on {backend}"), \
                (_stdout_to_stderr() if as_json else contextlib.nullcontext()):
            result = run_pipeline(ir, backend=backend, params=params, **extra)
    except (PipelineError, UnsupportedFeature, UnknownBackend) as exc:
        _invalid(str(exc))
    if as_json:
        sys.stdout.write(result.to_json() + "\n")
    else:
        _print_result(result)
    raise typer.Exit(0 if result.state == "success" else 1)


@app.command()
def backfill(
    pipeline: str = typer.Argument(..., help=PIPELINE_HELP),
    backend: str = typer.Option("local", "--backend", "-b", help="where the runs are created"),
    start: str = typer.Option(..., "--start", help="first date of the window (ISO 8601; in the "
                              "schedule's timezone unless it has an offset)"),
    end: str = typer.Option(..., "--end", help="last date of the window, included"),
    max_active: int = typer.Option(1, "--max-active", help="at most this many runs at once"),
    param: list[str] = typer.Option([], "--param", "-p", help="name=value for every run"),
    as_json: bool = typer.Option(False, "--json", help="print the RunResults as a JSON list"),
    store: str | None = _store_option(),
) -> None:
    """Create the runs the pipeline's schedule would have created between --start and --end,
    each with its date as up.current().logical_date."""
    from unipipe.backfill import BackfillError, plan
    from unipipe.backfill import backfill as run_backfill
    from unipipe.compiler.diagnostics import UnsupportedFeature
    from unipipe.ir.errors import PipelineError
    from unipipe.params import parse_cli_params

    ir = _with_store(_load(pipeline), store)
    try:
        params = parse_cli_params(param)
        dates = plan(ir, start, end)
    except (PipelineError, BackfillError) as exc:
        _invalid(str(exc))
    _err().print(f"backfill of {ir.name} on {backend}: {len(dates)} run(s) from "
                 f"{dates[0].isoformat() if dates else '-'} to "
                 f"{dates[-1].isoformat() if dates else '-'}")
    done: list[str] = []

    def progress(when: str, result: Any) -> None:
        done.append(when)
        _err().print(f"  [{len(done)}/{len(dates)}] {when}: {result.state}")

    try:
        with contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext():
            results = run_backfill(ir, backend, start, end, max_active=max_active,
                                   params=params, progress=progress)
    except (PipelineError, BackfillError, UnsupportedFeature) as exc:
        _invalid(str(exc))
    if as_json:
        sys.stdout.write(json.dumps([r.to_dict() for r in results], default=str) + "\n")
    failed = [r for r in results if r.state != "success"]
    _err().print(f"{len(results) - len(failed)} of {len(results)} run(s) succeeded")
    raise typer.Exit(1 if failed else 0)


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """While a run prints its RunResult as JSON, whatever else would reach stdout (a task's
    print, an engine's chatter, in this process, a forked attempt or a subprocess) goes to
    stderr, so stdout parses."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no file descriptor 1: nothing below us can write to it either
        saved = None
    if saved is not None:
        os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stderr.flush()
        if saved is not None:
            os.dup2(saved, 1)
            os.close(saved)


def _print_result(result: Any) -> None:
    from rich.markup import escape
    from rich.table import Table

    colour = "green" if result.state == "success" else "red"
    table = Table(title=f"{escape(result.pipeline)} on {result.backend}: [{colour}]{result.state}[/]")
    for col in ("task", "state", "attempts", "cache hit", "error"):
        table.add_column(col)
    for tid, t in result.tasks.items():
        table.add_row(escape(tid), t.state, str(t.attempts), "yes" if t.cache_hit else "",
                      escape(t.error or ""))
    _out().print(table)
    _out().print("output:", json.dumps(result.output, default=str, indent=2), highlight=False)
    for a in result.alerts:
        _out().print(f"alert: {a.get('event')} via {a.get('channel')} ({'ok' if a.get('ok') else a.get('error')})",
                     highlight=False)


@app.command()
def export(
    pipeline: str = typer.Argument(..., help=PIPELINE_HELP),
    output: Path = typer.Option(..., "-o", "--output", help="pipeline.json or pipeline.yaml"),
) -> None:
    """Write the pipeline's IR as JSON or YAML."""
    from unipipe.compiler.codegen import write_atomic
    from unipipe.ir.io import dump_ir

    ir = _load(pipeline)
    fmt = "yaml" if output.suffix.lower() in (".yaml", ".yml") else "json"
    write_atomic(output, dump_ir(ir, fmt))
    print(output)  # a path as written, as compile prints its paths


@app.command()
def schema() -> None:
    """Print the IR's JSON Schema."""
    from unipipe.ir.io import json_schema

    sys.stdout.write(json.dumps(json_schema(), indent=2) + "\n")


@app.command()
def graph(
    pipeline: str = typer.Argument(..., help=PIPELINE_HELP),
    fmt: str = typer.Option("mermaid", "--format", "-f", help="mermaid or dot"),
) -> None:
    """Print the task graph as Mermaid text or Graphviz dot."""
    from unipipe.graph import to_dot, to_mermaid

    ir = _load(pipeline)
    if fmt not in ("mermaid", "dot"):
        _invalid("--format is mermaid or dot")
    sys.stdout.write((to_mermaid(ir) if fmt == "mermaid" else to_dot(ir)) + "\n")


@app.command()
def matrix(
    output: Path = typer.Option(Path("comparisons/MATRIX.md"), "--out", "-o", help="where to write the matrix"),
    check: bool = typer.Option(False, "--check", help="exit 1 if the file differs from a fresh regeneration"),
) -> None:
    """Regenerate the support matrix from the backends' declarations and recorded results."""
    from unipipe.compiler.codegen import write_atomic
    from unipipe.compiler.registry import compile_targets
    from unipipe.harness.matrix import render_matrix

    if not compile_targets():
        _err().print("no backend is installed: the matrix would be empty. Install unipipe-airflow, "
                     "unipipe-prefect or unipipe-kubeflow.")
        raise typer.Exit(1)
    text = render_matrix()
    if check:
        current = output.read_text() if output.exists() else ""
        if current != text:
            _err().print(f"{output} is stale: run `unipipe matrix`")
            raise typer.Exit(1)
        _out().print(f"{output} is up to date", markup=False, highlight=False, soft_wrap=True)
        return
    write_atomic(output, text)
    print(output)  # a path as written, as compile prints its paths


@app.command()
def conform(
    pipelines: list[str] = typer.Argument(..., help="pipelines or case folders / case.yaml files"),
    backends: str = typer.Option("local,airflow,prefect,kubeflow", "--backends", help="comma-separated"),
    out_dir: Path = typer.Option(Path("conformance-out"), "--out", "-o", help="results and reports"),
    store: str | None = typer.Option(None, "--store", help="run every case with its own prefix of "
                                     "this shared store (fsspec URL), compiled into what runs"),
    isolated: bool = typer.Option(False, "--isolated", help="every task attempt in its own sandbox "
                                  "(HOME, TMPDIR, working folder; code from the code package only); "
                                  "needs --store"),
) -> None:
    """Run conformance cases on several backends and compare them with the reference runner."""
    from unipipe.harness.cli import conform_main
    from unipipe.store import StoreError, normalise

    try:
        shared = normalise(store)
    except StoreError as exc:
        _invalid(f"--store: {exc}")
    if isolated and shared is None:
        _invalid("--isolated needs --store URL: in a sandbox the store is the only shared medium")
    raise typer.Exit(conform_main(pipelines, [b.strip() for b in backends.split(",") if b.strip()],
                                  out_dir, console=_err(), store=shared, isolated=isolated))


@app.command()
def deploy(
    pipeline: str = typer.Argument(..., help=PIPELINE_HELP),
    to: str = typer.Option(..., "--to", help="mwaa, composer, prefect, kubeflow or vertex"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the plan, change nothing"),
    option: list[str] = typer.Option([], "--set", help="target option name=value (bucket, environment, ...)"),
    airflow_executor: str | None = typer.Option(None, "--airflow-executor",
                                                help="mwaa/composer: celery (default), local or kubernetes"),
    store: str | None = _store_option(),
) -> None:
    """Deploy a compiled pipeline to a managed service or server."""
    from unipipe.deploy import deploy_main
    from unipipe.store import LOCAL

    ir = _with_store(_load(pipeline), store)
    if airflow_executor is not None:  # the same as --set airflow_executor=... (mwaa, composer)
        option = [*option, f"airflow_executor={airflow_executor}"]
    raise typer.Exit(deploy_main(ir, to, dry_run=dry_run, options=option, console=_out(),
                                 store_local=(store or "").strip() == LOCAL))


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
