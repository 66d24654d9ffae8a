"""Shared fixtures: isolated stores, and real alert receivers on 127.0.0.1."""

from __future__ import annotations

import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "examples"))


@pytest.fixture(autouse=True)
def isolated_stores(tmp_path, monkeypatch):
    """Cache, artifacts and traces in the test's temp dir: tests never touch the user's home."""
    monkeypatch.setenv("UNIPIPE_CACHE_URL", str(tmp_path / "cache"))
    monkeypatch.setenv("UNIPIPE_ARTIFACT_URL", str(tmp_path / "artifacts"))
    monkeypatch.setenv("UNIPIPE_TRACE_DIR", str(tmp_path / "trace"))
    return tmp_path


class WebhookReceiver:
    """A real HTTP server collecting JSON POSTs."""

    def __init__(self) -> None:
        received: list[dict] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length)
                received.append(json.loads(body))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def events(self) -> list[tuple[str | None, str]]:
        return [(r["unipipe"].get("task"), r["unipipe"]["event"]) for r in self.received]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook(monkeypatch):
    receiver = WebhookReceiver()
    monkeypatch.setenv("UNIPIPE_TEST_WEBHOOK", receiver.url)
    monkeypatch.setenv("ALERT_WEBHOOK_URL", receiver.url)
    yield receiver
    receiver.close()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class SmtpReceiver:
    """A real SMTP server (aiosmtpd) keeping every message it accepts."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        messages: list[dict] = []
        self.messages = messages

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                messages.append({"from": envelope.mail_from, "to": list(envelope.rcpt_tos),
                                 "data": envelope.content.decode("utf-8", "replace")})
                return "250 OK"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def close(self) -> None:
        self.controller.stop()


@pytest.fixture
def smtp(monkeypatch):
    receiver = SmtpReceiver()
    monkeypatch.setenv("UNIPIPE_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("UNIPIPE_SMTP_PORT", str(receiver.port))
    yield receiver
    receiver.close()


@pytest.fixture
def clean_env():
    """Environment for engine subprocesses: ours, minus anything pointing at the user's home."""
    env = dict(os.environ)
    return env
