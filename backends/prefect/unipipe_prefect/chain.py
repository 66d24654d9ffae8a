"""An event chain on a real Prefect server (issue 14): the producer's task emits
``unipipe.asset.updated`` for its asset (:func:`unipipe_prefect.runtime.emit_asset_events`),
and the server's own automation (a deployment trigger, made by ``unipipe deploy``) starts the
consumer's deployment; a real ``prefect worker`` (process pool) runs both flows.

Both pipelines are deployed with :func:`unipipe.deploy.deploy` to the server at
``PREFECT_API_URL`` (a harness lane's, or the process's shared one); the producer's flow runs
are created one after the other, and after each :func:`settle` waits until the server has
reacted to the run's asset events (a :class:`Probe` that follows them went through its
triggers and actions) and then until every consumer run is final and no new one came for a
calm window.

Engine facts (Prefect 3, installed source): the consumer's trigger is a reactive
``DeploymentEventTrigger`` with ``threshold: 1`` (unipipe_prefect/triggers.py ~45-50); the
server's triggers service counts each matching event into the trigger's bucket and fires once
the bucket meets the threshold (prefect/server/events/triggers.py ~170-176, ``reactive_evaluation``
~561), and each firing's RunDeployment action creates one flow run (``fire`` ~310, ``act``
~430): one consumer run per update, with no queue that could collapse them, unlike Airflow's
(see unipipe_airflow.chain). A failed task emits nothing: the event is sent after the attempt
returned (unipipe_prefect/runtime.py ~220 ``invoke`` → ``emit_asset_events``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unipipe.compiler.backend import RunOptions
from unipipe.ir.models import Pipeline
from unipipe.params import resolve_params
from unipipe.result import RunResult
from unipipe_prefect.backfill import process_worker

#: seconds without a new consumer run (all final) before a producer run's consequences count
#: as complete, when nothing tells how far the server is (``settle`` without a probe)
QUIET = 6.0
#: the calm window after a probe came back: at least this, and at least twice the probe's
#: own round trip (a loaded server reacts late to the events and to the probe alike)
PROBED_QUIET = 2.0
#: the probe's event (its own name: no unipipe or Prefect trigger expects it)
PROBE_EVENT = "unipipe.chain.probe"
#: a probe event not answered in this many seconds is sent again (a lost probe never stalls)
PROBE_RESEND = 20.0


@dataclass
class Probe:
    """Tells when the server has reacted to given events, through the path a consumer run
    takes: an automation whose reactive trigger expects :data:`PROBE_EVENT` on the probe's
    resource and whose action is ``RunDeployment`` of a deployment of the probe's own, one with
    no work pool (no worker ever runs its flow runs: they stay Scheduled).

    :meth:`round_trip` sends one probe event per event it must follow, with that event's id as
    its ``follows``, and a fresh nonce in its payload, which the action passes on as the flow
    run's parameter (``{{ event.payload.probe }}``, rendered by the server:
    docs/facts/events-schedules-artifacts.md A3); it waits for those flow runs and deletes
    them. The server's triggers service evaluates an event that follows another only once that
    one was evaluated without error, its firings' actions already published (prefect/server/
    events/ordering/memory.py ~188-240 ``event_is_processing``, ``wait_for_leader``: the leader
    is marked seen after the evaluation, a failed one is retried first; triggers.py ~573
    ``reactive_evaluation`` enters it before it evaluates). The ``actions`` topic is a FIFO
    queue (prefect/server/utilities/messaging/memory.py ~169-175 ``get``) that the Actions
    service takes off with two loops (``Consumer(concurrency=2)`` ~338), and each
    ``RunDeployment`` creates its flow run through the API. So when a probe's run exists, the
    consumer runs the followed events started were created before it or are being created
    alongside it: :func:`settle` then waits a calm window."""

    resource: str
    automation_id: Any
    deployment_id: Any
    flow_id: Any

    @classmethod
    def create(cls, client: Any, name: str) -> Probe:
        """The probe's flow, deployment (no work pool) and automation on the server."""
        from prefect.events.actions import RunDeployment
        from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

        resource = f"{PROBE_EVENT}.{name}"
        flow_id = client.create_flow_from_name(f"unipipe-chain-probe-{name}")
        deployment_id = client.create_deployment(flow_id=flow_id, name="probe")
        trigger = EventTrigger(expect={PROBE_EVENT}, match={"prefect.resource.id": resource},
                               posture=Posture.Reactive, threshold=1)
        automation_id = client.create_automation(AutomationCore(
            name=f"unipipe chain probe {name}", trigger=trigger,
            actions=[RunDeployment(source="selected", deployment_id=deployment_id,
                                   parameters={"probe": "{{ event.payload.probe }}"})]))
        return cls(resource, automation_id, deployment_id, flow_id)

    def delete(self, client: Any) -> None:
        client.delete_automation(self.automation_id)
        client.delete_deployment(self.deployment_id)  # its Scheduled flow runs go with it
        client.delete_flow(self.flow_id)

    def _send(self, client: Any, nonce: str, follows: str | None) -> None:
        from uuid import uuid4

        from prefect.types._datetime import now

        event = {"id": str(uuid4()), "occurred": now("UTC").isoformat(), "event": PROBE_EVENT,
                 "resource": {"prefect.resource.id": self.resource}, "payload": {"probe": nonce}}
        if follows is not None:
            event["follows"] = follows
        client.request("POST", "/events", json=[event]).raise_for_status()

    def round_trip(self, client: Any, deadline: float, follows: Sequence[str] = ()) -> float:
        """Send the probes (one after each event of ``follows``, or one) and wait until the
        server has created their flow runs; the seconds that took."""
        from uuid import uuid4

        pending = {uuid4().hex: leader for leader in (list(follows) or [None])}
        start = sent = time.monotonic()
        for nonce, leader in pending.items():
            self._send(client, nonce, leader)
        while True:
            for r in runs_of(client, self.deployment_id):
                nonce = r.parameters.get("probe")
                if nonce in pending:
                    del pending[nonce]
                    client.delete_flow_run(r.id)
            if not pending:
                return time.monotonic() - start
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server did not answer the chain's probe "
                                   f"{self.resource} in time")
            if time.monotonic() - sent > PROBE_RESEND:
                sent = time.monotonic()
                for nonce, leader in pending.items():
                    self._send(client, nonce, leader)
            time.sleep(0.1)


@dataclass
class Deployed:
    """Pipelines deployed to one work pool on the server, with a worker running them."""

    work: Path
    pool: str
    values: Path
    trace: Path
    deployments: dict[str, Any] = field(default_factory=dict)  # pipeline name -> deployment
    #: the pool's :class:`Probe` (made by :func:`deployed`, deleted when it ends)
    probe: Probe | None = None

    def asset_events(self, *flow_run_ids: Any) -> list[str]:
        """The ids of the asset events the flow runs' tasks sent, from the pool's trace
        (runtime.emit_asset_events writes them there)."""
        from unipipe.runtime import trace

        return [e["event_id"] for run in flow_run_ids for e in trace.read(self.trace, str(run))
                if e.get("kind") == "asset-event"]

    def settle(self, client: Any, deployment_id: Any, deadline: float,
               follows: Sequence[str] = ()) -> list[Any]:
        """:func:`settle` with the pool's probe, after the events ``follows``."""
        return settle(client, deployment_id, deadline, probe=self.probe, follows=follows)

    def result(self, client: Any, ir: Pipeline, flow_run: Any,
               params: dict[str, Any]) -> RunResult:
        """The RunResult of a final flow run, as a backfill's (:mod:`.backfill`)."""
        from unipipe_prefect.backfill import flow_run_report, result_of

        return result_of(ir, flow_run_report(client, flow_run, str(self.values)),
                         str(flow_run.id), params, str(self.trace))


def runs_of(client: Any, deployment_id: Any) -> list[Any]:
    """A deployment's flow runs, oldest first."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.client.schemas.sorting import FlowRunSort

    return client.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
        sort=FlowRunSort.EXPECTED_START_TIME_ASC)


def wait_final(client: Any, flow_run_id: Any, deadline: float) -> Any:
    while True:
        fr = client.read_flow_run(flow_run_id)
        if fr.state is not None and fr.state.is_final():
            return fr
        if time.monotonic() > deadline:
            raise TimeoutError(f"flow run {flow_run_id} not final in time: {fr.state}")
        time.sleep(0.5)


def settle(client: Any, deployment_id: Any, deadline: float, quiet: float = QUIET,
           probe: Probe | None = None, follows: Sequence[str] = ()) -> list[Any]:
    """Until every run of the deployment is final and no new one came for ``quiet`` s; its runs
    then. With a ``probe``: first until the server has reacted to the events ``follows``
    (:meth:`Probe.round_trip`), then a calm window of :data:`PROBED_QUIET`, or twice the probe's
    round trip when the server is slower than that, instead of ``quiet``."""
    if probe is not None:
        quiet = max(PROBED_QUIET, 2 * probe.round_trip(client, deadline, follows))
    calm_since: float | None = None
    seen = -1
    while True:
        runs = runs_of(client, deployment_id)
        idle = all(r.state is not None and r.state.is_final() for r in runs)
        if not idle:
            calm_since = None
        elif calm_since is None or len(runs) != seen:
            calm_since = time.monotonic()
        elif time.monotonic() - calm_since >= quiet:
            return runs
        seen = len(runs)
        if time.monotonic() > deadline:
            raise TimeoutError(f"the runs of deployment {deployment_id} did not settle: "
                               f"{[(str(r.id), r.state and r.state.type) for r in runs]}")
        time.sleep(0.5)


@contextmanager
def deployed(pipelines: list[Pipeline], work: Path, search_path: list[str] | None = None,
             limit: int = 2) -> Iterator[Deployed]:
    """Deploy ``pipelines`` (their triggers become the server's automations) to a work pool of
    their own and run a real ``prefect worker`` on it until the context ends. The caller's
    settings point at the server (PREFECT_API_URL)."""
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL

    from unipipe.deploy import deploy
    from unipipe_prefect.runtime import VALUES_URL_ENV

    api = PREFECT_API_URL.value()
    if not api:
        raise RuntimeError("PREFECT_API_URL is not set: the chain needs a Prefect server")
    pool = f"unipipe-chain-{uuid.uuid4().hex[:8]}"
    d = Deployed(work, pool, work / "values", work / "trace")
    d.values.mkdir(parents=True, exist_ok=True)
    opts = [f"code_dir={work / 'code'}", f"work_pool={pool}",
            f"results_path={work / 'results'}", f"env.{VALUES_URL_ENV}={d.values}",
            f"env.UNIPIPE_TRACE_DIR={d.trace}"]
    for ir in pipelines:
        deploy(ir, "prefect", opts)
    with get_client(sync_client=True) as client:
        for ir in pipelines:
            d.deployments[ir.name] = client.read_deployment_by_name(f"{ir.name}/{ir.name}")
        d.probe = Probe.create(client, pool)
    backend_root = str(Path(__file__).resolve().parents[1])
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({"PREFECT_API_URL": api, "PREFECT_HOME": str(work / "worker-home"),
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PYTHONPATH": os.pathsep.join([*(search_path or []), backend_root,
                                               *filter(None, [os.environ.get("PYTHONPATH")])])})
    env.pop("UNIPIPE_RUN_ID", None)  # each flow run's own id
    try:
        with process_worker(pool, limit, env, work, work / "worker.log"):
            yield d
    except BaseException:
        with suppress(Exception), get_client(sync_client=True) as client:
            d.probe.delete(client)  # the error that got here is the one to see
        raise
    with get_client(sync_client=True) as client:
        d.probe.delete(client)


def run_chain(producer: Pipeline, consumer: Pipeline, runs: list[dict[str, Any]],
              options: RunOptions) -> tuple[list[RunResult], list[list[RunResult]]]:
    """The producer's flow runs one after the other and, per run, the consumer runs the server
    started."""
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    if options.extra.get("isolated"):
        raise NotImplementedError("the event chain runs on a local process worker; isolated "
                                  "(sandboxed) workers are not built for it")
    own = options.workdir is None
    base = Path(options.workdir) if options.workdir else Path(tempfile.mkdtemp(
        prefix="unipipe-prefect-chain-"))
    work = base / f"chain-{uuid.uuid4().hex[:8]}"
    work.mkdir(parents=True)
    api = os.environ.get("PREFECT_API_URL")
    if not api:
        from unipipe_prefect.server import shared_server

        api = shared_server().api_url
    deadline = time.monotonic() + float(options.extra.get("timeout", 900))
    produced: list[RunResult] = []
    started: list[list[RunResult]] = []
    defaults = resolve_params(consumer, {})
    with temporary_settings(updates={PREFECT_API_URL: api, PREFECT_HOME: str(work / "home")}), \
            deployed([producer, consumer], work, options.search_path) as d, \
            get_client(sync_client=True) as client:
        dep_a, dep_b = d.deployments[producer.name], d.deployments[consumer.name]
        known: set[str] = {str(r.id) for r in runs_of(client, dep_b.id)}
        for params in runs:
            values = resolve_params(producer, params)
            fr = client.create_flow_run_from_deployment(dep_a.id, parameters=values)
            produced.append(d.result(client, producer, wait_final(client, fr.id, deadline),
                                     values))
            new = [r for r in d.settle(client, dep_b.id, deadline, d.asset_events(fr.id))
                   if str(r.id) not in known]
            known |= {str(r.id) for r in new}
            started.append([d.result(client, consumer, r, defaults) for r in new])
    if own:
        shutil.rmtree(base, ignore_errors=True)
    return produced, started
