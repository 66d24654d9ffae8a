"""pytest plugin for unipipe users: prove in your own repo that a pipeline behaves the same on
every backend.

Registered as the pytest11 entry point ``unipipe``, so installing unipipe is enough.

1. The ``conform`` fixture::

       def test_training_is_portable(conform):
           conform("my_pkg.pipelines:training", backends=["airflow", "prefect"],
                   params={"threshold": 0.9})

   runs the pipeline on the reference runner and on each backend (fresh subprocesses, isolated
   homes, real alert receivers) and fails the test with every difference found. It returns the
   :class:`unipipe.harness.execute.Suite` for further assertions.

2. Conformance cases as files: ``pytest path/to/cases`` collects every ``case.yaml`` (see
   :mod:`unipipe.harness.cases`) as one test per backend, for the backends named by
   ``--unipipe-backends`` (default: ``local``).

The plugin imports nothing heavy until a fixture or a case file is used.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("unipipe", "unipipe conformance")
    group.addoption("--unipipe-backends", default="local",
                    help="backends to run collected case.yaml files on, comma-separated "
                         "(the reference runner always runs)")
    group.addoption("--unipipe-out", default=None,
                    help="folder for conformance runs and reports (default: a temp dir)")


def _backends(config: pytest.Config) -> list[str]:
    raw = str(config.getoption("--unipipe-backends") or "local")
    return [b.strip() for b in raw.split(",") if b.strip()]


def _explain(suite: Any) -> str:
    lines = []
    for o in sorted(suite.failures(), key=lambda o: (o.case, o.backend)):
        lines.append(f"{o.case} on {o.backend}: {o.status}: {o.reason}")
        lines += [f"    {d}" for d in o.diffs[1:12]]
    return "\n".join(lines)


class Conform:
    """The callable the ``conform`` fixture returns."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.count = 0

    def __call__(self, pipeline: Any, backends: list[str] | tuple[str, ...] = ("local",),
                 params: dict[str, Any] | None = None, *, second_run: bool | None = None,
                 timeout: float = 300.0, check: bool = True) -> Any:
        from unipipe.harness.cases import adhoc_case, discover
        from unipipe.harness.execute import run_suite
        from unipipe.harness.report import write_reports

        if isinstance(pipeline, (str, Path)) and (Path(pipeline).is_dir() or
                                                  str(pipeline).endswith(".yaml")):
            cases = discover([str(pipeline)])
        else:
            cases = [adhoc_case(pipeline, params, second_run=second_run, timeout=timeout)]
        self.count += 1
        out = self.out_dir / f"conform-{self.count}"
        suite = run_suite(cases, list(backends), out / "work")
        write_reports(suite, out)
        if check and not suite.ok:
            pytest.fail(f"not conformant (report: {out / 'report.html'}):\n{_explain(suite)}",
                        pytrace=False)
        return suite


@pytest.fixture
def conform(tmp_path: Path) -> Iterator[Conform]:
    """``conform(pipeline, backends=[...], params={...})``: run everywhere, fail on differences."""
    yield Conform(tmp_path / "unipipe-conform")


# ---------------------------------------------------------------- case.yaml collection


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.name == "case.yaml":
        return CaseFile.from_parent(parent, path=file_path)
    return None


class CaseFile(pytest.File):
    """A ``case.yaml``: one item per backend; the case runs once on all of them."""

    suite: Any = None

    def collect(self) -> Iterator[pytest.Item]:
        from unipipe.harness.execute import REFERENCE

        for backend in dict.fromkeys([REFERENCE, *_backends(self.config)]):
            yield CaseItem.from_parent(self, name=backend, backend=backend)

    def run_once(self) -> Any:
        if self.suite is None:
            import tempfile

            from unipipe.harness.cases import load_case
            from unipipe.harness.execute import run_suite

            case = load_case(self.path)
            base = self.config.getoption("--unipipe-out")
            if base:
                root = Path(base)
            else:  # pytest's own temp folder (it keeps the last few sessions), as tmp_path does
                factory = getattr(self.config, "_tmp_path_factory", None)
                root = (factory.mktemp("unipipe-case") if factory is not None
                        else Path(tempfile.mkdtemp(prefix="unipipe-case-")))
            self.suite = run_suite([case], _backends(self.config), root / case.id)
        return self.suite


class CaseItem(pytest.Item):
    def __init__(self, *, backend: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.backend = backend

    def runtest(self) -> None:
        suite = self.parent.run_once()  # type: ignore[attr-defined]
        case = suite.cases[0]
        outcome = suite.outcome(case.id, self.backend)
        if not outcome.ok:
            raise CaseFailure(outcome)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException],
                     style: Any = None) -> str:
        if isinstance(excinfo.value, CaseFailure):
            o = excinfo.value.outcome
            return "\n".join([f"{o.case} on {o.backend}: {o.status}: {o.reason}",
                              *(f"    {d}" for d in o.diffs[1:20])])
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"case {self.parent.name} on {self.backend}"


class CaseFailure(Exception):
    def __init__(self, outcome: Any):
        super().__init__(f"{outcome.case} on {outcome.backend}: {outcome.status}")
        self.outcome = outcome
