"""Real alert receivers on 127.0.0.1: an HTTP server for webhooks, aiosmtpd for email, a file
for callbacks. The harness starts one set per case and backend, so what arrives is attributable.

Importing this module is cheap (``record_callback`` runs inside engine task processes); aiosmtpd is
imported only when an SMTP receiver starts.
"""

from __future__ import annotations

import json
import os
import threading
from email import message_from_bytes
from email import policy as email_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

#: environment variables a case pipeline (or a user's) can reference as ``env:NAME``
WEBHOOK_ENV = ("UNIPIPE_HARNESS_WEBHOOK", "UNIPIPE_TEST_WEBHOOK", "ALERT_WEBHOOK_URL")
CALLBACK_LOG_ENV = "UNIPIPE_HARNESS_CALLBACK_LOG"
#: how often the webhook server's loop checks whether it was asked to stop
POLL_SECONDS = 0.02


def record_callback(payload: dict[str, Any]) -> None:
    """An alert callback (``callback="unipipe.harness.receivers:record_callback"``) that appends
    the alert to the file named by ``$UNIPIPE_HARNESS_CALLBACK_LOG`` with one O_APPEND write."""
    path = os.environ.get(CALLBACK_LOG_ENV)
    if not path:
        raise RuntimeError(f"{CALLBACK_LOG_ENV} is not set")
    line = (json.dumps(payload, sort_keys=True, default=str) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


class WebhookReceiver:
    """A real HTTP server collecting JSON POSTs (Slack-compatible bodies with a ``unipipe`` key)."""

    def __init__(self) -> None:
        received: list[dict[str, Any]] = []
        lock = threading.Lock()
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length)
                try:
                    data = json.loads(body)
                except ValueError:
                    data = {"raw": body.decode("utf-8", "replace")}
                with lock:
                    received.append(data)
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        # ``shutdown`` waits until ``serve_forever`` next looks at its flag, once per poll
        # interval (``socketserver.BaseServer.serve_forever``, 0.5 s by default): that was half
        # a second of every case on every backend, spent closing the receivers
        self.thread = threading.Thread(target=self.server.serve_forever, args=(POLL_SECONDS,),
                                       daemon=True, name="unipipe-webhook")
        self.thread.start()

    def events(self) -> list[tuple[str | None, str]]:
        """``(task, event)`` of each unipipe alert received, in arrival order (task None: the
        pipeline's own alert)."""
        return [(r["unipipe"].get("task"), r["unipipe"]["event"]) for r in self.received
                if isinstance(r, dict) and "unipipe" in r]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class SmtpReceiver:
    """A real SMTP server (aiosmtpd) keeping every message it accepts: ``from``, ``to``, the raw
    ``data`` (bytes) and the same as ``text``."""

    def __init__(self) -> None:
        try:
            from aiosmtpd.controller import Controller
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise RuntimeError("the conformance harness needs aiosmtpd: "
                               "pip install 'unipipe[harness]'") from exc

        messages: list[dict[str, Any]] = []
        self.messages = messages

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                data = bytes(envelope.original_content or envelope.content)
                messages.append({"from": envelope.mail_from, "to": list(envelope.rcpt_tos),
                                 "data": data, "text": data.decode("utf-8", "replace")})
                return "250 OK"

        import logging

        # aiosmtpd logs every connection at INFO ("mail.log"); where a host process routes the
        # standard logging to its console (Airflow's structlog set-up does) that is noise
        logging.getLogger("mail.log").setLevel(logging.WARNING)
        # aiosmtpd's start-up probe connects to the configured port, so port 0 cannot be used:
        # take a free port from the kernel, and try again if another process grabbed it first.
        last: Exception | None = None
        for _ in range(5):
            port = _free_port()
            self.controller = Controller(Handler(), hostname="127.0.0.1", port=port)
            try:
                self.controller.start()
            except (OSError, RuntimeError) as exc:
                last = exc
                continue
            self.port = port
            return
        raise RuntimeError(f"cannot start the SMTP receiver: {last}")

    def close(self) -> None:
        self.controller.stop()


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _email_payload(raw: bytes) -> dict[str, Any]:
    msg = message_from_bytes(raw, policy=email_policy.default)
    body = msg.get_body(preferencelist=("plain",))
    text = body.get_content() if body is not None else ""
    try:
        data = json.loads(text)
        return data if isinstance(data, dict) else {"subject": str(msg["Subject"])}
    except ValueError:
        return {"subject": str(msg["Subject"]), "text": text}


def _label(payload: dict[str, Any]) -> str | None:
    """``task`` or ``task[i]`` for a map element (the RunResult's labels); None: pipeline."""
    task = payload.get("task")
    if task is None and payload.get("group"):
        return f"group:{payload['group']}"  # a sub-pipeline's alert (runtime.alerts)
    if task is None or payload.get("map_index") is None:
        return task
    return f"{task}[{payload['map_index']}]"


class Receivers:
    """Webhook + SMTP + callback log for one run of one case on one backend."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.webhook = WebhookReceiver()
        self.smtp = SmtpReceiver()
        self.callback_log = folder / "callbacks.jsonl"
        self.callback_log.unlink(missing_ok=True)

    def env(self) -> dict[str, str]:
        env = {name: self.webhook.url for name in WEBHOOK_ENV}
        env.update({"UNIPIPE_SMTP_HOST": "127.0.0.1", "UNIPIPE_SMTP_PORT": str(self.smtp.port),
                    CALLBACK_LOG_ENV: str(self.callback_log)})
        return env

    def mark(self) -> tuple[int, int, int]:
        """Counts so far, to split what arrived during the first and the second run."""
        return (len(self.webhook.received), len(self.smtp.messages), len(self._callbacks()))

    def _callbacks(self) -> list[dict[str, Any]]:
        if not self.callback_log.exists():
            return []
        return [json.loads(line) for line in self.callback_log.read_text().splitlines()
                if line.strip()]

    def alerts(self, since: tuple[int, int, int] = (0, 0, 0),
               until: tuple[int, int, int] | None = None) -> list[dict[str, Any]]:
        """What arrived, normalised to ``{task, event, channel}`` plus the raw payload."""
        until = until or self.mark()
        out: list[dict[str, Any]] = []
        for body in self.webhook.received[since[0]:until[0]]:
            p = body.get("unipipe", {}) if isinstance(body, dict) else {}
            out.append({"task": _label(p), "event": p.get("event"), "channel": "webhook",
                        "payload": p})
        for m in self.smtp.messages[since[1]:until[1]]:
            p = _email_payload(m["data"])
            out.append({"task": _label(p), "event": p.get("event"), "channel": "email",
                        "payload": p, "to": m["to"]})
        for p in self._callbacks()[since[2]:until[2]]:
            out.append({"task": _label(p), "event": p.get("event"), "channel": "callback",
                        "payload": p})
        return out

    def close(self) -> None:
        self.webhook.close()
        self.smtp.close()
