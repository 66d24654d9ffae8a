"""Airflow test setup: a migrated metadata DB and an Airflow 2.11 environment, made once.

Both live in the repository's git-ignored ``.cache/`` so a second session reuses them; on a
fresh clone (CI) the first session creates them (the uv cache makes the 2.11 venv quick).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.importorskip("airflow")

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache"


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).parent == here:
            item.add_marker(pytest.mark.airflow)


@pytest.fixture(scope="session", autouse=True)
def airflow_db_cache():
    """Runs copy one migrated SQLite DB per Airflow version from here."""
    old = os.environ.get("UNIPIPE_AIRFLOW_CACHE")
    os.environ["UNIPIPE_AIRFLOW_CACHE"] = str(CACHE / "airflow-db")
    yield CACHE / "airflow-db"
    if old is None:
        os.environ.pop("UNIPIPE_AIRFLOW_CACHE", None)
    else:
        os.environ["UNIPIPE_AIRFLOW_CACHE"] = old


@pytest.fixture(scope="session")
def airflow2_python():
    """Python of the Airflow 2.11 virtual environment (created on first use)."""
    from unipipe_airflow.dagbag import airflow2_python as make

    return make(CACHE / "airflow-2.11")
