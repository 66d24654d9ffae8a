"""One real ``prefect server start`` per test session, shared by every Prefect test."""

from __future__ import annotations

import time

import pytest

pytest.importorskip("prefect")


@pytest.fixture(scope="session")
def prefect_local_server(tmp_path_factory):
    """The server ``up.run(..., backend="prefect")`` uses when PREFECT_API_URL is not set."""
    from unipipe_prefect.server import LocalPrefectServer, use_shared_server

    started = time.monotonic()
    server = LocalPrefectServer(home=tmp_path_factory.mktemp("prefect-server")).start()
    server.startup_seconds = time.monotonic() - started  # type: ignore[attr-defined]
    use_shared_server(server)
    yield server
    server.stop()


@pytest.fixture
def prefect_env(prefect_local_server, monkeypatch):
    """No PREFECT_* setting from the caller leaks in: runs use the session's server."""
    import os

    for key in [k for k in os.environ if k.startswith("PREFECT_")]:
        monkeypatch.delenv(key)
    return prefect_local_server
