"""The ``prefect`` backend: a flow module and a ``prefect.yaml`` per pipeline, run on a real server."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, ClassVar

from unipipe.compiler import codegen
from unipipe.compiler.backend import CompileOptions, CompileResult, RunOptions
from unipipe.compiler.diagnostics import Diagnostic, ErrorLevel, Support, UnsupportedFeature
from unipipe.ir.features import Feature
from unipipe.ir.models import Pipeline
from unipipe.params import resolve_params
from unipipe.result import RunResult
from unipipe_prefect import codegen as flowgen
from unipipe_prefect import deployment

TARGET_VERSIONS = ("3.7",)


def _support() -> dict[Feature, Support]:
    N, E = Support.native, Support.emulated
    return {
        Feature.PARAMS: N("flow parameters typed from the IR"),
        Feature.DATA_PASSING: N("task results passed as Prefect states"),
        Feature.KEY_PATH: E("key paths are applied by the runtime inside the consuming task"),
        Feature.AFTER: N("tasks run in topological order; an `after` edge gates like data"),
        Feature.CONDITION: N("a plain Python `if` in the flow"),
        Feature.OTHERWISE: N("a plain Python `if ... is False` in the flow (the gate negated)"),
        Feature.RUN_IF_ALL_DONE: N("called unguarded after its upstream task runs, whose states "
                                   "the flow holds; the flow raises at the end if any task "
                                   "failed, so the run is Failed even when the cleanup succeeded"),
        Feature.RUN_IF_ONE_FAILED: N("a plain `if rt.one_failed(...)` over the upstream states "
                                     "in the flow"),
        Feature.MAP: N("task.map(...) with unmapped() for the other inputs"),
        Feature.RETRY: N("retries"),
        Feature.RETRY_DELAY: N("retry_delay_seconds"),
        Feature.RETRY_BACKOFF: N("retry_delay_seconds as the IR's precomputed delay list"),
        Feature.RETRY_MAX_DELAY: N("the delay list is capped before it is written"),
        Feature.RETRY_JITTER: E("Prefect 3.7 ignores retry_jitter_factor for task retries; the "
                                "runtime sleeps the jitter part at the start of each retry"),
        Feature.RETRY_EXCEPTION_FILTER: N("retry_condition_fn"),
        Feature.CACHE: N("cache_policy=INPUTS + TASK_SOURCE; the task source pins the user's "
                         "source hash and the cache version"),
        Feature.CACHE_EXPIRE: N("cache_expiration"),
        Feature.CACHE_KEY_FN: N("cache_key_fn calling the pipeline's key function"),
        Feature.TIMEOUT: N("timeout_seconds; the attempt runs in its own process, which is "
                           "killed at the timeout (map elements in worker threads too)"),
        Feature.RESOURCES: E("per flow run, not per task: the deployment's job variables carry "
                             "the largest cpu/memory request of any task (non-process pools)"),
        Feature.RESOURCES_GPU: E("per flow run, not per task: the largest gpu request goes to "
                                 "the deployment's job variables (non-process pools)"),
        Feature.IMAGE: E("per flow run, not per task: the image every task shares goes to the "
                         "deployment's job variables; differing per-task images are refused"),
        Feature.ALERT_FAILURE: N("task on_failure hook"),
        Feature.ALERT_RETRY: E("delivered from retry_condition_fn, which Prefect calls once per "
                               "failed attempt that will be retried (no retry hook sees the error)"),
        Feature.ALERT_SUCCESS: N("task on_completion hook (cache hits included)"),
        Feature.ALERT_WEBHOOK: N("delivered by the runtime from the hook"),
        Feature.ALERT_EMAIL: N("delivered by the runtime from the hook"),
        Feature.ALERT_CALLBACK: N("called from the hook"),
        Feature.PIPELINE_ALERT: N("flow on_failure / on_completion hooks"),
        Feature.SCHEDULE_CRON: N("deployment schedules: cron"),
        Feature.SCHEDULE_INTERVAL: N("deployment schedules: interval"),
        Feature.SHARED_STORE: N("the flow's result_storage is a remote-file-system block on the "
                                "store (Prefect's cache hits across containers); the shim keeps "
                                "large values there too"),
        Feature.COMMAND: E("a @task whose body has the shim run the argv as a subprocess of the "
                           "attempt's process, no shell (Prefect's core has no command task; "
                           "the prefect-shell integration, not installed here, runs shell "
                           "commands)"),
        Feature.MAP_MAX_PARALLEL: E("the flow submits element i once fewer than N of the "
                                    "task's runs are running (runtime.map_limited, "
                                    "prefect.futures.as_completed): Prefect has no per-map "
                                    "limit, a task runner's max_workers bounds every task"),
        Feature.MAX_ACTIVE_RUNS: N("the deployment's concurrency_limit (deploy only: a flow "
                                   "called directly has no deployment to limit)"),
        Feature.PIPELINE_RETRY: N("@flow(retries=N, retry_delay_seconds=D): the server's "
                                  "RetryFailedFlows rule turns the failed state into "
                                  "AwaitingRetry and the engine runs the flow body again in the "
                                  "same flow run, with new task runs (server/orchestration/"
                                  "core_policy.py ~1054, flow_engine.py ~826); the flow's "
                                  "on_failure hook fires only for the final state"),
        Feature.PIPELINE_TIMEOUT: N("@flow(timeout_seconds=T): the engine raises "
                                    "FlowRunTimeoutError in the flow body and proposes Failed "
                                    "'TimedOut', which flow retries retry "
                                    "(flow_engine.py ~845, ~1281)"),
        Feature.SUBPIPELINE: N("a subflow per group (@flow named after the sub-pipeline, its "
                               "run after the group), called where the group runs; upstream "
                               "task states go in wrapped in quote() (a subflow resolves State "
                               "parameters and never runs below a failed one: flow_engine.py "
                               "~630), the member states come back as its return value or in "
                               "the GroupFailed it raises"),
        Feature.SUBPIPELINE_RETRY: N("@flow(retries=N, retry_delay_seconds=D) on the subflow: "
                                     "the server's RetryFailedFlows rule reruns its body in the "
                                     "same subflow run, with new task runs; cached members hit "
                                     "(server/orchestration/core_policy.py ~1054, "
                                     "flow_engine.py ~826; verified by running)"),
        Feature.SUBPIPELINE_ALERT: N("the subflow's on_failure / on_completion hooks, called "
                                     "for its final state only (flow_engine.py ~999); nothing "
                                     "is sent when none of its tasks ran"),
        Feature.SUBPIPELINE_MAP: N("the group's subflow called once per item, in item order, "
                                   "one copy after another (a subflow run each, named "
                                   "<group>[i] from its map_index parameter: "
                                   "_internal/engine.py ~48 formats flow_run_name with the "
                                   "parameters), its tasks' runs task[i]; one copy at a time "
                                   "is within any max_parallel"),
        Feature.SCHEDULE_WINDOW: E("Prefect's cron schedule has no start or end "
                                   "(client/schemas/schedules.py CronSchedule: cron, timezone, "
                                   "day_or): `unipipe deploy --to prefect` makes the "
                                   "deployment's schedule inactive when `end` has passed, and "
                                   "unipipe clips catchup runs and backfills to the window "
                                   "(schedules.fire_times); a live server scheduler would still "
                                   "create runs before a future `start` and after a future "
                                   "`end` (it schedules from now: server/models/deployments.py "
                                   "~831). With SQLAlchemy 2.1 (unipipe's lock) that scheduler "
                                   "creates no runs at all (docs/facts/events-schedules-"
                                   "artifacts.md B3); a server with SQLAlchemy 2.0 does, "
                                   "observed live over 380 days "
                                   "(tests/prefect/test_prefect_live_scheduler.py). Prefect's "
                                   "cron DST differs from the reference: the spring-forward "
                                   "day's missing 02:30 fires at 01:30 CET, the fall-back "
                                   "day's at the first 02:30 (unipipe-created runs use the "
                                   "reference's dates)"),
        Feature.SCHEDULE_CATCHUP: E("Prefect schedules from now (no catchup: "
                                    "server/models/deployments.py ~831): `unipipe deploy --to "
                                    "prefect` creates the runs missed since `start` client-side, "
                                    "as a backfill does (Scheduled(scheduled_time=d), an "
                                    "idempotency key per date: redeploying creates none twice); "
                                    "each run's logical date is its scheduled time"),
        Feature.ASSET_PRODUCES: E("after the task's successful attempt (a cache hit "
                                  "included) the shim POSTs one event "
                                  "`unipipe.asset.updated` per asset to the server "
                                  "(/api/events, prefect/server/api/events.py), resource "
                                  "`unipipe.asset.<uri>`, related to its flow run, task run "
                                  "and deployment; a failed attempt emits none"),
        Feature.TRIGGER_ASSET: N("a DeploymentEventTrigger (an Automation running the "
                                 "deployment, created at deploy): mode='all' is a "
                                 "DeploymentCompoundTrigger(require='all', within=1 day), so "
                                 "updates more than a day apart start nothing and a leftover "
                                 "update re-arms it (the reference waits indefinitely). Prefect "
                                 "starts one run per matching event, never collapsing them "
                                 "(Airflow collapses queued events per consumer). Needs the "
                                 "server's triggers services (on by default in `prefect server "
                                 "start`); a flow run without a deployment (unipipe run) is "
                                 "never triggered"),
        Feature.TRIGGER_ANY: N("one DeploymentEventTrigger matching every asset's resource id: "
                               "one run per event"),
        Feature.ARTIFACTS: E("Prefect moves no files between tasks: the shim uploads each "
                             "output to the unipipe store, content-addressed, and a consumer "
                             "reads it by the producer's record in the same run (the flow calls "
                             "it after the producer, guarded by rt.ready). Prefect keeps each "
                             "output as a link artifact of the task run (its store URI; type, "
                             "sha256, size in the description; prefect/artifacts.py "
                             "create_link_artifact), read back with read_artifacts by flow "
                             "run. A cached task with artifacts is cached by the shim (its key "
                             "covers the input files; Prefect's INPUTS policy sees only "
                             "parameters), its hit ending the task run Completed 'Cached'"),
        Feature.METRICS: N("a table artifact of the task run (metric, value), created from the "
                           "successful attempt only (prefect/artifacts.py "
                           "create_table_artifact)"),
        Feature.REPORT: N("a markdown artifact of the task run (prefect/artifacts.py "
                          "create_markdown_artifact)"),
        Feature.PACKAGES: E("no per-run install on a process worker (its job variables are "
                            "command, env, labels, name, stream_output, working_dir: "
                            "prefect/workers/process.py): `unipipe deploy --to prefect` writes "
                            "the tasks' packages into the code folder's "
                            "unipipe-requirements.txt and the deployment's pull steps "
                            "pip-install it (prefect.deployments.steps.pip_install_requirements, "
                            "into the flow-run process's Python: deployments/steps/utility.py); "
                            "the shim checks them before the task runs and fails it at once "
                            "(PackagesMissing, not retried) when the worker lacks one; a flow "
                            "run without the deployment (unipipe run) installs nothing"),
    }


class Backend:
    name: ClassVar[str] = "prefect"
    versions: ClassVar[tuple[str, ...]] = TARGET_VERSIONS
    #: about how long a conformance case takes in a harness lane of this backend, in seconds,
    #: for the order the lanes start in (unipipe.harness.execute.lane_order): 392 s for 69
    #: cases in a whole suite at 4 lanes on 2 cores (2026-12-07)
    harness_case_seconds: ClassVar[float] = 5.7
    #: what a harness lane's worker fork server imports once for this backend's runs
    #: (unipipe.harness.workerserver): the modules a run imports besides unipipe's own
    #: (not Prefect itself: a run reads Prefect's records over HTTP, and Prefect reads its
    #: settings from the environment when imported)
    harness_preload: ClassVar[tuple[str, ...]] = (
        "unipipe_prefect.codegen", "unipipe_prefect.deployment", "unipipe_prefect.results",
        "unipipe_prefect.forkserver", "yaml")

    def support(self, version: str | None = None) -> dict[Feature, Support]:
        if version is not None and version not in self.versions:
            raise ValueError(f"prefect cannot target version {version!r}")
        return _support()

    # ------------------------------------------------------------ compile

    def check(self, ir: Pipeline, level: ErrorLevel) -> list[Diagnostic]:
        """Refusals that depend on values, not just on which features are used."""
        problems: list[Diagnostic] = []
        imgs = deployment.images(ir)
        if len(imgs) > 1:
            problems.append(Diagnostic(
                "error" if level is ErrorLevel.RAISE else "warning", Feature.IMAGE, self.name,
                f"tasks ask for different images ({', '.join(sorted(imgs))}); a Prefect flow run "
                "has one image"))
        for t in ir.tasks:
            retry = ir.effective(t).retry
            if retry and retry.max_retries and not flowgen.delays_are_exact(retry.model_dump()):
                problems.append(Diagnostic(
                    "error" if level is ErrorLevel.RAISE else "warning", Feature.RETRY_BACKOFF,
                    self.name, f"task {t.id!r}: Prefect takes at most {flowgen.MAX_DELAY_LIST} "
                    "retry delays and repeats the last one; set max_delay so the waits level off"))
        if ir.retries and ir.retry_delay != int(ir.retry_delay):
            # the server keeps a flow run's retry delay as whole seconds: a deployed flow run
            # with 0.5 s is rejected (422) when the engine records its policy
            # (prefect/server/schemas/core.py ~121 FlowRunPolicy.retry_delay: Optional[int])
            problems.append(Diagnostic(
                "error" if level is ErrorLevel.RAISE else "warning", Feature.PIPELINE_RETRY,
                self.name, f"retry_delay={ir.retry_delay:g}s: Prefect keeps a flow run's retry "
                "delay in whole seconds; use a whole number of seconds"))
        for g in ir.groups:
            if g.retries and g.retry_delay != int(g.retry_delay):
                # a subflow run's retry delay is a flow run's policy too: whole seconds
                problems.append(Diagnostic(
                    "error" if level is ErrorLevel.RAISE else "warning",
                    Feature.SUBPIPELINE_RETRY, self.name,
                    f"sub-pipeline {g.id!r}: retry_delay={g.retry_delay:g}s: Prefect keeps a "
                    "flow run's retry delay in whole seconds; use a whole number of seconds"))
            if g.retries and ir.timeout is not None:
                # the run's timeout is raised (FlowRunTimeoutError) in whatever body is running,
                # and a subflow's engine takes it as its own timeout (flow_engine.py ~1289
                # run_context: except TimeoutError -> handle_timeout), so a group with retries
                # would be tried again past the run's deadline (seen by running: its task after
                # the deadline has no task run); the reference starts nothing after it (rule 10)
                problems.append(Diagnostic(
                    "error" if level is ErrorLevel.RAISE else "warning",
                    Feature.SUBPIPELINE_RETRY, self.name,
                    f"sub-pipeline {g.id!r} has retries in a pipeline with a timeout: Prefect's "
                    "run timeout fails the running subflow, which would be retried past the "
                    "deadline"))
        errors = [d for d in problems if d.level == "error"]
        if errors:
            raise UnsupportedFeature(errors)
        return problems

    def compile(self, ir: Pipeline, out_dir: Path, options: CompileOptions) -> CompileResult:
        version = options.target_version or self.versions[0]
        diags = self.check(ir, options.error_level)
        out_dir = Path(out_dir)
        filename = flowgen.module_filename(ir)
        module = flowgen.build_module(ir, target_version=version)
        flow_text = codegen.render(module)
        names = flowgen.Names(ir)
        extra = options.extra
        config = deployment.deployment_config(
            ir, entrypoint=f"{filename}:{names.flow_fn}",
            work_pool=extra.get("work_pool", deployment.DEFAULT_WORK_POOL),
            work_pool_type=extra.get("work_pool_type", "process"),
            results_path=extra.get("results_path", deployment.DEFAULT_RESULTS_PATH))
        yaml_text = deployment.render_yaml(ir, config, target_version=version)
        paths = codegen.write_all({out_dir / filename: flow_text,
                                   out_dir / "prefect.yaml": yaml_text})
        return CompileResult(paths, diags)

    # ------------------------------------------------------------ run

    def run(self, ir: Pipeline, options: RunOptions) -> RunResult:
        params = resolve_params(ir, options.params)
        if options.workdir:
            return self._run_in(Path(options.workdir), ir, options, params)
        workdir = Path(tempfile.mkdtemp(prefix=f"unipipe-prefect-{flowgen.python_name(ir.name)}-"))
        result = self._run_in(workdir, ir, options, params)  # on an error the folder stays
        shutil.rmtree(workdir, ignore_errors=True)  # for its log; after a run it is not needed
        return result

    def _run_in(self, workdir: Path, ir: Pipeline, options: RunOptions,
                params: dict[str, Any]) -> RunResult:
        from unipipe_prefect.results import build_result

        flows = workdir / "flows"
        self.compile(ir, flows, CompileOptions(error_level=ErrorLevel.WARN))
        run_id = options.run_id or f"prefect-{uuid.uuid4().hex[:12]}"
        env = self.run_env(workdir, options, run_id)
        report_path = workdir / f"{run_id}.report.pickle"
        names = flowgen.Names(ir)
        if options.extra.get("isolated"):  # workers in sandboxes run a deployment: isolated.py
            from unipipe_prefect import isolated

            return isolated.run(self, ir, options, params, workdir,
                                flows / flowgen.module_filename(ir), names.flow_fn, run_id, env)
        cmd = [sys.executable, "-m", "unipipe_prefect.driver",
               str(flows / flowgen.module_filename(ir)), names.flow_fn,
               json.dumps(params), str(report_path), *([ir.store] if ir.store else [])]
        log = workdir / f"{run_id}.log"
        server = os.environ.get("UNIPIPE_PREFECT_FORKSERVER", "1")
        if server != "0":  # a lane's fork server (its socket), else this process's own
            from unipipe import forkserver as serving
            from unipipe_prefect import forkserver

            path = server if server != "1" else forkserver.get(self.forkserver_env).path
            rc = serving.run(path, cmd[3:], env, workdir, log,
                             timeout=float(options.extra.get("timeout", 1800)))
        else:
            with open(log, "w") as out:
                rc = subprocess.run(cmd, env=env, cwd=str(workdir), stdout=out,
                                    stderr=subprocess.STDOUT,
                                    timeout=options.extra.get("timeout", 1800)).returncode
        tail = log.read_text(errors="replace")[-4000:] if log.exists() else ""
        if not report_path.exists():
            raise RuntimeError(f"the Prefect flow process failed (exit {rc}); log {log}:\n{tail}")
        with open(report_path, "rb") as fh:
            report = pickle.load(fh)
        if not report.get("ok"):
            raise RuntimeError(f"the Prefect flow run did not finish (log {log}):\n"
                               f"{report.get('error')}\n{tail}")
        return build_result(ir, report, run_id=run_id, params=params,
                            trace_dir=env["UNIPIPE_TRACE_DIR"])

    def backfill(self, ir: Pipeline, dates: list[str], *, max_active: int = 1,
                 params: dict[str, Any] | None = None, progress: Any = None,
                 extra: dict[str, Any] | None = None) -> list[RunResult]:
        """One scheduled flow run per date on the server, run by a real worker, at most
        ``max_active`` at once (:mod:`unipipe_prefect.backfill`)."""
        from unipipe_prefect import backfill as engine_backfill

        return engine_backfill.run(self, ir, dates, max_active=max_active,
                                   params=resolve_params(ir, params or {}), progress=progress,
                                   extra=dict(extra or {}))

    def run_chain(self, producer: Pipeline, consumer: Pipeline, runs: list[dict[str, Any]],
                  options: RunOptions) -> tuple[list[RunResult], list[list[RunResult]]]:
        """An event chain on the server: both pipelines deployed (the consumer's trigger as the
        server's automation), a real worker, the producer's runs one after the other
        (:mod:`unipipe_prefect.chain`)."""
        from unipipe_prefect.chain import run_chain

        return run_chain(producer, consumer, runs, options)

    @contextmanager
    def lane_service(self, lane: Path, extra: dict[str, Any] | None = None
                     ) -> Iterator[dict[str, str]]:
        """What a harness lane's runs share, each run still a process of its own:

        - one ``prefect server``: without PREFECT_API_URL each run's process would start its own
          (about 13 s each); the lane hands the URL to its workers, as a user pointing
          ``unipipe run`` at their own server would (with PREFECT_API_URL set in this process,
          none is started);
        - one fork server (:mod:`.forkserver`; not for an isolated lane, whose flow runs are
          deployments' on sandboxed workers): each run's worker process would otherwise start
          its own and import Prefect in it, about 3 s of CPU per run. The suite's lanes share
          it (:func:`unipipe.forkserver.shared`: about 2.3 s of CPU to warm up): a flow run takes
          its server's URL and everything else from its own request's environment.

        The ``prefect server`` is not shared: two lanes' cases deploy pipelines of the same
        names and emit events for assets of the same names (the two asset chains run at once),
        which one server would mix up."""
        from unipipe.forkserver import shared
        from unipipe_prefect import forkserver
        from unipipe_prefect.server import LocalPrefectServer

        with ExitStack() as stack:
            env: dict[str, str] = {}
            if not os.environ.get("PREFECT_API_URL"):
                server = LocalPrefectServer(home=lane / "prefect-server").start()
                stack.callback(server.stop)
                env["PREFECT_API_URL"] = server.api_url
            if os.environ.get(forkserver.ENV, "1") != "0" and not (extra or {}).get("isolated"):
                folder = lane.parent / "prefect-forkserver"
                forks = stack.enter_context(shared(
                    "unipipe_prefect.forkserver", folder, self.forkserver_env(folder / "home")))
                env[forkserver.ENV] = forks.path
            yield env

    # ------------------------------------------------------------ shared store (deploy)

    def store_block(self, store: str) -> tuple[str, str]:
        """(slug, basepath) of the result-storage block a flow compiled for ``store`` names."""
        from unipipe_prefect.storage import block_slug, results_url

        return block_slug(store), results_url(store)

    def save_store_block(self, store: str) -> str:
        from unipipe_prefect.storage import save_block

        return save_block(store)

    def code_tree(self, ir: Pipeline, search_path: Any, folder: Path,
                  compiled: dict[str, bytes]) -> tuple[str, dict[str, bytes]]:
        """(URL, files) of the pipeline's code tree on ``ir.store``: the code package's wheels
        unpacked, ``compiled`` (relative path -> bytes) at the root (``isolated.package_tree``)."""
        from unipipe_prefect.isolated import package_tree

        url, files, _ = package_tree(ir, search_path, folder, compiled)
        return url, files

    def upload_code_tree(self, url: str, files: dict[str, bytes]) -> str:
        from unipipe_prefect.isolated import upload_tree

        return "uploaded" if upload_tree(url, files) else "already there"

    def pull_steps(self, code_url: str) -> list[dict[str, Any]]:
        """The deployment pull step that copies the code tree into the flow run's folder."""
        from unipipe_prefect.deployed import pull_steps

        return pull_steps(code_url)

    def apply_triggers(self, client: Any, deployment_id: Any, ir: Pipeline) -> list[Any]:
        """The deployment's automations for ``trigger=up.On(...)`` (:mod:`.triggers`)."""
        from unipipe_prefect import triggers

        return triggers.apply(client, deployment_id, ir)

    def trigger_specs(self, ir: Pipeline) -> list[dict[str, Any]]:
        from unipipe_prefect import triggers

        return triggers.trigger_specs(ir)

    def schedule_active(self, ir: Pipeline) -> bool:
        """False once the schedule's ``end`` has passed (Prefect's cron has no end)."""
        from unipipe_prefect.backfill import window_closed

        return not window_closed(ir)

    def create_catchup_runs(self, client: Any, deployment_id: Any, ir: Pipeline,
                            parameters: dict[str, Any] | None = None) -> int:
        from unipipe_prefect.backfill import create_catchup_runs

        return create_catchup_runs(client, deployment_id, ir, parameters)

    def forkserver_env(self, home: Path | None = None) -> dict[str, str]:
        """The fork server imports Prefect with no user settings and a PREFECT_HOME of its own
        (``home``, else a throwaway one)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        if home is None:
            home = Path(tempfile.mkdtemp(prefix="unipipe-prefect-forkserver-"))
        home.mkdir(parents=True, exist_ok=True)
        env["PREFECT_HOME"] = str(home)
        env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
        env["PYTHONPATH"] = os.pathsep.join(
            [str(Path(__file__).resolve().parents[1])]
            + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))
        return env

    def run_env(self, workdir: Path, options: RunOptions, run_id: str) -> dict[str, str]:
        """The flow process's environment: the API server, isolated homes, the user's modules."""
        base = {**os.environ, **options.env}
        api_url = base.get("PREFECT_API_URL")
        if not api_url:
            from unipipe_prefect.server import shared_server

            api_url = shared_server().api_url
        # The engine's settings are ours to choose; only credentials for a user's server pass.
        keep = {"PREFECT_API_KEY", "PREFECT_API_AUTH_STRING"} if base.get("PREFECT_API_URL") else set()
        env = {k: v for k, v in base.items() if not k.startswith("PREFECT_") or k in keep}
        env.update({k: v for k, v in options.env.items() if k.startswith("PREFECT_")})
        env["PREFECT_API_URL"] = api_url
        env.setdefault("PREFECT_HOME", str(workdir / "prefect-home"))
        env.setdefault("PREFECT_RESULTS_LOCAL_STORAGE_PATH", results_path(base, workdir))
        env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        env.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
        env["UNIPIPE_RUN_ID"] = run_id
        env.setdefault("UNIPIPE_TRACE_DIR", str(workdir / "trace"))
        backend_root = str(Path(__file__).resolve().parents[1])
        path = [*options.search_path, backend_root]
        if base.get("PYTHONPATH"):
            path.append(base["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(path)
        return env


def results_path(env: dict[str, str], workdir: Path) -> str:
    """Where Prefect persists results (and so its cache): set explicitly, never ``~/.prefect``.

    An explicit PREFECT_RESULTS_LOCAL_STORAGE_PATH wins; else next to the unipipe cache when that
    is a local folder (so the cache lives and expires with it); else inside the run's workdir.
    """
    if env.get("PREFECT_RESULTS_LOCAL_STORAGE_PATH"):
        return env["PREFECT_RESULTS_LOCAL_STORAGE_PATH"]
    cache_url = env.get("UNIPIPE_CACHE_URL")
    if cache_url and "://" not in cache_url:
        return str(Path(cache_url) / "prefect-results")
    from unipipe.runtime.store import user_cache_dir

    if not cache_url:
        return str(Path(user_cache_dir()) / "prefect-results")
    return str(workdir / "prefect-results")
