"""How unipipe asks Airflow 3.3 for a backfill when SQLite's lock is lost (a CI run saw it).

The lock loss itself cannot be provoked on demand: in WAL mode SQLite answers a write that lost
its snapshot to another writer at once, without the busy timeout, and only when the scheduler
writes in that instant. So the answers here are Airflow's own, as its source writes them
(``api_fastapi/core_api/routes/public/backfills.py`` ``_raise_locked_response_or_reraise`` and
``create_backfill``), served on 127.0.0.1 to the real client code; the retry is what the source
allows (``models/backfill.py`` ``_cleanup_partial_backfill``: "so the user can retry").
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from unipipe_airflow import server
from unipipe_airflow.backfill import BackfillRunError, _post_backfill

LOCKED = (503, {"detail": "Database is locked. Backfill creation is not supported on SQLite "
                          "under concurrent access. Please use PostgreSQL or MySQL."})
RUNNING = (409, {"detail": "There is already a running backfill for dag d"})
CREATED = (200, {"id": 1, "dag_id": "d"})


def _serve(answers: list[tuple[int, dict]]):
    posts: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            posts.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            code, body = answers[len(posts) - 1]
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, posts, server.Api(f"http://127.0.0.1:{httpd.server_address[1]}/api/v2")


BODY = {"dag_id": "d", "from_date": "2024-03-27", "to_date": "2024-04-02"}


def test_a_locked_answer_is_asked_again_and_the_next_answer_counts():
    httpd, posts, api = _serve([LOCKED, LOCKED, CREATED])
    try:
        _post_backfill(api, BODY)
    finally:
        httpd.shutdown()
    assert posts == [BODY, BODY, BODY]


def test_a_running_backfill_after_a_lock_is_an_error_that_says_the_clean_up_did_not_happen():
    httpd, posts, api = _serve([LOCKED, RUNNING])
    try:
        with pytest.raises(BackfillRunError, match="clean-up of the half-made backfill"):
            _post_backfill(api, BODY)
    finally:
        httpd.shutdown()
    assert len(posts) == 2


@pytest.mark.parametrize("answer", [RUNNING, (500, {"detail": "boom"})])
def test_any_other_error_is_not_asked_again(answer):
    httpd, posts, api = _serve([answer, CREATED])
    try:
        with pytest.raises(BackfillRunError, match=str(answer[0])) as info:
            _post_backfill(api, BODY)
    finally:
        httpd.shutdown()
    assert answer[1]["detail"] in str(info.value)
    assert len(posts) == 1
