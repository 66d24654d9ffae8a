"""Kubeflow backend fixtures: KFP pipeline roots in the test's temp dir, the extra pipelines."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))


@pytest.fixture(autouse=True)
def kfp_pipeline_root(tmp_path, monkeypatch):
    """The executor's pipeline root (outputs, logs, the KFP cache DB) never leaves tmp_path."""
    root = tmp_path / "kfp-root"
    monkeypatch.setenv("UNIPIPE_KFP_PIPELINE_ROOT", str(root))
    return root
