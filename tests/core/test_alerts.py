"""Alerts reach real receivers on 127.0.0.1 exactly once per event."""

from __future__ import annotations

import email
import json

from pipelines import features as f

import unipipe as up


def test_retry_and_final_failure_alerts_to_webhook_and_email(webhook, smtp):
    result = up.run(f.retries_exhausted)
    assert result.state == "failed"
    # task alerts: one per retry (2), one on the final failure; pipeline alert by email once
    assert webhook.events() == [("always_fails", "retry"), ("always_fails", "retry"),
                                ("always_fails", "failure")]
    assert [r["unipipe"]["attempt"] for r in webhook.received] == [1, 2, 3]
    assert webhook.received[-1]["unipipe"]["error_type"] == "RuntimeError"
    assert "always fails" in webhook.received[-1]["text"]
    assert len(smtp.messages) == 1
    assert smtp.messages[0]["to"] == ["oncall@example.com"]
    assert "failure" in smtp.messages[0]["text"]
    body = json.loads(email.message_from_string(smtp.messages[0]["text"]).get_payload())
    assert body["failed_tasks"] == ["always_fails", "never_runs"]
    assert (body["event"], body["task"], body["pipeline"]) == ("failure", None, "retries-exhausted")
    assert [(a["event"], a["channel"], a["ok"]) for a in result.alerts] == [
        ("retry", "webhook", True), ("retry", "webhook", True), ("failure", "webhook", True),
        ("failure", "email", True)]


def test_success_alerts_once_for_task_and_pipeline(webhook):
    result = up.run(f.success_alert, params={"text": "hi"})
    assert result.state == "success"
    assert webhook.events() == [("announce", "success"), (None, "success")]


def test_no_alert_when_a_retry_succeeds_without_failure_alerts(webhook):
    up.run(f.retry_then_succeed, params={"fail_times": 1})
    assert webhook.received == []


def test_broken_channel_is_recorded_and_does_not_fail_the_task(monkeypatch):
    monkeypatch.setenv("UNIPIPE_TEST_WEBHOOK", "http://127.0.0.1:9/nothing-listens")
    result = up.run(f.success_alert)
    assert result.state == "success"
    assert result.alerts[0]["ok"] is False
    assert "URLError" in result.alerts[0]["error"] or "Connection" in result.alerts[0]["error"]


def test_missing_secret_is_reported_not_leaked(monkeypatch):
    monkeypatch.delenv("UNIPIPE_TEST_WEBHOOK", raising=False)
    result = up.run(f.success_alert)
    assert result.alerts[0]["ok"] is False
    assert "UNIPIPE_TEST_WEBHOOK is not set" in result.alerts[0]["error"]
