"""``@up.pipeline(trigger=up.On(a, b, mode=...))`` on Prefect: deployment triggers on the events
that ``produces=[...]`` tasks emit (runtime.emit_asset_events: event ``unipipe.asset.updated``,
resource ``unipipe.asset.<uri>``).

- ``mode="any"``: one ``DeploymentEventTrigger`` (reactive, threshold 1) whose ``match`` lists
  every asset's resource id: each event starts one run (prefect/events/schemas/
  deployment_triggers.py ``DeploymentEventTrigger``; a match value may be a list,
  events/schemas/events.py ``ResourceSpecification``).
- ``mode="all"``: a ``DeploymentCompoundTrigger(require="all", within=ALL_WITHIN)`` of one event
  trigger per asset (events/schemas/automations.py ``CompoundTrigger``): a run once every asset
  was updated within the window. Prefect needs the window; the reference waits indefinitely.

Each trigger becomes an Automation whose action is ``RunDeployment`` of the deployment, owned
by ``prefect.deployment.<id>`` (automations.py ``set_deployment_id`` / ``as_automation``), as
``flow.serve(triggers=...)`` and ``prefect deploy`` create them (deployments/runner.py ~653:
the owned automations are deleted and recreated on every deploy). The server's ReactiveTriggers
and Actions services create the run (``PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED``, in the API's
process: the event broker is in memory). No template goes into the run's parameters
(``{{ event.id }}`` fails every action: docs/facts/events-schedules-artifacts.md A3).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from unipipe.ir.models import Pipeline
from unipipe_prefect.runtime import ASSET_EVENT, asset_resource_id

#: how long a ``mode="all"`` trigger remembers one asset's update while it waits for the others
ALL_WITHIN = timedelta(days=1)


def resource_id(uri: str) -> str:
    return asset_resource_id(uri)


def trigger_specs(ir: Pipeline) -> list[dict[str, Any]]:
    """The deployment's triggers as ``prefect.yaml`` writes them (``triggers:``; ``prefect
    deploy`` reads them with the same models: cli/deploy/_core.py ~310)."""
    t = ir.trigger
    if t is None:
        return []
    ids = [resource_id(u) for u in t.assets]
    name = f"unipipe {ir.name}: on {t.mode} of {', '.join(t.assets)}"
    if t.mode == "any" or len(ids) == 1:
        return [{"type": "event", "name": name, "enabled": True, "posture": "Reactive",
                 "threshold": 1, "expect": [ASSET_EVENT],
                 "match": {"prefect.resource.id": ids[0] if len(ids) == 1 else ids}}]
    return [{"type": "compound", "name": name, "enabled": True, "require": "all",
             "within": int(ALL_WITHIN.total_seconds()),
             "triggers": [{"type": "event", "posture": "Reactive", "threshold": 1,
                           "expect": [ASSET_EVENT], "match": {"prefect.resource.id": i}}
                          for i in ids]}]


def deployment_triggers(ir: Pipeline) -> list[Any]:
    """The Deployment*Trigger objects of :func:`trigger_specs`."""
    from prefect.events.schemas.deployment_triggers import DeploymentTriggerTypes
    from pydantic import TypeAdapter

    adapter = TypeAdapter(DeploymentTriggerTypes)
    return [adapter.validate_python(spec) for spec in trigger_specs(ir)]


def apply(client: Any, deployment_id: Any, ir: Pipeline) -> list[Any]:
    """Replace the deployment's automations with the pipeline's triggers (a sync client);
    the new automations' ids."""
    client.delete_resource_owned_automations(f"prefect.deployment.{deployment_id}")
    ids = []
    for trigger in deployment_triggers(ir):
        trigger.set_deployment_id(deployment_id)
        ids.append(client.create_automation(trigger.as_automation()))
    return ids
