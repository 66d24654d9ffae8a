"""The Dockerfile written next to compiled output (content only: no Docker on this machine, so the
image is never built here)."""

from __future__ import annotations

import re
from pathlib import Path

import ml_training
import pytest
from typer.testing import CliRunner

import unipipe as up
from unipipe.api import search_path
from unipipe.cli import app
from unipipe.deploy.image import write_image_context

BASES = {"airflow": r"apache/airflow:3\.3\.\d+-python3\.11", "prefect": r"prefecthq/prefect:3-python3\.11",
         "kubeflow": r"python:3\.11-slim"}


@pytest.mark.parametrize("target", sorted(BASES))
def test_dockerfile_starts_from_the_engine_image_and_installs_the_package_offline(target, tmp_path):
    ir = up.load(ml_training.training)
    paths = write_image_context(ir, target, tmp_path / "a", search_path(ir), version="3.3" if target == "airflow" else None)
    text = (tmp_path / "a" / "Dockerfile").read_text()
    wheels = sorted(p.name for p in (tmp_path / "a" / "package").iterdir())
    assert sorted(p.name for p in paths[:-1]) == wheels and paths[-1].name == "Dockerfile"
    backend = {"airflow": "unipipe_airflow", "prefect": "unipipe_prefect", "kubeflow": "unipipe_kubeflow"}[target]
    assert [w.split("-")[0] for w in wheels] == sorted(["unipipe", backend, "unipipe_code_ml_training"])
    lines = text.splitlines()
    assert re.fullmatch(f"FROM {BASES[target]}", lines[3]), lines[3]
    pypi = lines[4]
    assert pypi.startswith("RUN pip install --no-cache-dir ") and '"pydantic<3,>=2.7"' in pypi
    assert ("apache-airflow==${AIRFLOW_VERSION}" in pypi) == (target == "airflow")
    assert "unipipe" not in pypi  # not on PyPI: from the package folder only
    assert lines[5] == "COPY package/ /opt/unipipe/package/"
    code_version = next(w for w in wheels if w.startswith("unipipe_code_")).split("-")[1]
    dist = backend.replace("_", "-")
    assert lines[6] == ("RUN pip install --no-cache-dir --no-index --no-deps --find-links /opt/unipipe/package "
                        f'"unipipe==0.1.0" "{dist}==0.1.0" "unipipe-code-ml-training=={code_version}"')
    assert len(lines) == 7
    # deterministic: the same package gives the same bytes
    write_image_context(ir, target, tmp_path / "b", search_path(ir), version="3.3" if target == "airflow" else None)
    assert (tmp_path / "b" / "Dockerfile").read_bytes() == text.encode()


def test_cli_compile_dockerfile_writes_it_next_to_the_dag(tmp_path):
    result = CliRunner().invoke(app, ["compile", f"{ml_training.__file__}:training", "-t", "airflow", "-o",
                                      str(tmp_path), "--airflow-version", "2.11", "--airflow-executor", "celery",
                                      "--dockerfile"])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "airflow"
    assert sorted(p.name for p in folder.iterdir()) == ["Dockerfile", "ml_training_dag.py",
                                                        "ml_training_dag.requirements.txt", "package"]
    assert "FROM apache/airflow:2.11.0-python3.11\n" in (folder / "Dockerfile").read_text()
    plain = CliRunner().invoke(app, ["compile", f"{ml_training.__file__}:training", "-t", "airflow", "-o",
                                     str(tmp_path / "plain")])
    assert plain.exit_code == 0 and not (Path(tmp_path / "plain" / "airflow") / "Dockerfile").exists()
