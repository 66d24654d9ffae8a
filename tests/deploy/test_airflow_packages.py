"""A task's ``packages`` on MWAA and Composer: the environment's requirements (issue 15).

Airflow runs every task in the environment's one set of packages, so the deploy adds each
task's packages to MWAA's requirements.txt and to Composer's pypiPackages; the shim fails a
task at once on a worker that lacks one (PackagesMissing).
"""

from __future__ import annotations

import pytest

import unipipe as up
from deploy.helpers import deploy
from unipipe.deploy.to_airflow import _joined

pytestmark = pytest.mark.airflow


@pytest.fixture
def ir():
    return up.load("ml_artifacts:training")  # train asks for packaging>=21


def _s3_text(bucket: str, key: str) -> str:
    import boto3

    return boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read().decode()


def test_mwaa_requirements_hold_the_tasks_packages(ir, s3_bucket):
    out = deploy(ir, "mwaa", [f"bucket={s3_bucket}", "airflow_version=2.10.3",
                              "requirements=scikit-learn==1.5.2"])
    assert out.code == 0, out.text
    lines = _s3_text(s3_bucket, "requirements.txt").splitlines()
    assert lines[-2:] == ["packaging>=21", "scikit-learn==1.5.2"]
    assert lines[2].startswith("unipipe==")  # after the constraints and --find-links lines


def test_composer_packages_join_the_tasks_packages_with_unipipes_own(ir, gcs_bucket):
    out = deploy(ir, "composer", [f"dags_folder=gs://{gcs_bucket}/dags",
                                  "airflow_version=2.10.5"], dry_run=True)
    assert out.code == 0, out.text
    packages = next(line for line in out.text.splitlines() if line.startswith("packages: "))
    assert "packaging>=21" in packages
    assert "pydantic<3,>=2.7" in packages  # unipipe's own PyPI dependencies stay


def test_lines_naming_one_distribution_join_their_specifiers():
    assert _joined(["packaging>=20", "pydantic<3,>=2.7", "Packaging[x]<25",
                    "rich", "packaging>=21"]) == ["packaging[x]<25,>=20,>=21",
                                                  "pydantic<3,>=2.7", "rich"]
    # a line that is no plain requirement stays as it is
    assert _joined(["--find-links /x", "rich"]) == ["--find-links /x", "rich"]
