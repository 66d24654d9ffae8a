"""How unipipe asks Airflow 3.3 for a backfill when SQLite's lock is lost (a CI run saw it).

The lock loss itself cannot be provoked on demand: in WAL mode SQLite answers a write that lost
its snapshot to another writer at once, without the busy timeout, and only when the scheduler
writes in that instant. So the answers here are Airflow's own, as its source writes them
(``api_fastapi/core_api/routes/public/backfills.py`` ``_raise_locked_response_or_reraise`` and
``create_backfill``), served on 127.0.0.1 to the real client code; the retry is what the source
allows (``models/backfill.py`` ``_cleanup_partial_backfill``: "so the user can retry").
"""

from __future__ import annotations

import pytest
from deploy.recording import RecordingServer
from unipipe_airflow import server
from unipipe_airflow.backfill import BackfillRunError, _post_backfill

LOCKED = (503, {"detail": "Database is locked. Backfill creation is not supported on SQLite "
                          "under concurrent access. Please use PostgreSQL or MySQL."})
RUNNING = (409, {"detail": "There is already a running backfill for dag d"})
CREATED = (200, {"id": 1, "dag_id": "d"})
BODY = {"dag_id": "d", "from_date": "2024-03-27", "to_date": "2024-04-02"}


def _serve(answers: list[tuple[int, dict]]) -> tuple[RecordingServer, server.Api]:
    """A server on 127.0.0.1 that gives ``answers`` in turn, and the client's API on it."""
    pending = iter(answers)
    httpd = RecordingServer(lambda rec: next(pending))
    return httpd, server.Api(httpd.url + "/api/v2")


def _posts(httpd: RecordingServer) -> list[dict]:
    assert {(r.method, r.path) for r in httpd.requests} <= {("POST", "/api/v2/backfills")}
    return [r.json() for r in httpd.requests]


def test_a_locked_answer_is_asked_again_and_the_next_answer_counts():
    httpd, api = _serve([LOCKED, LOCKED, CREATED])
    try:
        _post_backfill(api, BODY)
    finally:
        httpd.close()
    assert _posts(httpd) == [BODY, BODY, BODY]


def test_a_running_backfill_after_a_lock_is_an_error_that_says_the_clean_up_did_not_happen():
    httpd, api = _serve([LOCKED, RUNNING])
    try:
        with pytest.raises(BackfillRunError, match="clean-up of the half-made backfill"):
            _post_backfill(api, BODY)
    finally:
        httpd.close()
    assert _posts(httpd) == [BODY, BODY]


@pytest.mark.parametrize("answer", [RUNNING, (500, {"detail": "boom"})])
def test_any_other_error_is_not_asked_again(answer):
    httpd, api = _serve([answer, CREATED])
    try:
        with pytest.raises(BackfillRunError, match=str(answer[0])) as info:
            _post_backfill(api, BODY)
    finally:
        httpd.close()
    assert answer[1]["detail"] in str(info.value)
    assert _posts(httpd) == [BODY]
