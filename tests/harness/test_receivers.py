"""The harness's own alert receivers: real HTTP and SMTP servers on 127.0.0.1."""

from __future__ import annotations

import os

from unipipe.harness.receivers import Receivers
from unipipe.runtime import alerts


def test_receivers_collect_webhook_email_and_callback_alerts(tmp_path, monkeypatch):
    receivers = Receivers(tmp_path / "r")
    try:
        for key, value in receivers.env().items():
            monkeypatch.setenv(key, value)
        payload = {"pipeline": "p", "run_id": "r1", "task": "score", "map_index": 2,
                   "attempt": 1, "max_attempts": 2, "backend": "local", "error_type": None,
                   "error": None}
        specs = [{"on": ["retry"], "webhook": "env:UNIPIPE_HARNESS_WEBHOOK"},
                 {"on": ["retry"], "email": ["a@example.com"]},
                 {"on": ["retry"], "callback": "unipipe.harness.receivers:record_callback"}]
        before = receivers.mark()
        records = alerts.deliver(specs, "retry", payload)
        assert [r["ok"] for r in records] == [True, True, True]
        alerts.deliver_pipeline([{"on": ["failure"], "webhook": "env:ALERT_WEBHOOK_URL"}],
                                "failure", pipeline="p", run_id="r1", backend="local")
        got = [(a["task"], a["event"], a["channel"]) for a in receivers.alerts(before)]
        assert sorted(got, key=str) == sorted([
            ("score[2]", "retry", "webhook"), ("score[2]", "retry", "email"),
            ("score[2]", "retry", "callback"), (None, "failure", "webhook")], key=str)
        email = next(a for a in receivers.alerts() if a["channel"] == "email")
        assert email["to"] == ["a@example.com"] and email["payload"]["run_id"] == "r1"
        assert os.environ["UNIPIPE_SMTP_HOST"] == "127.0.0.1"
    finally:
        receivers.close()


def test_closed_receivers_stop_serving_and_their_webhook_loop_ends(tmp_path):
    """``close`` stops the webhook's serving loop (it looks at its stop flag every
    ``POLL_SECONDS``, not every 0.5 s as ``serve_forever`` by default: closing took 0.4-0.5 s
    before, measured by hand; no timed test here) and frees both ports."""
    import socket
    import urllib.request

    from unipipe.harness import receivers as mod

    assert mod.POLL_SECONDS < 0.5
    receivers = Receivers(tmp_path / "r")
    url, smtp_port = receivers.webhook.url, receivers.smtp.port
    with urllib.request.urlopen(urllib.request.Request(url, data=b'{"x": 1}'), timeout=5) as r:
        assert r.read() == b"ok"
    assert receivers.webhook.received == [{"x": 1}]
    receivers.close()
    receivers.webhook.thread.join(timeout=5)
    assert not receivers.webhook.thread.is_alive()
    for port in (int(url.split(":")[2].split("/")[0]), smtp_port):
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0
