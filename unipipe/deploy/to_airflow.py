"""MWAA and Cloud Composer: compile for the environment's Airflow version and publish to its bucket.

The code (unipipe, unipipe-airflow and the pipeline's own modules: the code package of
:mod:`unipipe.deploy.package`, none of them on the public index) travels the way each service
documents for packages that are not on PyPI:

- MWAA: the wheels in ``plugins.zip`` (unpacked to /usr/local/airflow/plugins on every
  scheduler, web server and worker) and ``requirements.txt`` with ``--find-links
  /usr/local/airflow/plugins`` pinning each of them. AWS documents this in "Managing Python
  dependencies in requirements.txt" (https://docs.aws.amazon.com/mwaa/latest/userguide/
  best-practices-dependencies.html#best-practices-dependencies-python-wheels) and "Installing
  custom packages with plugins.zip" (https://repost.aws/knowledge-center/mwaa-install-custom-packages:
  "place the (.whl) file in a plugins.zip and then refer to this file in requirements.txt").
  Entries of an existing plugins.zip that are not ours are kept.
- Cloud Composer: as a "local Python library" (https://cloud.google.com/composer/docs/composer-3/
  install-python-dependencies, option "Install as a local Python library": the package is not on
  PyPI; place it in a folder of the environment bucket's dags/ folder, which is on every worker's
  sys.path; Google's sample composer/workflows/use_local_deps.py in
  GoogleCloudPlatform/python-docs-samples imports ``from dependencies import coin_module``). The
  package's wheels are unpacked into dags/ (one folder per top-level package, each with an
  ``.airflowignore`` so the DAG processor does not parse them); their PyPI dependencies go into
  the environment's ``pypiPackages``. Composer's plugins/ folder is documented for Airflow plugins
  only ("you cannot use this method to install common Python modules or other libraries").

Upload order makes a half-deployed DAG impossible: the code first (plugins.zip and
``requirements.txt`` for MWAA, the source folders for Composer), then the compiled DAG file
last, so the scheduler never parses a DAG whose code is not there yet. On MWAA new wheels take
effect with the environment update (``--set update_environment=true``, or by hand).

``--airflow-executor`` (``--set airflow_executor=``) defaults to ``celery`` here: MWAA and
Composer run Celery workers, so a task's resources/image are reported as not honoured (in the
plan's notes, before anything is uploaded) instead of becoming a pod operator.
"""

from __future__ import annotations

import io
import json
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from unipipe.compiler.registry import own_top_level
from unipipe.deploy.bundle import LocalFile, _req_name, provider_requirements, requirements
from unipipe.deploy.common import compile_files, dialect, join_key, upload_step
from unipipe.deploy.options import DeployFailed, InvalidDeploy, Options
from unipipe.deploy.plan import Plan, Step
from unipipe.ir.models import Pipeline

#: Python of each MWAA Airflow version (for the constraints line MWAA recommends)
MWAA_PYTHON = {"2.7.2": "3.11", "2.8.1": "3.11", "2.9.2": "3.11", "2.10.1": "3.11",
               "2.10.3": "3.11", "2.11.0": "3.11", "3.0.6": "3.12"}

MWAA_OPTIONS = ("environment", "bucket", "dags_path", "requirements_path", "plugins_path",
                "airflow_version", "requirements", "update_environment", "airflow_executor")
COMPOSER_OPTIONS = ("bucket", "dags_folder", "airflow_version", "requirements", "environment", "project",
                    "region", "api_endpoint", "update_environment", "airflow_executor")
#: where MWAA unpacks plugins.zip on every container (the MWAA documents cited above)
MWAA_PLUGINS_DIR = "/usr/local/airflow/plugins"
EXECUTORS = ("celery", "local", "kubernetes")
COMPOSER_API = "https://composer.googleapis.com"


def _executor(opts: Options) -> str:
    executor = opts.get("airflow_executor", "celery")
    if executor not in EXECUTORS:
        raise InvalidDeploy(f"--airflow-executor {executor!r}: choose one of {', '.join(EXECUTORS)}")
    return executor


def _code_package(ir: Pipeline, tmp: Path) -> Any:
    from unipipe.api import search_path
    from unipipe.deploy.package import PackageError, build_code_package

    try:
        return build_code_package(ir, search_path(ir), tmp / "package", ["airflow"])
    except PackageError as exc:
        raise InvalidDeploy(str(exc)) from None


def _without_own(pkgs: list[str]) -> list[str]:
    """The requirement lines minus unipipe's own distributions (they come with the code package)."""
    return [p for p in pkgs if not _req_name(p).startswith("unipipe")]


def _compiled(ir: Pipeline, version: str, opts: Options) -> tuple[list[LocalFile], list[str], list[str]]:
    """(files to upload, entry DAG last; the environment's packages; diagnostics)."""
    files, diagnostics = compile_files(ir, "airflow", version, opts=opts,
                                       airflow_executor=_executor(opts))
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
    plugins_path = opts.get("plugins_path") or env.get("PluginsS3Path") or "plugins.zip"
    with tempfile.TemporaryDirectory(prefix="unipipe-mwaa-") as tmp:
        pkg = _code_package(ir, Path(tmp))
        wheels = {w.name: w.read_bytes() for w in pkg.wheels}

    from unipipe.deploy.stores import S3Store

    store = S3Store(bucket)
    plan = Plan("mwaa", ir.name, f"s3://{bucket}/{dags_path} (Airflow {version}, dialect {dialect_version})")
    plan.notes += notes + diagnostics
    if inspect and store.versioning() != "Enabled":
        raise DeployFailed(f"bucket {bucket!r} has versioning off: MWAA reads requirements.txt by "
                           "object version (aws s3api put-bucket-versioning ... Status=Enabled)")
    existing_zip = store.get(plugins_path) if inspect and store.stat(plugins_path) else None
    existing_req = store.get(req_path).decode(errors="replace") if inspect and store.stat(req_path) else ""
    plugins, kept = merge_plugins(existing_zip, wheels, code_dist=pkg.requirements[-1].split("==")[0])
    others = [line.strip() for line in existing_req.splitlines()
              if _req_name(line).startswith("unipipe-code-") and _req_name(line) != _req_name(pkg.requirements[-1])
              and _wheel_of(line.strip()) in kept]
    req_lines = []
    if version in MWAA_PYTHON:
        req_lines.append(f"--constraint \"https://raw.githubusercontent.com/apache/airflow/"
                         f"constraints-{version}/constraints-{MWAA_PYTHON[version]}.txt\"")
    # the wheels plugins.zip carries, then what comes from PyPI
    req_lines += [f"--find-links {MWAA_PLUGINS_DIR}", *pkg.requirements, *sorted(others)]
    pkgs = [*pkg.requirements, *_without_own(pkgs)]
    req_text = ("\n".join(req_lines + pkgs[len(pkg.requirements):]) + "\n").encode()

    def remember_plugins(version_id: str | None) -> None:
        plan.facts["PluginsS3Path"] = plugins_path
        plan.facts["PluginsS3ObjectVersion"] = version_id

    plugins_step = upload_step(plan, store, plugins_path, plugins, inspect=inspect, on_done=remember_plugins,
                               detail="code package " + pkg.digest[:12] + ": " + ", ".join(sorted(wheels)))

    def remember(version_id: str | None) -> None:
        plan.facts["RequirementsS3Path"] = req_path
        plan.facts["RequirementsS3ObjectVersion"] = version_id

    req_step = upload_step(plan, store, req_path, req_text, inspect=inspect, on_done=remember,
                           detail=", ".join(pkgs))
    if update_env:
        stale = (req_step.change != "unchanged" or plugins_step.change != "unchanged"
                 or env.get("RequirementsS3ObjectVersion") != plan.facts.get("RequirementsS3ObjectVersion")
                 or env.get("RequirementsS3Path") != req_path
                 or env.get("PluginsS3ObjectVersion") != plan.facts.get("PluginsS3ObjectVersion")
                 or env.get("PluginsS3Path") != plugins_path)

        def update() -> str:
            mwaa_client().update_environment(
                Name=env_name, RequirementsS3Path=req_path,
                RequirementsS3ObjectVersion=plan.facts["RequirementsS3ObjectVersion"],
                PluginsS3Path=plugins_path, PluginsS3ObjectVersion=plan.facts["PluginsS3ObjectVersion"])
            return "environment updating"

        plan.add(Step("call", f"mwaa:UpdateEnvironment {env_name}", "update" if stale else "unchanged",
                      f"RequirementsS3Path={req_path}, RequirementsS3ObjectVersion=<version of {req_path}>, "
                      f"PluginsS3Path={plugins_path}, PluginsS3ObjectVersion=<version of {plugins_path}>",
                      update))
    for f in dag_files:
        upload_step(plan, store, join_key(dags_path, f.relpath), f.data, inspect=inspect,
                    detail="compiled DAG")
    if not update_env:
        plan.notes.append(f"the environment must point at {plugins_path} and {req_path} by version: "
                          "PluginsS3ObjectVersion and RequirementsS3ObjectVersion are reported below")
    plan.facts["packages"] = pkgs
    plan.facts["code package"] = pkg.digest
    return plan


#: wheels of unipipe's own distributions (replaced by each deploy's)
_OWN_WHEEL = re.compile(r"^unipipe(_airflow|_prefect|_kubeflow)?-[^-]+-[^-]+-[^-]+-[^-]+\.whl$")


def _wheel_of(requirement: str) -> str:
    """``unipipe-code-x==0+abc`` -> the wheel file name prefix ``unipipe_code_x-0+abc-``."""
    name, _, version = requirement.partition("==")
    return f"{re.sub(r'[-_.]+', '_', name).lower()}-{version}-"


def merge_plugins(existing: bytes | None, wheels: dict[str, bytes], *, code_dist: str) -> tuple[bytes, set[str]]:
    """plugins.zip: the code package's wheels at its top level (MWAA unpacks it to
    /usr/local/airflow/plugins), plus every entry of the existing zip that is not an older wheel
    of unipipe or of this pipeline's code; deterministic (the same inputs give the same bytes).
    Also returns the prefixes (``name-version-``) of the other pipelines' code wheels kept."""
    from unipipe.deploy.package import deterministic_zip

    entries: dict[str, bytes] = {}
    kept: set[str] = set()
    mine = re.sub(r"[-_.]+", "_", code_dist).lower() + "-"
    if existing:
        with zipfile.ZipFile(io.BytesIO(existing)) as zf:
            for info in zf.infolist():
                name = info.filename
                if info.is_dir() or _OWN_WHEEL.match(name) or name.startswith(mine):
                    continue
                entries[name] = zf.read(info)
                if name.startswith("unipipe_code_") and name.endswith(".whl"):
                    kept.add("-".join(name.split("-")[:2]) + "-")
    entries.update(wheels)
    return deterministic_zip(entries), kept


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


def _joined(lines: list[str]) -> list[str]:
    """One line per distribution, in first-seen order: where two lines name the same one
    (unipipe's wheels require ``packaging>=20``, a task's ``packages`` ask for
    ``packaging>=21``), one line with the extras and specifiers of both, since one environment
    serves every task. A line that is not a plain requirement (a URL, options) stays as it is."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    out: dict[str, Requirement | str] = {}
    for line in lines:
        try:
            req = Requirement(line)
        except InvalidRequirement:
            out.setdefault(line, line)
            continue
        key = canonicalize_name(req.name)
        have = out.get(key)
        if isinstance(have, Requirement) and not (have.url or req.url or have.marker or req.marker):
            have.extras |= req.extras
            have.specifier &= req.specifier
        elif have is None:
            out[key] = req
    return [str(v) for v in out.values()]


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
    with tempfile.TemporaryDirectory(prefix="unipipe-composer-") as tmp:
        pkg = _code_package(ir, Path(tmp))
        sources, pypi = composer_sources(pkg, dialect_version)
    pkgs = _joined([*pypi, *_without_own(pkgs)])

    from unipipe.deploy.stores import GCSStore

    store = GCSStore(bucket)
    plan = Plan("composer", ir.name, f"gs://{bucket}/{prefix} (Airflow {version}, dialect {dialect_version})")
    plan.notes += diagnostics
    plan.notes.append(f"code package {pkg.digest[:12]} ({', '.join(pkg.requirements)}) goes into the dags "
                      "folder as local Python libraries")
    for rel, data in sources.items():
        upload_step(plan, store, join_key(prefix, rel), data, inspect=inspect,
                    detail="task module" if rel.split("/")[0] not in own_top_level() else "unipipe library")
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
    plan.facts["code package"] = pkg.digest
    plan.notes.append("the environment needs these PyPI packages (environment config, e.g. "
                      "gcloud composer environments update ENV --location REGION "
                      "--update-pypi-packages-from-file requirements.txt): " + ", ".join(pkgs))
    return plan


def composer_sources(pkg: Any, dialect_version: str) -> tuple[dict[str, bytes], list[str]]:
    """(relpath under dags/ -> bytes: every wheel of the code package unpacked, unipipe's own
    folders with an ``.airflowignore``; the PyPI requirements of unipipe's wheels)."""
    from unipipe.deploy.package import wheel_files, wheel_requires

    files: dict[str, bytes] = {}
    pypi: dict[str, str] = {}
    for wheel in pkg.wheels:
        files.update(wheel_files(wheel))
        for req in wheel_requires(wheel):
            if not _req_name(req).startswith("unipipe"):
                pypi.setdefault(_req_name(req), req)
    # everything under the folder: "*" in glob syntax (Airflow 3's default, config.yml
    # [core] dag_ignore_file_syntax default "glob"), ".*" in regexp syntax (Airflow 2.x's default,
    # airflow 2.11.0 config_templates/config.yml: default "regexp")
    pattern = b".*\n" if dialect_version.startswith("2.") else b"*\n"
    # every package folder is a library, not DAG files (the user's too: a test file or a module
    # that merely mentions "dag" and "airflow" would otherwise be parsed as one)
    for top in sorted({rel.split("/")[0] for rel in files if "/" in rel}):
        files[f"{top}/.airflowignore"] = pattern
    return dict(sorted(files.items())), sorted(pypi.values(), key=_req_name)
