"""Compile at the shapes people write (issue 16): what the generated files share and what a
compile leaves unimported. Speed itself is recorded by comparisons/perf/run.py, never timed here."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

from unipipe.compiler import registry

CHAIN = textwrap.dedent("""\
    import unipipe as up


    @up.task
    def step(x: int) -> int:
        return x + 1


    @up.pipeline(name="chain")
    def chain(start: int = 0) -> int:
        v = start
        for _ in range(50):
            v = step(v)
        return v
    """)


def _compile_in_fresh_process(tmp_path: Path, target: str) -> dict:
    """Compile the 50-call chain for ``target`` in a new interpreter; report the files written
    and which optional modules the compile imported."""
    (tmp_path / "chain.py").write_text(CHAIN)
    probe = textwrap.dedent(f"""\
        import json, sys
        from unipipe.cli import main
        sys.argv = ["unipipe", "compile", "chain.py:chain", "--target", {target!r}, "--out", "out"]
        try:
            main()
        except SystemExit as exc:
            assert not exc.code, exc.code
        print(json.dumps({{m: m in sys.modules for m in
                          ("packaging.requirements", "unipipe_prefect", "unipipe_kubeflow")}}))
        """)
    p = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                       cwd=tmp_path, timeout=300)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_airflow_chain_of_one_callable_shares_one_function(tmp_path):
    imported = _compile_in_fresh_process(tmp_path, "airflow")
    dag = (tmp_path / "out" / "airflow" / "chain_dag.py").read_text()
    # the first call reads the parameter, so it has its own function; the other 49 share one
    assert [line.strip() for line in dag.splitlines() if line.strip().startswith("@task")] \
        == ["@task", "@task"]
    assert dag.count(".override(task_id=") == 48
    # only the asked target's backend is imported, and packaging only when a task has packages
    assert imported == {"packaging.requirements": False, "unipipe_prefect": False,
                        "unipipe_kubeflow": False}


def test_kubeflow_chain_of_one_callable_is_one_component(tmp_path):
    _compile_in_fresh_process(tmp_path, "kubeflow")
    module = (tmp_path / "out" / "kubeflow" / "chain_kfp.py").read_text()
    assert module.count("@dsl.component") == 1
    assert sum(f'unipipe_task_id="{tid}")' in module
               for tid in ["step"] + [f"step_{i}" for i in range(2, 51)]) == 50


def test_backends_are_read_once_per_search_path(tmp_path, monkeypatch):
    first = registry.available()
    first.pop(next(iter(first)), None)  # a copy: the caller may change it
    assert registry.available() == {ep.name: ep for ep in sorted(
        entry_points(group=registry.GROUP), key=lambda e: e.name)}
    site = tmp_path / "site"
    (site / "toy_backend-1.0.dist-info").mkdir(parents=True)
    (site / "toy_backend-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: toy-backend\nVersion: 1.0\n")
    (site / "toy_backend-1.0.dist-info" / "entry_points.txt").write_text(
        "[unipipe.backends]\ntoy = toy_backend:Backend\n")
    assert "toy" not in registry.available()
    monkeypatch.syspath_prepend(str(site))  # a new search path is read afresh
    assert registry.available()["toy"].value == "toy_backend:Backend"
