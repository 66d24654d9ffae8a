"""Target dialects: what each Airflow line can express, as data (sqlglot-style).

A dialect is chosen by ``--airflow-version`` / ``target_version``; the first of
:data:`VERSIONS` is the default. Everything version-specific that the code generator and the
support table read lives here, so adding a dialect is one entry.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Dialect:
    version: str
    #: module the generated DAG imports ``dag`` and ``task`` from
    decorators: str
    #: module ``Param`` comes from
    params: str
    #: ``retry_exponential_backoff`` is a float multiplier (3.1+) rather than a bool (x2)
    float_backoff: bool
    #: ``retry_policy=`` (3.3+): a worker-side policy that may fail early or set the next delay
    retry_policy: bool
    #: module ``TaskGroup`` comes from (sub-pipelines): ``airflow.sdk`` on 3.x
    #: (``sdk/definitions/taskgroup.py``), ``airflow.utils.task_group`` on 2.x
    task_group: str = "airflow.sdk"

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])


DIALECTS: dict[str, Dialect] = {
    "3.3": Dialect("3.3", "airflow.sdk", "airflow.sdk", float_backoff=True, retry_policy=True),
    "3.0": Dialect("3.0", "airflow.sdk", "airflow.sdk", float_backoff=False, retry_policy=False),
    "2.11": Dialect("2.11", "airflow.decorators", "airflow.models.param", float_backoff=False,
                    retry_policy=False, task_group="airflow.utils.task_group"),
    "2.10": Dialect("2.10", "airflow.decorators", "airflow.models.param", float_backoff=False,
                    retry_policy=False, task_group="airflow.utils.task_group"),
}

#: newest first; the first is the default target
VERSIONS: tuple[str, ...] = tuple(DIALECTS)


def dialect(version: str | None) -> Dialect:
    if version is None:
        return DIALECTS[VERSIONS[0]]
    try:
        return DIALECTS[version]
    except KeyError:
        raise ValueError(f"airflow cannot target version {version!r}; choose one of "
                         f"{', '.join(VERSIONS)}") from None
