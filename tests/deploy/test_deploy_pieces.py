"""The pure parts of a deploy: option parsing, version dialects, the environment's packages."""

from __future__ import annotations

import pytest

from unipipe.deploy.bundle import provider_requirements, requirements
from unipipe.deploy.common import dialect
from unipipe.deploy.options import InvalidDeploy, Options
from unipipe.deploy.plan import Plan, Step


@pytest.mark.airflow
@pytest.mark.parametrize(("service", "expected"), [
    ("2.10.3", "2.10"), ("2.11.0", "2.11"), ("3.0.6", "3.0"), ("3.3", "3.3"), ("3.4.1", "3.3"),
])
def test_service_airflow_version_maps_to_the_newest_dialect_not_newer_than_it(service, expected):
    assert dialect("airflow", service) == expected


@pytest.mark.airflow
@pytest.mark.parametrize("service", ["2.9.2", "1.10.15", "latest"])
def test_airflow_versions_without_a_dialect_are_invalid(service):
    with pytest.raises(InvalidDeploy):
        dialect("airflow", service)


def test_options_reject_unknown_repeated_and_malformed_pairs():
    with pytest.raises(InvalidDeploy, match="does not take --set colour"):
        Options.parse(["colour=blue"], target="mwaa", known=["bucket"])
    with pytest.raises(InvalidDeploy, match="given twice"):
        Options.parse(["bucket=a", "bucket=b"], target="mwaa", known=["bucket"])
    with pytest.raises(InvalidDeploy, match="name=value"):
        Options.parse(["bucket"], target="mwaa", known=["bucket"])
    opts = Options.parse(["flag=yes", "param.n=3", "tags=a, b,,c"], target="prefect",
                         known=["flag", "tags"], prefixes=["param."])
    assert opts.flag("flag") is True
    assert opts.items_with_prefix("param.") == {"n": "3"}
    assert opts.csv("tags") == ["a", "b", "c"]
    with pytest.raises(InvalidDeploy, match="expected true or false"):
        Options.parse(["flag=maybe"], target="x", known=["flag"]).flag("flag")


def test_providers_are_found_in_imports_inside_functions_too():
    src = b"def f():\n    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator\n"
    assert provider_requirements([src, b"import os\n"]) == ["apache-airflow-providers-cncf-kubernetes"]


def test_requirements_pin_unipipe_and_let_the_user_replace_a_package():
    pkgs = requirements(declared=["unipipe", "unipipe-airflow", "apache-airflow-providers-cncf-kubernetes"],
                        providers=["apache-airflow-providers-cncf-kubernetes"], extra=[])
    assert pkgs == ["unipipe==0.1.0", "unipipe-airflow==0.1.0", "apache-airflow-providers-cncf-kubernetes"]
    wheel = "unipipe @ https://example.org/unipipe-0.1.0-py3-none-any.whl"
    pkgs = requirements(declared=["unipipe"], providers=[], extra=[wheel, "pandas==2.2.3"])
    assert pkgs == [wheel, "pandas==2.2.3"]


def test_plan_applies_only_changing_steps_in_order_and_stops_at_a_failure():
    done: list[str] = []

    def step(name: str, change: str, fail: bool = False) -> Step:
        def apply() -> str:
            if fail:
                raise RuntimeError(name)
            done.append(name)
            return "ok"
        return Step("upload", name, change, apply=apply)

    plan = Plan("mwaa", "p", "dest", [step("a", "unchanged"), step("b", "create"), step("c", "update", fail=True),
                                      step("dag", "create")])
    assert plan.changed
    with pytest.raises(RuntimeError, match="c"):
        plan.apply()
    assert done == ["b"]  # the DAG after the failed dependency was never uploaded
    assert not Plan("mwaa", "p", "dest", [step("a", "unchanged")]).changed
