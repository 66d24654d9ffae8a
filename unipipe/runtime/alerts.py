"""Alert delivery to real receivers: webhooks (JSON POST, Slack-compatible), SMTP, callbacks.

Channels hold secret *references*; they are resolved here, at delivery time, in the task's own
environment, so no secret is ever written into generated code.
"""

from __future__ import annotations

import json
import os
import sys

TYPE_CHECKING = False  # keeps `typing` off the shim's import path; type checkers see True
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any


class SecretError(LookupError):
    pass


def resolve_secret(ref: str) -> str:
    scheme, _, name = ref.partition(":")
    if scheme == "env":
        value = os.environ.get(name)
        if not value:
            raise SecretError(f"environment variable {name} is not set")
        return value
    if scheme == "airflow-conn":
        from airflow.sdk import BaseHook  # type: ignore[import-not-found]

        conn = BaseHook.get_connection(name)
        return conn.get_uri() if not conn.host or "://" not in (conn.host or "") else conn.host
    if scheme == "airflow-var":
        from airflow.sdk import Variable  # type: ignore[import-not-found]

        return str(Variable.get(name))
    if scheme == "prefect-block":
        from prefect.blocks.system import Secret  # type: ignore[import-not-found]

        return str(Secret.load(name).get())
    raise SecretError(f"unknown secret reference {ref!r}")


def message(payload: Mapping[str, Any]) -> str:
    scope = (f"task {payload['task']}" if payload.get("task")
             else f"sub-pipeline {payload['group']}" if payload.get("group") else "pipeline")
    text = f"unipipe: {scope} of {payload['pipeline']} (run {payload['run_id']}): {payload['event']}"
    if payload.get("attempt"):
        text += f" at attempt {payload['attempt']}"
    if payload.get("error_type"):
        text += f": {payload['error_type']}: {payload.get('error') or ''}".rstrip()
    return text


def _post(url: str, payload: Mapping[str, Any]) -> None:
    import urllib.request

    body = json.dumps({"text": message(payload), "unipipe": dict(payload)}, default=str).encode()
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        resp.read()


def _mail(to: list[str], payload: Mapping[str, Any]) -> None:
    import smtplib
    from email.message import EmailMessage

    msg = EmailMessage()
    msg["Subject"] = message(payload)[:200]
    msg["From"] = os.environ.get("UNIPIPE_SMTP_FROM", "unipipe@localhost")
    msg["To"] = ", ".join(to)
    msg.set_content(json.dumps(dict(payload), indent=2, default=str))
    host = os.environ.get("UNIPIPE_SMTP_HOST", "localhost")
    port = int(os.environ.get("UNIPIPE_SMTP_PORT", "25"))
    with smtplib.SMTP(host, port, timeout=10) as smtp:
        if os.environ.get("UNIPIPE_SMTP_STARTTLS") == "1":
            smtp.starttls()
        user = os.environ.get("UNIPIPE_SMTP_USER")
        if user:
            smtp.login(user, os.environ.get("UNIPIPE_SMTP_PASSWORD", ""))
        smtp.send_message(msg)


def _call(path: str, payload: Mapping[str, Any]) -> None:
    from unipipe.runtime.loading import import_object

    import_object(path)(dict(payload))


def _group_label(payload: Mapping[str, Any]) -> str | None:
    """How a sub-pipeline's alert is labelled where task alerts carry the task id."""
    return f"group:{payload['group']}" if payload.get("group") else None


def deliver(alerts: list[Mapping[str, Any]], event: str, payload: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Deliver ``event`` on every alert that asks for it; one record per channel.

    A failing channel never fails the task (as Airflow swallows callback errors); the record
    says ``ok: False`` with the reason, and the trace keeps it.
    """
    from unipipe.runtime import trace

    records = []
    body = dict(payload, event=event)
    for alert in alerts:
        if event not in alert.get("on", ()):
            continue
        channels: list[tuple[str, Any]] = []
        if alert.get("webhook"):
            channels.append(("webhook", alert["webhook"]))
        if alert.get("email"):
            channels.append(("email", list(alert["email"])))
        if alert.get("callback"):
            channels.append(("callback", alert["callback"]))
        for kind, target in channels:
            record = {"kind": "alert", "event": event, "channel": kind,
                      "task": payload.get("task") or _group_label(payload),
                      "run_id": payload.get("run_id"), "pipeline": payload.get("pipeline"),
                      "ok": True, "error": None, "target": target}
            try:
                if kind == "webhook":
                    _post(resolve_secret(target), body)
                elif kind == "email":
                    _mail(target, body)
                else:
                    _call(target, body)
            except Exception as exc:  # noqa: BLE001 - a broken channel must not fail the task
                record["ok"] = False
                record["error"] = f"{type(exc).__name__}: {exc}"
                print(f"unipipe: alert via {kind} failed: {record['error']}", file=sys.stderr)
            trace.emit(record)
            records.append(record)
    return records


def deliver_pipeline(alerts: list[Mapping[str, Any]], event: str, *, pipeline: str, run_id: str,
                     backend: str, error_type: str | None = None, error: str | None = None,
                     failed_tasks: list[str] | None = None,
                     group: str | None = None) -> list[dict[str, Any]]:
    """Pipeline-level alerts: once per run, at its end (``failure`` or ``success``); with
    ``group``, a sub-pipeline's, once when the group ends."""
    body = {"pipeline": pipeline, "run_id": run_id, "task": None, "attempt": None,
            "backend": backend, "error_type": error_type, "error": error,
            "failed_tasks": failed_tasks or []}
    if group is not None:
        body["group"] = group
    return deliver(alerts, event, body)
