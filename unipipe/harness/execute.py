"""Running cases on the reference runner and on every backend, then judging each pair.

Every run happens in a fresh worker subprocess (:mod:`unipipe.harness.worker`) with its own
HOME, AIRFLOW_HOME, PREFECT_HOME, result storage, unipipe cache/artifact stores and trace sink.
Engine homes are shared by the cases of one backend within one suite (a prepared Airflow DB is
reused; cases never share stores), and a backend's cases run one after the other; backends run
side by side (``jobs`` lanes).

Per case and backend the verdict is one of:

- ``pass``: matches the case and the reference runner;
- ``fail``: differs, and no difference was declared (the differences are listed);
- ``xfail``: a declared ``notimpl``/``notyet``/``never`` difference that did show;
- ``xpass``: declared as different but behaved the same: fails the suite (strict);
- ``unsupported``: the compile refused, as the case or the backend's support table declares;
- ``notimpl``: the backend has no working ``run`` yet (fails the suite unless declared);
- ``error``: the harness could not run it (worker crashed or hit the case's wall-clock limit).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from unipipe.harness.cases import Case, case_ir
from unipipe.harness.compare import (
    check_consistency,
    check_delays,
    check_expectation,
    check_order,
    compare_runs,
)
from unipipe.harness.normalise import normalise_run
from unipipe.harness.receivers import Receivers

REFERENCE = "local"
OK_STATUSES = ("pass", "xfail", "unsupported")


@dataclass
class Outcome:
    case: str
    backend: str
    status: str
    reason: str = ""
    declared: str | None = None
    diffs: list[str] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)
    compile: dict[str, Any] | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status in OK_STATUSES

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Suite:
    cases: list[Case]
    backends: list[str]
    outcomes: dict[tuple[str, str], Outcome]
    seconds: float
    out_dir: Path
    lane_seconds: dict[str, float] = field(default_factory=dict)  # lane (backend[-k]) -> wall s
    raws: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outcomes.values())

    def outcome(self, case: str, backend: str) -> Outcome:
        return self.outcomes[(case, backend)]

    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes.values() if not o.ok]


@dataclass
class _Availability:
    ok: bool
    reason: str = ""
    support: dict[str, tuple[str, str]] = field(default_factory=dict)


def split_label(label: str) -> tuple[str, dict[str, Any]]:
    """``airflow@scheduler`` -> ("airflow", {"mode": "scheduler"}): a backend run in another of
    its modes (Airflow's real scheduler instead of ``dags test``); ``airflow@2.11`` -> ("airflow",
    {"version": "2.11"}): another engine version. Either is reported as its own column."""
    from unipipe.compiler.registry import split_label as split

    return split(label)


def backend_availability(label: str) -> _Availability:
    """Can ``label`` run at all here? Missing packages or a missing ``run`` read as notimpl."""
    from unipipe.compiler.registry import available, get_backend

    name, extra = split_label(label)
    if name not in available():
        return _Availability(False, f"backend {name!r} is not installed")
    try:
        backend = get_backend(name)
    except Exception as exc:  # noqa: BLE001 - an unfinished backend package
        return _Availability(False, f"backend {name!r} cannot be loaded yet: "
                                    f"{type(exc).__name__}: {exc}")
    if not callable(getattr(backend, "run", None)):
        return _Availability(False, f"backend {name!r} has no run() yet")
    version = extra.get("version")
    try:
        table = backend.support(version if version in getattr(backend, "versions", ()) else None)
    except Exception as exc:  # noqa: BLE001
        return _Availability(False, f"backend {name!r} declares no support table yet: {exc}")
    support = {f.value: (s.status.value, s.note) for f, s in table.items()}
    return _Availability(True, "", support)


@dataclass(frozen=True)
class Placement:
    """Where a suite's runs keep their data and how they run (``conform --store/--isolated``).

    ``store``: each (case, backend) gets its own prefix of this shared store, compiled into what
    runs (as ``--store`` does for a user), instead of folders of the harness's machine.
    ``isolated``: every task attempt runs in its own sandbox (see unipipe.harness.sandbox).
    """

    store: str | None = None
    isolated: bool = False
    suite_id: str = field(default_factory=lambda: uuid.uuid4().hex[:10])

    def job_store(self, case: Case, backend: str, job_dir: Path) -> str | None:
        """The case's store on ``backend``: a prefix of ``store``; for a ``store: shared`` case
        without one, a folder of the job's own (shared by the processes of this machine)."""
        if self.store is not None:
            return f"{self.store}/{self.suite_id}/{case.id}/{backend.replace('@', '-')}"
        if case.shared_store:
            return f"file://{job_dir / 'store'}"
        return None


STORE_ENV = ("UNIPIPE_CACHE_URL", "UNIPIPE_ARTIFACT_URL", "UNIPIPE_STORE_URL")

#: backends whose runs can put every attempt in a sandbox (``conform --isolated``)
ISOLATED_BACKENDS = ("airflow", "kubeflow", "prefect")


def _engine_env(lane: Path, job: Path) -> dict[str, str]:
    """Isolated homes: nothing a worker or its engine writes lands in the user's home."""
    return {
        "HOME": str(lane / "home"),
        "XDG_CACHE_HOME": str(lane / "xdg-cache"),
        "XDG_CONFIG_HOME": str(lane / "xdg-config"),
        "XDG_DATA_HOME": str(lane / "xdg-data"),
        "AIRFLOW_HOME": str(lane / "airflow"),
        "PREFECT_HOME": str(lane / "prefect"),
        "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(job / "prefect-results"),
        "UNIPIPE_CACHE_URL": str(job / "cache"),
        "UNIPIPE_ARTIFACT_URL": str(job / "artifacts"),
        # the job's own KFP pipeline root (outputs and KFP's execution cache): a folder the next
        # run of the case starts without, as it does with the job's cache and artifacts
        "UNIPIPE_KFP_PIPELINE_ROOT": str(job / "kfp-pipeline-root"),
        "PYTHONUNBUFFERED": "1",
    }


def _lane_env(lane: Path, job: Path, service_env: Mapping[str, str],
              drop: tuple[str, ...] = ()) -> dict[str, str]:
    """This process's environment for a lane's workers: none of the user's engine settings
    (nor ``drop``), the lane's homes (made here), the lane's services."""
    env = dict(os.environ)
    for key in ("PREFECT_API_URL", "PREFECT_PROFILE", "AIRFLOW_CONFIG"):
        env.pop(key, None)
    env.update(_engine_env(lane, job))
    for key in drop:
        env.pop(key, None)
    env.update(service_env)
    for d in ("home", "xdg-cache", "xdg-config", "xdg-data", "airflow", "prefect"):
        (lane / d).mkdir(parents=True, exist_ok=True)
    return env


@contextmanager
def _worker_server(backend: str | None, lane: Path,
                   service_env: Mapping[str, str]) -> Iterator[str | None]:
    """The lane's worker fork server (:mod:`unipipe.harness.workerserver`) for ``backend``'s
    runs: its socket, or None (turned off, no backend, or it did not start: its log says why,
    and every run is a fresh process as before)."""
    from unipipe.forkserver import ForkServer
    from unipipe.harness import workerserver

    if backend is None or not workerserver.enabled():
        yield None
        return
    folder = lane / "worker-server"
    env = {**_lane_env(lane, folder, service_env), workerserver.BACKEND_ENV: backend}
    server = ForkServer("unipipe.harness.workerserver", folder, env)
    try:
        server.start(timeout=120)
    except RuntimeError:
        yield None
        return
    try:
        yield server.path
    finally:
        server.stop()


class _Runner:
    """Runs one case on one backend (a handful of worker subprocesses) and records everything."""

    def __init__(self, case: Case, backend: str, lane: Path, job_dir: Path,
                 service_env: dict[str, str] | None = None, placement: Placement | None = None,
                 worker_server: str | None = None):
        self.case, self.backend, self.lane, self.dir = case, backend, lane, job_dir
        self.service_env = dict(service_env or {})
        self.worker_server = worker_server  # the lane's worker fork server's socket, if any
        self.placement = placement or Placement()
        self.store = self.placement.job_store(case, backend, job_dir)

    def _spawn(self, argv: list[str], env: dict[str, str], name: str,
               timeout: float) -> tuple[int | None, float]:
        start = time.time()
        with open(self.dir / f"{name}.stdout", "wb") as out, \
                open(self.dir / f"{name}.stderr", "wb") as err:
            proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env,
                                    cwd=str(self.dir), start_new_session=True)
            try:
                code: int | None = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
                code = None
        return code, time.time() - start

    def _fork(self, argv: list[str], env: dict[str, str], name: str,
              timeout: float) -> tuple[int | None, float]:
        """``_spawn`` through the lane's worker fork server (:mod:`unipipe.harness.workerserver`):
        the same process group semantics (a run past its time limit is killed with its group),
        stdout and stderr in ``NAME.stderr``; a server that is not there runs a fresh process."""
        from unipipe import forkserver

        assert self.worker_server is not None
        start = time.time()
        log = self.dir / f"{name}.stderr"
        try:
            code: int | None = forkserver.run(self.worker_server, argv[2:], env, self.dir, log,
                                              timeout)
        except subprocess.TimeoutExpired:
            code = None
        except (ConnectionRefusedError, FileNotFoundError):  # nothing ran
            self.worker_server = None
            return self._spawn(argv, env, name, timeout)
        except ConnectionError as exc:  # it went away with the run: the run is lost
            with open(log, "a") as fh:
                fh.write(f"\nthe lane's worker fork server went away during the run: {exc}\n")
            code = 1
        return code, time.time() - start

    def _env(self, receivers: Receivers, trace_dir: Path) -> dict[str, str]:
        # the compiled store is the only one: nothing overrides it
        env = _lane_env(self.lane, self.dir, self.service_env,
                        STORE_ENV if self.store is not None else ())
        env.update(receivers.env())
        env["UNIPIPE_TRACE_DIR"] = str(trace_dir)
        paths = self.case.search_path() + [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
                                           if p]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
        return env

    def worker(self, mode: str, n: int, params: dict[str, Any], receivers: Receivers,
               more: dict[str, Any] | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        from unipipe.runtime import trace as trace_io

        trace_dir = self.dir / f"trace-{n}"
        name = f"{mode}-{n}"
        base, extra = split_label(self.backend)
        if self.placement.isolated and self.backend != REFERENCE:
            extra = {**extra, "isolated": True}  # every attempt in a sandbox of its own
        if self.backend != REFERENCE:
            # the engine gives up (and reports its own logs) before the harness kills the worker
            extra = {"timeout": max(30.0, self.case.timeout - 20), **extra}
        job = {"mode": mode, "pipeline": self.case.pipeline, "backend": base, "extra": extra,
               "params": params, "run_id": f"{self.case.id}-{n}-{uuid.uuid4().hex[:8]}",
               "workdir": str(self.lane / "workdir"), "search_path": self.case.search_path(),
               "out": str(self.dir / f"{name}.json"), "store": self.store, **(more or {})}
        job_file = self.dir / f"{name}.job.json"
        job_file.write_text(json.dumps(job, indent=2))
        start = self._fork if self.worker_server else self._spawn
        code, seconds = start([sys.executable, "-m", "unipipe.harness.worker", str(job_file)],
                              self._env(receivers, trace_dir), name, self.case.timeout)
        out = Path(job["out"])
        if code is None:
            report = {"status": "timeout", "error": f"no result within {self.case.timeout:g}s "
                      f"(the worker was killed)"}
        elif out.exists():
            report = json.loads(out.read_text())
        else:
            tail = (self.dir / f"{name}.stderr").read_text(errors="replace")[-2000:]
            report = {"status": "error", "error": f"worker exited {code} without a report: {tail}"}
        report["seconds"] = round(seconds, 3)
        return report, trace_io.read(trace_dir)

    def _chain_job(self) -> dict[str, Any] | None:
        chain = self.case.chain
        return None if chain is None else {"consumer": chain.consumer, "runs": chain.params()}

    def run_chain(self, receivers: Receivers) -> dict[str, Any]:
        """A chain case (``chain:``): one worker runs the backend's ``run_chain`` hook; A's runs
        are normalised as any run, and the B runs each A run started as ``chain.consumer``."""
        report, events = self.worker("chain", 1, {}, receivers, self._chain_job())

        def norm(result: dict[str, Any]) -> dict[str, Any]:
            rid = result.get("run_id")
            mine = [e for e in events if rid and e.get("run_id") == rid]
            run = normalise_run({"status": "ok", "result": result}, mine, [])
            run["raw_alerts"] = []
            return run

        if report.get("status") != "ok":
            run = normalise_run(report, [], [])
            run["seconds"] = report.get("seconds")
            return {"runs": [run], "chain": None}
        runs = [norm(r) for r in report["producer"]]
        if runs:
            runs[0]["seconds"] = report.get("seconds")  # the whole chain's worker
        started = [[norm(r) for r in rs] for rs in report["consumer"]]
        return {"runs": runs, "chain": {"consumer_runs": [len(rs) for rs in started],
                                        "consumer": started}}

    def cli_run(self, n: int, params: dict[str, Any], receivers: Receivers) -> dict[str, Any]:
        """The user's path: ``unipipe run PIPELINE --backend B --param k=v``; exit 2 = refused."""
        argv = [sys.executable, "-m", "unipipe.cli", "run", self.case.pipeline,
                "--backend", self.backend, "--json"]
        for k, v in params.items():
            argv += ["--param", f"{k}={json.dumps(v)}"]
        if self.store is not None:
            argv += ["--store", self.store]
        code, seconds = self._spawn(argv, self._env(receivers, self.dir / f"trace-{n}"),
                                    f"cli-{n}", self.case.timeout)
        stderr = (self.dir / f"cli-{n}.stderr").read_text(errors="replace").strip()
        if code == 2:
            return {"status": "refused", "error": stderr[-2000:], "exit_code": 2,
                    "seconds": round(seconds, 3)}
        stdout = (self.dir / f"cli-{n}.stdout").read_text(errors="replace")
        try:
            result = json.loads(stdout)
        except ValueError:
            return {"status": "error", "error": f"exit code {code}: {stderr[-2000:]}",
                    "exit_code": code, "seconds": round(seconds, 3)}
        return {"status": "ok", "result": result, "exit_code": code, "seconds": round(seconds, 3)}

    def run(self, expect_refusal: bool) -> dict[str, Any]:
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)
        raw: dict[str, Any] = {"compile": None, "runs": []}
        receivers = Receivers(self.dir)
        try:
            if expect_refusal:
                report, _ = self.worker("compile", 0, {}, receivers, self._chain_job())
                raw["compile"] = report
                return raw
            if self.case.chain is not None:
                raw.update(self.run_chain(receivers))
                (self.dir / "trace.json").write_text(json.dumps(raw, indent=2, default=repr))
                return raw
            plan = [(self.case.params, 0.0)]
            if self.case.second_run is not None:
                sr = self.case.second_run
                plan.append(({**self.case.params, **sr.params}, sr.wait))
            for n, (params, wait) in enumerate(plan, start=1):
                if wait:
                    time.sleep(wait)
                mark = receivers.mark()
                if self.case.expect.refused:
                    report, events = self.cli_run(n, params, receivers), []
                else:
                    report, events = self.worker("run", n, params, receivers)
                time.sleep(0.2)  # let in-flight SMTP/HTTP deliveries land
                alerts = receivers.alerts(mark, receivers.mark())
                run = normalise_run(report, events, alerts)
                run["raw_alerts"] = [{k: a[k] for k in ("task", "event", "channel")}
                                     for a in alerts]
                run["seconds"] = report.get("seconds")
                if report.get("exit_code") is not None:
                    run["exit_code"] = report["exit_code"]
                raw["runs"].append(run)
                if run["status"] in ("notimpl", "timeout", "error"):
                    break
        finally:
            receivers.close()
        (self.dir / "trace.json").write_text(json.dumps(raw, indent=2, default=repr))
        return raw


def _unsupported_tags(case: Case, avail: _Availability) -> list[tuple[str, str]]:
    out = []
    for tag in case.tags:
        status, note = avail.support.get(tag, ("unsupported", "not declared by the backend"))
        if status == "unsupported":
            out.append((tag, note))
    return out


#: seconds added to a case's ``late`` delay tolerance on an isolated lane. There a retry is a
#: round trip through the engine's control plane to a worker in a sandbox (Airflow: scheduler,
#: Celery over Redis, a task process in the worker's sandbox; Prefect and KFP: a worker polling),
#: where a retry usually comes 1-2 s after the failed try. A fresh-clone CI run (2026-12-07)
#: saw one come 13.6 s after (alerts_retry_success, Airflow: the Celery worker had the try at
#: once, and its task process first ran 12.5 s later), over the 10 s default. The bound is
#: there to catch an engine default of minutes (Airflow's retry_delay is 300 s); the report
#: still shows every gap as measured.
ISOLATED_LATE = 20.0


def delay_tolerance(case: Case, isolated: bool) -> dict[str, float]:
    """The tolerance the case's retry waits are judged with (:data:`ISOLATED_LATE`)."""
    if not isolated:
        return case.tolerance
    return {**case.tolerance, "late": case.tolerance["late"] + ISOLATED_LATE}


def judge(case: Case, backend: str, raw: dict[str, Any], ref: dict[str, Any] | None, ir: Any,
          avail: _Availability, *, isolated: bool = False) -> Outcome:
    """The verdict for one case on one backend (see the module docstring); ``isolated``: the
    run was on an isolated lane (:func:`delay_tolerance`)."""
    declared = case.declared(backend)
    decl_status = declared.status if declared else None
    refused_tags = _unsupported_tags(case, avail)
    expect_refusal = decl_status == "unsupported" or bool(refused_tags)
    outcome = Outcome(case.id, backend, "pass", declared=decl_status, runs=raw.get("runs", []),
                      compile=raw.get("compile"))
    if expect_refusal:
        reason = declared.reason if decl_status == "unsupported" else "; ".join(
            f"{t}: {n}" for t, n in refused_tags)
        comp = raw.get("compile") or {}
        if comp.get("status") == "refused":
            if case.required:
                outcome.status, outcome.reason = "fail", f"required case refused: {reason}"
            else:
                outcome.status, outcome.reason = "unsupported", reason
        else:
            outcome.status = "xpass" if decl_status == "unsupported" else "fail"
            outcome.reason = f"the compile was expected to refuse ({reason}) but gave " \
                             f"{comp.get('status')}: {comp.get('error') or ''}".strip()
        return outcome
    runs = raw.get("runs", [])
    diffs: list[str] = []
    if runs and runs[0]["status"] == "notimpl":
        outcome.status = "xfail" if decl_status == "notimpl" else "notimpl"
        outcome.reason = declared.reason if declared else runs[0].get("error", "")
        return outcome
    if case.chain is not None:
        return _judge_chain(case, backend, raw, ref, ir, outcome)
    for i, run in enumerate(runs, start=1):
        if run["status"] in ("error", "timeout"):
            what = "hit the case's time limit" if run["status"] == "timeout" else "crashed"
            diffs.append(f"run {i} {what}: {run.get('error')}")
    expectations = [case.expect] + ([case.second_run.expect] if case.second_run else [])
    for i, (run, exp) in enumerate(zip(runs, expectations), start=1):
        where = f"run {i}"
        if run["status"] in ("error", "timeout"):
            continue
        if not case.adhoc or backend == REFERENCE:
            diffs += check_expectation(run, exp, where)
        diffs += check_delays(run, ir, delay_tolerance(case, isolated), where)
        diffs += check_order(run, ir, where)
        diffs += check_consistency(run, where)
        if backend != REFERENCE:
            if ref is None or len(ref.get("runs", [])) < i:
                diffs.append(f"{where}: no reference run to compare with")
            else:
                diffs += compare_runs(run, ref["runs"][i - 1], backend, where)
    if len(runs) < len(expectations) and not diffs:
        diffs.append("fewer runs than the case asks for")
    outcome.diffs = diffs
    if decl_status in ("notimpl", "notyet", "never"):
        outcome.status = "xfail" if diffs else "xpass"
        outcome.reason = declared.reason if diffs else \
            f"declared {decl_status} ({declared.reason}) but behaved as the reference: " \
            f"remove the declaration"
    elif any(r["status"] in ("error", "timeout") for r in runs):
        outcome.status, outcome.reason = "error", diffs[0]
    elif diffs:
        outcome.status, outcome.reason = "fail", diffs[0]
    return outcome


def _judge_chain(case: Case, backend: str, raw: dict[str, Any], ref: dict[str, Any] | None,
                 ir: Any, outcome: Outcome) -> Outcome:
    """The verdict for a chain case: each A run as any run (its ``expect``, order, the
    reference's run), then what the engine started (:func:`check_chain`)."""
    from unipipe.harness.compare import check_chain

    assert case.chain is not None
    declared = case.declared(backend)
    runs = raw.get("runs", [])
    diffs: list[str] = []
    broken = [r for r in runs if r["status"] in ("error", "timeout")]
    for run in broken:
        what = "hit the case's time limit" if run["status"] == "timeout" else "crashed"
        diffs.append(f"the chain {what}: {run.get('error')}")
    if not broken:
        ref_runs = (ref or {}).get("runs", [])
        for i, (run, spec) in enumerate(zip(runs, case.chain.runs), start=1):
            where = f"producer run {i}"
            diffs += check_expectation(run, spec.expect, where)
            diffs += check_order(run, ir, where)
            diffs += check_consistency(run, where)
            if backend != REFERENCE:
                if len(ref_runs) < i:
                    diffs.append(f"{where}: no reference run to compare with")
                else:
                    diffs += compare_runs(run, ref_runs[i - 1], backend, where)
        if len(runs) != len(case.chain.runs):
            diffs.append(f"{len(runs)} producer run(s), the case asks for "
                         f"{len(case.chain.runs)}")
        diffs += check_chain(raw.get("chain"), case.chain,
                             None if backend == REFERENCE else (ref or {}).get("chain"), backend)
    outcome.diffs = diffs
    decl_status = declared.status if declared else None
    if declared is not None and decl_status in ("notimpl", "notyet", "never"):
        outcome.status = "xfail" if diffs else "xpass"
        outcome.reason = declared.reason if diffs else \
            f"declared {decl_status} ({declared.reason}) but behaved as the reference: " \
            f"remove the declaration"
    elif broken:
        outcome.status, outcome.reason = "error", diffs[0]
    elif diffs:
        outcome.status, outcome.reason = "fail", diffs[0]
    return outcome


ProgressFn = Callable[[str, str, str], None]  # (event "start"|"done", case id, backend)

#: what one run of a case costs besides its waits (a worker's start, compile, engine start-up)
RUN_SECONDS = 3.0
#: what one producer run of a ``chain:`` case costs on an engine (Airflow runs it under its real
#: scheduler, its components forked from the lane's prepared Airflow: 55-75 s for three runs on
#: this machine under a loaded suite, start-up included; 110-150 s with ``airflow standalone``)
CHAIN_RUN_SECONDS = 20.0


def expected_seconds(case: Case, ir: Any) -> float:
    """About how long a case's runs wait, from its pipeline's policies: the pause before a
    second run, a chain's producer runs, short run and task timeouts (a case that hangs waits
    them out in every try; a task timeout over 20 s or a run timeout over a minute is a safety
    limit no case waits for) and each task's first retry delay. Only an
    order for the lanes (longest first), never a limit; 0 when the IR says nothing."""
    total = case.second_run.wait if case.second_run is not None else 0.0
    if case.chain is not None:  # an engine's own scheduler starts the consumer: about 20 s a run
        total += CHAIN_RUN_SECONDS * len(case.chain.runs)
    try:
        if ir.timeout is not None and ir.timeout <= 60:
            total += ir.timeout * (1 + ir.retries)
        for task in ir.tasks:
            pol = ir.effective(task)
            tries = 1 + (pol.retry.max_retries if pol.retry is not None else 0)
            if pol.timeout is not None and pol.timeout <= 20:
                total += pol.timeout * min(tries, 3)  # a task that hangs, hangs every try
            if tries > 1:
                total += min(pol.retry.delay, 60.0)  # type: ignore[union-attr]
    except Exception:  # noqa: BLE001 - an IR of another shape: no estimate, not an error
        pass
    return total


#: about how long a case takes in a lane of the reference runner, in seconds, for the lanes'
#: order (``lane_order``): 143 s for 69 cases beside the three engines (2026-12-07), mostly
#: waiting out the cases' own timeouts and retry delays
REFERENCE_CASE_SECONDS = 2.1


def case_seconds(label: str) -> float:
    """About how long a case takes in a lane of ``label``'s backend (its ``harness_case_seconds``,
    a class attribute, optional; 1.0 without), to order the lanes, never a limit."""
    if label == REFERENCE:
        return REFERENCE_CASE_SECONDS
    from unipipe.compiler.registry import UnknownBackend, get_backend

    try:
        backend = get_backend(split_label(label)[0])
    except UnknownBackend:
        return 1.0
    return float(getattr(backend, "harness_case_seconds", 1.0))


def lane_order(per_backend: list[list[Any]], cost: Mapping[str, float]) -> list[Any]:
    """The order lanes start in when ``jobs`` runs fewer than all: each backend's first lane, the
    slowest backend's first; then the others by what one more lane takes off its backend's
    queue, about ``cost / k`` for its k-th lane (a third lane of a backend whose cases take 5 s
    before a second of one whose cases take 2 s), earlier lanes of a backend first. ``per_backend``
    holds each backend's lanes, ``(label, home, queue)``; ``cost`` its case seconds."""
    first = sorted((specs[0] for specs in per_backend if specs), key=lambda s: -cost[s[0]])
    more = [(k, spec) for specs in per_backend for k, spec in enumerate(specs) if k]
    more.sort(key=lambda ks: (-cost[ks[1][0]] / (ks[0] + 1), ks[0]))
    return first + [spec for _, spec in more]


def run_suite(cases: list[Case], backends: list[str], out_dir: str | Path, *, jobs: int = 2,
              shards: int | Mapping[str, int] = 1, on_event: ProgressFn | None = None,
              reference: dict[str, dict[str, Any]] | None = None,
              placement: Placement | None = None) -> Suite:
    """Run ``cases`` on the reference runner and ``backends``; judge every pair.

    Each backend's cases run one after the other in a lane (``shards`` lanes per engine and for
    the reference runner, or a mapping of a backend's label to its lanes with ``"*"`` for the
    others, each with its own homes; slow engines then use more than one core); ``jobs`` lanes
    run at once. A backend's lanes take its cases from one queue, longest expected first, each
    lane the next case when it is free, so they finish together even when one starts later
    than the other (``jobs`` below the lane count) or its cases take longer than expected; a
    lane that starts after its backend's queue ran dry starts no services. ``reference``
    (case id -> raw reference record) reuses reference runs made earlier.
    """
    started = time.time()
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    names = list(dict.fromkeys([REFERENCE, *backends]))
    avail = {b: backend_availability(b) for b in names}
    irs = {c.id: case_ir(c) for c in cases}
    raws: dict[tuple[str, str], dict[str, Any]] = {}
    lock = threading.Lock()
    homes = out / "homes"
    # each engine's lanes take its cases from one queue, longest expected first: its lanes then
    # finish together instead of one waiting out a 30 s timeout case alone at the end. Dealt
    # up front (each case to the lane with the least expected time so far), a second lane that
    # ``jobs`` started 160 s late still had half the cases, and ended the suite alone; the
    # expected times also miss what a case costs on one engine and not another (the asset
    # chains). The reference runner's lanes too: it waits out the same timeouts as the engines.
    weight = {c.id: expected_seconds(c, irs[c.id]) + RUN_SECONDS * (
        2 if c.second_run is not None else 1) for c in cases}
    longest_first = sorted(cases, key=lambda c: -weight[c.id])
    per_backend: list[list[tuple[str, Path, deque[Case]]]] = []
    for b in names:
        wanted = shards if isinstance(shards, int) else shards.get(b, shards.get("*", 1))
        n = 1 if not avail[b].ok else max(1, min(wanted, len(cases)))
        queue = deque(longest_first)
        per_backend.append([(b, homes / (b if n == 1 else f"{b}-{k + 1}"), queue)
                            for k in range(n)])
    # every engine's first lane before any engine's second (``jobs`` may run fewer at once),
    # each group in the order of what a lane takes off its engine's queue (``lane_order``)
    cost = {b: case_seconds(b) if avail[b].ok else 0.0 for b in names}
    lanes = lane_order(per_backend, cost)

    lane_seconds: dict[str, float] = {}

    def lane(spec: tuple[str, Path, deque[Case]]) -> None:
        from unipipe.compiler.backend import lane_service
        from unipipe.compiler.registry import get_backend

        backend, home, todo = spec
        with lock:
            if not todo:  # its backend's other lanes took every case before this one started
                return
        lane_start = time.time()
        try:
            # an engine service the lane's cases share: the backend's optional hook; an engine
            # version of its own (Airflow 2.11's virtual environment) is made here, with the
            # user's HOME and package cache, not by a case's worker against its time limit
            name, extra = split_label(backend)
            engine = get_backend(name) if avail[backend].ok else None
            prepared: dict[str, str] = {}
            prepare = getattr(engine, "prepare_engine", None)
            if prepare is not None and extra.get("version"):
                prepared = prepare(extra["version"])
            # an isolated lane's shared services publish their code to the suite's store
            lane_extra = {**extra, "isolated": True, "store": placement.store} if (
                placement is not None and placement.isolated) else extra
            with lane_service(engine, home, lane_extra) as service_env:
                env = {**service_env, **prepared}
                with _worker_server(name if avail[backend].ok else None, home, env) as server:
                    run_lane(backend, home, todo, env, server)
        finally:
            with lock:
                lane_seconds[home.name] = round(time.time() - lane_start, 1)

    def run_lane(backend: str, home: Path, todo: deque[Case], service_env: dict[str, str],
                 server: str | None) -> None:
        while True:
            with lock:
                if not todo:
                    return
                case = todo.popleft()
            if backend == REFERENCE and reference and case.id in reference:
                with lock:
                    raws[(case.id, backend)] = reference[case.id]
                if on_event:
                    on_event("done", case.id, backend)
                continue
            if on_event:
                on_event("start", case.id, backend)
            a = avail[backend]
            if not a.ok:
                raw = {"compile": None, "runs": [{"status": "notimpl", "error": a.reason,
                                                  "tasks": {}, "alerts": [], "notes": []}]}
            else:
                decl = case.declared(backend)
                refusal = (decl is not None and decl.status == "unsupported") or \
                    bool(_unsupported_tags(case, a))
                runner = _Runner(case, backend, home, out / "runs" / case.id / backend,
                                 service_env, placement, server)
                raw = runner.run(refusal)
            with lock:
                raws[(case.id, backend)] = raw
            if on_event:
                on_event("done", case.id, backend)

    with ThreadPoolExecutor(max_workers=max(1, min(jobs, len(lanes)))) as pool:
        list(pool.map(lane, lanes))
    outcomes: dict[tuple[str, str], Outcome] = {}
    for case in cases:
        ref = raws.get((case.id, REFERENCE))
        for b in names:
            outcomes[(case.id, b)] = judge(
                case, b, raws[(case.id, b)], ref, irs[case.id], avail[b],
                isolated=b != REFERENCE and placement is not None and placement.isolated)
    return Suite(cases, names, outcomes, time.time() - started, out,
                 dict(sorted(lane_seconds.items())), raws)


def reference_records(suite: Suite) -> dict[str, dict[str, Any]]:
    """Raw reference records of a suite, to reuse in another suite over the same cases."""
    return {c.id: {"compile": None, "runs": suite.outcome(c.id, REFERENCE).runs}
            for c in suite.cases}
