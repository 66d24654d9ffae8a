"""Airflow lets only the leaves decide a run's state: the watcher is what keeps a run failed.

``airflow/models/dagrun.py`` ~1066 ``_tis_for_dagrun_state`` / ~1217 ``update_state``: the run
fails only if a *leaf* task failed. In ``cleanup_after_failure`` the failed task's only
downstream leaf is a cleanup (``trigger_rule="all_done"``) that succeeds, so without the
watcher the DagRun ends ``success``; with it (the generated DAG), ``failed``, as the reference
runner says. Both DAGs run under ``airflow dags test`` on the installed Airflow.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from unipipe_airflow.codegen import DagWriter, Options, dag_filename
from unipipe_airflow.dialects import dialect
from unipipe_airflow.engine import Home, base_env, dags_test, engine_dialect, template_db
from unipipe_airflow.results import read_records

from unipipe.authoring.loader import load_ir
from unipipe.compiler.codegen import render
from unipipe.params import resolve_params

CASE = (Path(__file__).resolve().parents[2] / "comparisons" / "cases" / "cleanup_after_failure"
        / "case_cleanup_after_failure.py")


def _run(tmp_path: Path, *, watcher: bool) -> tuple[str | None, dict[str, str]]:
    ir = load_ir(f"{CASE}:pipe")
    writer = DagWriter(ir, dialect(engine_dialect()), Options(kubernetes=False))
    writer.watched = watcher
    root = tmp_path / ("with" if watcher else "without")
    dags = root / "dags"
    dags.mkdir(parents=True)
    (dags / dag_filename(ir)).write_text(render(writer.build()))
    shutil.copyfile(CASE, dags / CASE.name)
    shutil.copyfile(template_db(), root / "airflow.db")
    env = base_env(root, dags)
    env["UNIPIPE_TRACE_DIR"] = str(root / "trace")
    home = Home(root, dags, env, ir.name, root / "trace")
    dags_test(home, resolve_params(ir, {}), timeout=600)
    records = read_records(home.db, home.dag_id)
    return records.run_state, {t: str(ti["state"]) for (t, _), ti in records.tis.items()}


def test_a_successful_cleanup_leaf_makes_the_run_a_success_unless_the_watcher_fails_it(tmp_path):
    state, tis = _run(tmp_path, watcher=False)
    assert (tis["load"], tis["publish"], tis["drop_scratch"]) == (
        "failed", "upstream_failed", "success")
    assert state == "success"  # Airflow's own verdict: the leaf succeeded
    state, tis = _run(tmp_path, watcher=True)
    assert tis["drop_scratch"] == "success" and tis["unipipe_watcher"] == "failed"
    assert state == "failed"
