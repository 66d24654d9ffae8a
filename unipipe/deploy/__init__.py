"""``unipipe deploy``: publish a compiled pipeline to MWAA, Cloud Composer, Prefect, KFP or Vertex AI.

Every target first builds a :class:`~unipipe.deploy.plan.Plan` by reading the remote state
(read-only calls), then applies only the steps that change something, in order. ``--dry-run``
prints the plan and stops. Credentials come from each SDK's standard environment, never from
options or generated files. Options (``--set name=value``), per target:

- mwaa: ``bucket``, ``airflow_version`` (or ``environment`` to read both, and the dags and
  requirements paths, through the MWAA API), ``dags_path``, ``requirements_path``,
  ``requirements`` (extra packages, comma-separated), ``update_environment`` (point the
  environment at the new requirements.txt version). AWS_* environment, AWS_ENDPOINT_URL_S3/_MWAA.
- composer: ``bucket`` or ``dags_folder`` and ``airflow_version`` (or ``environment`` with
  ``project``/``region``, read through the Composer API), ``requirements``,
  ``update_environment`` (add the PyPI packages), ``api_endpoint``. Application Default Credentials.
- prefect: ``code_dir`` (where workers load the flow code), ``work_pool``, ``work_pool_type``,
  ``work_queue``, ``name``, ``tags``, ``paused``, ``results_path``, ``param.NAME``, ``env.NAME``.
  PREFECT_API_URL (and PREFECT_API_KEY for Prefect Cloud).
- kubeflow: ``host`` (or KF_PIPELINES_ENDPOINT), ``namespace``, ``pipeline_name``,
  ``description``, ``experiment``, ``schedule`` (false: no recurring run).
- vertex: ``project``, ``region``, ``pipeline_root``, ``service_account``, ``network``,
  ``display_name``, ``enable_caching``, ``api_endpoint``, ``param.NAME``.
- every target: ``allow_unsupported`` (compile with warnings instead of refusing a feature).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from unipipe.deploy.options import DeployFailed, InvalidDeploy, Options
from unipipe.deploy.plan import Plan, Step
from unipipe.ir.models import Pipeline

__all__ = ["TARGETS", "DeployFailed", "InvalidDeploy", "Plan", "Step", "deploy", "deploy_main", "plan"]


def _targets() -> dict[str, tuple[tuple[str, ...], tuple[str, ...], Callable[..., Plan]]]:
    """target -> (option names, option prefixes, planner); planners import their SDKs lazily."""
    from unipipe.deploy import to_airflow, to_kfp, to_prefect

    return {
        "mwaa": (to_airflow.MWAA_OPTIONS, (), to_airflow.plan_mwaa),
        "composer": (to_airflow.COMPOSER_OPTIONS, (), to_airflow.plan_composer),
        "prefect": (to_prefect.OPTIONS, to_prefect.PREFIXES, to_prefect.plan_prefect),
        "kubeflow": (to_kfp.KFP_OPTIONS, (), to_kfp.plan_kfp),
        "vertex": (to_kfp.VERTEX_OPTIONS, to_kfp.VERTEX_PREFIXES, to_kfp.plan_vertex),
    }


TARGETS = ("mwaa", "composer", "prefect", "kubeflow", "vertex")


def plan(ir: Pipeline, to: str, options: list[str] | dict[str, Any], *, inspect: bool = True,
         store_local: bool = False) -> Plan:
    """The plan for deploying ``ir`` to ``to``; ``inspect=False`` plans without reading remote state.

    A target whose tasks land on many machines needs ``ir.store`` (a shared store), unless the
    user asked for each machine's own folder (``store_local``, the CLI's ``--store local``).
    """
    if to not in TARGETS:
        raise InvalidDeploy(f"unknown deploy target {to!r} (choose one of {', '.join(TARGETS)})")
    known, prefixes, planner = _targets()[to]
    pairs = [f"{k}={v}" for k, v in options.items()] if isinstance(options, dict) else list(options)
    opts = Options.parse(pairs, target=to, known=(*known, "allow_unsupported"), prefixes=prefixes)
    _require_store(ir, to, opts, store_local)
    p = planner(ir, opts, inspect=inspect)
    p.facts["store"] = ir.store or "none: each machine's own ~/.cache/unipipe (--store local)"
    return p


def _require_store(ir: Pipeline, to: str, opts: Options, store_local: bool) -> None:
    from unipipe.store import MULTI_MACHINE_TARGETS, StoreError, require_shared

    pool_type = opts.values.get("work_pool_type") or "process"
    if to in MULTI_MACHINE_TARGETS:
        why = {"mwaa": "Celery workers", "composer": "Celery workers", "kubeflow": "one pod per task",
               "vertex": "one container per task"}[to]
    elif to == "prefect" and pool_type != "process":
        why = f"work pool type {pool_type!r}: one container or job per flow run"
    else:
        return
    try:
        require_shared(ir, to, explicit_local=store_local, why=why)
    except StoreError as exc:
        raise InvalidDeploy(str(exc)) from None


def deploy(ir: Pipeline, to: str, options: list[str] | dict[str, Any] | None = None, *,
           dry_run: bool = False, store_local: bool = False) -> Plan:
    """Plan, and unless ``dry_run``, apply. Returns the plan with each applied step's result."""
    p = plan(ir, to, options or [], inspect=True, store_local=store_local)
    if not dry_run:
        try:
            p.apply()
        except DeployFailed:
            raise
        except Exception as exc:
            raise DeployFailed(f"{type(exc).__name__}: {exc}") from exc
    return p


def deploy_main(ir: Pipeline, to: str, *, dry_run: bool, options: list[str], console: Any,
                store_local: bool = False) -> int:
    """The CLI command: 0 deployed (or already up to date), 2 invalid input, 1 deploy failed."""
    from unipipe.compiler.diagnostics import UnsupportedFeature
    from unipipe.compiler.registry import UnknownBackend
    from unipipe.ir.errors import PipelineError

    def say(text: str, style: str = "") -> None:
        console.print(f"[{style}]{text}[/]" if style else text, markup=bool(style), highlight=False,
                      soft_wrap=True)

    try:
        try:
            p = plan(ir, to, options, inspect=True, store_local=store_local)
        except (InvalidDeploy, PipelineError, UnsupportedFeature, UnknownBackend):
            raise
        except Exception as exc:
            if not dry_run:
                raise
            # a dry run still shows what would be sent when the service cannot be read
            p = plan(ir, to, options, inspect=False, store_local=store_local)
            p.notes.insert(0, f"remote state not read ({type(exc).__name__}: {exc})")
        say(f"{'plan' if dry_run else 'deploy'}: pipeline {p.pipeline!r} to {p.target}: {p.destination}",
            "bold")
        for note in p.notes:
            say(f"note: {note}", "dim")
        if dry_run:
            for line in p.lines():
                say(line)
            _facts(p, say)
            say("dry run: nothing changed" if p.steps else "dry run: no steps", "yellow")
            return 0
        if not p.changed:
            for line in p.lines():
                say(line)
            say(f"unchanged: {p.pipeline!r} is already deployed to {p.target}; nothing changed", "green")
        else:
            try:
                p.apply()
            except Exception as exc:
                for s in p.steps:
                    if s.result is not None or not s.changes_something:
                        say(s.line())
                raise DeployFailed(f"{type(exc).__name__}: {exc}") from exc
            for line in p.lines():
                say(line)
            n = sum(1 for s in p.steps if s.changes_something)
            say(f"deployed: {n} change{'s' if n != 1 else ''} applied", "green")
        _facts(p, say)
        return 0
    except (InvalidDeploy, PipelineError, UnsupportedFeature, UnknownBackend, ValueError) as exc:
        say(f"error: {exc}", "bold red")
        return 2
    except DeployFailed as exc:
        say(f"deploy failed: {exc}", "bold red")
        return 1
    except Exception as exc:  # an SDK or service error while reading remote state
        say(f"deploy failed: {type(exc).__name__}: {exc}", "bold red")
        return 1


def _facts(p: Plan, say: Callable[[str], None]) -> None:
    for key, value in p.facts.items():
        if value is None:
            continue
        say(f"{key}: {', '.join(value) if isinstance(value, list) else value}")
