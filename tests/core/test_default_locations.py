"""With no UNIPIPE_* variables set, every backend derives its folders from the user cache dir."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def bare_env(monkeypatch, tmp_path):
    for name in ("UNIPIPE_CACHE_URL", "UNIPIPE_ARTIFACT_URL", "UNIPIPE_AIRFLOW_CACHE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "unipipe"


def test_runtime_stores_default_under_the_user_cache_dir(bare_env):
    from unipipe.runtime import store

    assert store.cache_root() == str(bare_env / "cache")
    assert store.artifact_root() == str(bare_env / "artifacts")


def test_airflow_cache_root_default(bare_env):
    from unipipe_airflow.engine import cache_root

    assert cache_root() == bare_env / "airflow"


def test_prefect_results_default(bare_env, tmp_path):
    from unipipe_prefect.backend import results_path

    assert Path(results_path({}, tmp_path)) == bare_env / "prefect-results"


def test_kubeflow_pipeline_root_default(bare_env):
    from unipipe_kubeflow.backend import default_pipeline_root

    assert default_pipeline_root() == bare_env / "kfp-pipeline-root"
