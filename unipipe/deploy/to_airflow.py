"""MWAA and Cloud Composer: compile for the environment's Airflow version and publish to its bucket.

Upload order makes a half-deployed DAG impossible: the user's task modules (and their packages'
``__init__.py``) first, then ``requirements.txt`` (MWAA), then the compiled DAG file last, so the
scheduler never parses a DAG whose modules are not there yet.
"""

from __future__ import annotations

import json
from typing import Any

from unipipe.deploy.bundle import LocalFile, module_files, provider_requirements, requirements
from unipipe.deploy.common import compile_files, dialect, join_key, upload_step
from unipipe.deploy.options import DeployFailed, InvalidDeploy, Options
from unipipe.deploy.plan import Plan, Step
from unipipe.ir.models import Pipeline

#: Python of each MWAA Airflow version (for the constraints line MWAA recommends)
MWAA_PYTHON = {"2.7.2": "3.11", "2.8.1": "3.11", "2.9.2": "3.11", "2.10.1": "3.11",
               "2.10.3": "3.11", "2.11.0": "3.11", "3.0.6": "3.12"}

MWAA_OPTIONS = ("environment", "bucket", "dags_path", "requirements_path", "airflow_version",
                "requirements", "update_environment")
COMPOSER_OPTIONS = ("bucket", "dags_folder", "airflow_version", "requirements", "environment", "project",
                    "region", "api_endpoint", "update_environment")
COMPOSER_API = "https://composer.googleapis.com"


def _compiled(ir: Pipeline, version: str, opts: Options) -> tuple[list[LocalFile], list[str], list[str]]:
    """(files to upload, entry DAG last; the environment's packages; diagnostics)."""
    files, diagnostics = compile_files(ir, "airflow", version, opts=opts)
    declared: list[str] = []
    dags: list[LocalFile] = []
    for f in files:
        if f.relpath.endswith("requirements.txt"):
            declared += f.data.decode().splitlines()
        else:
            dags.append(f)
    pkgs = requirements(declared=declared, providers=provider_requirements(
        [f.data for f in dags if f.relpath.endswith(".py")]), extra=opts.csv("requirements"))
    return dags, pkgs, diagnostics


def _bucket_of_arn(arn: str) -> str:
    return arn.rsplit(":", 1)[-1]


def mwaa_client() -> Any:
    """boto3's MWAA client; region, credentials and endpoint from the standard AWS environment.

    An overridden endpoint (AWS_ENDPOINT_URL_MWAA: a VPC endpoint or a stand-in) is used as given,
    without the ``api.`` host prefix the public endpoint takes.
    """
    import os

    import boto3
    from botocore.config import Config

    custom = bool(os.environ.get("AWS_ENDPOINT_URL_MWAA") or os.environ.get("AWS_ENDPOINT_URL"))
    return boto3.client("mwaa", config=Config(inject_host_prefix=not custom))


def read_mwaa_environment(name: str) -> dict[str, Any]:
    return mwaa_client().get_environment(Name=name)["Environment"]


def plan_mwaa(ir: Pipeline, opts: Options, *, inspect: bool) -> Plan:
    env_name = opts.get("environment")
    env: dict[str, Any] = {}
    version = opts.get("airflow_version")
    notes: list[str] = []
    if env_name:
        try:
            env = read_mwaa_environment(env_name)
        except Exception as exc:  # the MWAA API is optional when the flags say everything
            if version is None or opts.get("bucket") is None:
                raise DeployFailed(f"cannot read MWAA environment {env_name!r} ({exc}); pass "
                                   "--set airflow_version=... and --set bucket=... instead") from exc
            notes.append(f"MWAA environment {env_name!r} not readable ({type(exc).__name__}); "
                         "using the options given")
    if version is None:
        version = env.get("AirflowVersion")
    if version is None:
        raise InvalidDeploy("--to mwaa needs --set airflow_version=X.Y.Z (or --set environment=NAME "
                            "with the MWAA API reachable)")
    bucket = opts.get("bucket") or (_bucket_of_arn(env["SourceBucketArn"]) if env.get("SourceBucketArn") else None)
    if bucket is None:
        raise InvalidDeploy("--to mwaa needs --set bucket=NAME (or --set environment=NAME)")
    if env.get("SourceBucketArn") and _bucket_of_arn(env["SourceBucketArn"]) != bucket:
        raise InvalidDeploy(f"bucket {bucket!r} is not environment {env_name!r}'s "
                            f"({_bucket_of_arn(env['SourceBucketArn'])!r})")
    dags_path = opts.get("dags_path") or env.get("DagS3Path") or "dags"
    req_path = opts.get("requirements_path") or env.get("RequirementsS3Path") or "requirements.txt"
    update_env = opts.flag("update_environment")
    if update_env and not env:
        raise InvalidDeploy("--set update_environment=true needs --set environment=NAME with the MWAA API reachable")

    dialect_version = dialect("airflow", version)
    dag_files, pkgs, diagnostics = _compiled(ir, dialect_version, opts)
    modules = module_files(ir)
    req_lines = []
    if version in MWAA_PYTHON:
        req_lines.append(f"--constraint \"https://raw.githubusercontent.com/apache/airflow/"
                         f"constraints-{version}/constraints-{MWAA_PYTHON[version]}.txt\"")
    req_text = ("\n".join(req_lines + pkgs) + "\n").encode()

    from unipipe.deploy.stores import S3Store

    store = S3Store(bucket)
    plan = Plan("mwaa", ir.name, f"s3://{bucket}/{dags_path} (Airflow {version}, dialect {dialect_version})")
    plan.notes += notes + diagnostics
    if inspect and store.versioning() != "Enabled":
        raise DeployFailed(f"bucket {bucket!r} has versioning off: MWAA reads requirements.txt by "
                           "object version (aws s3api put-bucket-versioning ... Status=Enabled)")
    for f in modules:
        upload_step(plan, store, join_key(dags_path, f.relpath), f.data, inspect=inspect,
                    detail="task module")

    def remember(version_id: str | None) -> None:
        plan.facts["RequirementsS3Path"] = req_path
        plan.facts["RequirementsS3ObjectVersion"] = version_id

    req_step = upload_step(plan, store, req_path, req_text, inspect=inspect, on_done=remember,
                           detail=", ".join(pkgs))
    if update_env:
        current = env.get("RequirementsS3ObjectVersion")
        stale = req_step.change != "unchanged" or current != plan.facts.get("RequirementsS3ObjectVersion") \
            or env.get("RequirementsS3Path") != req_path

        def update() -> str:
            mwaa_client().update_environment(
                Name=env_name, RequirementsS3Path=req_path,
                RequirementsS3ObjectVersion=plan.facts["RequirementsS3ObjectVersion"])
            return "environment updating"

        plan.add(Step("call", f"mwaa:UpdateEnvironment {env_name}", "update" if stale else "unchanged",
                      f"RequirementsS3Path={req_path}, RequirementsS3ObjectVersion=<version of {req_path}>",
                      update))
    for f in dag_files:
        upload_step(plan, store, join_key(dags_path, f.relpath), f.data, inspect=inspect,
                    detail="compiled DAG")
    if not update_env:
        plan.notes.append(f"the environment must point at {req_path} by version: "
                          "RequirementsS3ObjectVersion is reported below")
    plan.facts["packages"] = pkgs
    return plan


def _composer_session() -> Any:
    """An HTTP session with Application Default Credentials (the standard Google environment)."""
    import google.auth
    from google.auth.transport.requests import AuthorizedSession

    credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
    return AuthorizedSession(credentials)


def _composer_environment(opts: Options) -> tuple[str, str, dict[str, Any]] | None:
    """(API base, environment resource name, the environment) when --set environment= names one."""
    env = opts.get("environment")
    if env is None:
        return None
    if not env.startswith("projects/"):
        env = (f"projects/{opts.require('project', 'with a short environment name')}/locations/"
               f"{opts.require('region', 'with a short environment name')}/environments/{env}")
    base = (opts.get("api_endpoint") or COMPOSER_API).rstrip("/")
    resp = _composer_session().get(f"{base}/v1/{env}", timeout=60)
    if resp.status_code != 200:
        raise DeployFailed(f"cannot read Composer environment {env}: HTTP {resp.status_code} {resp.text[:300]}")
    return base, env, resp.json()


def _pypi_packages(pkgs: list[str]) -> tuple[dict[str, str], list[str]]:
    """Composer's ``pypiPackages`` map (name -> version specifier) and the lines it cannot hold."""
    import re

    out: dict[str, str] = {}
    rest: list[str] = []
    for line in pkgs:
        m = re.fullmatch(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*(?:\[[^\]]*\])?)\s*((?:[<>=!~]=?[^;@\s]*,?)*)\s*", line)
        if m:
            out[m.group(1)] = m.group(2)
        else:
            rest.append(line)
    return out, rest


def plan_composer(ir: Pipeline, opts: Options, *, inspect: bool) -> Plan:
    folder = opts.get("dags_folder")
    bucket = opts.get("bucket")
    if folder:
        if not folder.startswith("gs://"):
            raise InvalidDeploy(f"--set dags_folder={folder!r}: expected gs://BUCKET/dags")
        fb, _, prefix = folder[5:].partition("/")
        if bucket and bucket != fb:
            raise InvalidDeploy(f"bucket {bucket!r} and dags_folder {folder!r} disagree")
        bucket = fb
    else:
        prefix = "dags"
    found = _composer_environment(opts)
    env_config: dict[str, Any] = (found[2].get("config") or {}) if found else {}
    if not folder and env_config.get("dagGcsPrefix"):
        fb, _, prefix = env_config["dagGcsPrefix"][5:].partition("/")
        if bucket and bucket != fb:
            raise InvalidDeploy(f"bucket {bucket!r} is not the environment's ({fb!r})")
        bucket = fb
    if not bucket:
        raise InvalidDeploy("--to composer needs --set bucket=NAME, --set dags_folder=gs://BUCKET/dags "
                            "or --set environment=NAME")
    version = opts.get("airflow_version")
    image = (env_config.get("softwareConfig") or {}).get("imageVersion", "")
    if version is None and "airflow-" in image:
        version = image.split("airflow-", 1)[1]
    if version is None:
        raise InvalidDeploy("--to composer needs --set airflow_version=X.Y.Z (the environment's Airflow "
                            "version, e.g. 2.10.5) or --set environment=NAME")
    update_env = opts.flag("update_environment")
    if update_env and found is None:
        raise InvalidDeploy("--set update_environment=true needs --set environment=NAME")
    dialect_version = dialect("airflow", version)
    dag_files, pkgs, diagnostics = _compiled(ir, dialect_version, opts)
    modules = module_files(ir)

    from unipipe.deploy.stores import GCSStore

    store = GCSStore(bucket)
    plan = Plan("composer", ir.name, f"gs://{bucket}/{prefix} (Airflow {version}, dialect {dialect_version})")
    plan.notes += diagnostics
    for f in modules:
        upload_step(plan, store, join_key(prefix, f.relpath), f.data, inspect=inspect, detail="task module")
    if update_env and found is not None:
        base, name, _ = found
        wanted, unexpressible = _pypi_packages(pkgs)
        current = dict((env_config.get("softwareConfig") or {}).get("pypiPackages") or {})
        merged = {**current, **wanted}
        if unexpressible:
            plan.notes.append("Composer's pypiPackages cannot hold: " + ", ".join(unexpressible))

        def patch() -> str:
            resp = _composer_session().patch(
                f"{base}/v1/{name}", params={"updateMask": "config.softwareConfig.pypiPackages"},
                json={"config": {"softwareConfig": {"pypiPackages": merged}}}, timeout=60)
            if resp.status_code != 200:
                raise DeployFailed(f"Composer refused the update: HTTP {resp.status_code} {resp.text[:300]}")
            return f"operation {resp.json().get('name')}"

        plan.add(Step("call", f"composer environments.patch {name}", "unchanged" if merged == current else "update",
                      "config.softwareConfig.pypiPackages += " + json.dumps(
                          {k: v for k, v in wanted.items() if current.get(k) != v}, sort_keys=True), patch))
    for f in dag_files:
        upload_step(plan, store, join_key(prefix, f.relpath), f.data, inspect=inspect, detail="compiled DAG")
    plan.facts["packages"] = pkgs
    plan.notes.append("the environment needs these PyPI packages (environment config, e.g. "
                      "gcloud composer environments update ENV --location REGION "
                      "--update-pypi-packages-from-file requirements.txt): " + ", ".join(pkgs))
    return plan
