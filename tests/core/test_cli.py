"""The unipipe command: exit codes 0 / 1 / 2, JSON output, nothing written on invalid input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FEATURES = ROOT / "tests" / "pipelines" / "features.py"


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "unipipe.cli", *args], capture_output=True,
                          text=True, cwd=cwd or ROOT, timeout=300)


def test_run_json_success_exit_0():
    p = cli("run", f"{FEATURES}:fanout", "--param", "n=3", "--json")
    assert p.returncode == 0, p.stderr
    data = json.loads(p.stdout)
    assert data["state"] == "success"
    assert data["output"]["squares"] == [1, 4, 9]
    assert data["tasks"]["square"]["attempts"] == 3
    assert set(data["tasks"]["make_numbers"]) >= {"state", "attempts", "cache_hit", "output", "error"}


def test_run_json_keeps_stdout_for_the_result_when_tasks_print(tmp_path):
    (tmp_path / "chatty.py").write_text(
        "import unipipe as up\n\n\n@up.task\ndef hello(n: int) -> int:\n"
        "    print('hello from the task')\n    return n + 1\n\n\n"
        "@up.pipeline(name='chatty')\ndef pipe(n: int = 1):\n    return hello(n)\n")
    p = cli("run", "chatty.py:pipe", "--json", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["output"] == 2  # the task's print went to stderr
    assert "hello from the task" in p.stderr
    table = cli("run", "chatty.py:pipe", cwd=tmp_path)  # without --json prints stay where they are
    assert "hello from the task" in table.stdout


def test_the_installed_command_runs_an_ir_document_beside_its_task_module(tmp_path):
    """The console script (unlike ``python -m``) has no cwd on sys.path: the task module of an
    IR document is still found where the user runs it, as on the other backends."""
    (tmp_path / "tasks_here.py").write_text(
        "import unipipe as up\n\n\n@up.task\ndef inc(n: int) -> int:\n    return n + 1\n\n\n"
        "@up.pipeline(name='beside')\ndef pipe(n: int = 1):\n    return inc(n)\n")
    command = str(Path(sys.executable).parent / "unipipe")
    run = lambda *a: subprocess.run([command, *a], capture_output=True, text=True,  # noqa: E731
                                    cwd=tmp_path, timeout=300)
    assert run("export", "tasks_here.py:pipe", "-o", "beside.yaml").returncode == 0
    p = run("run", "beside.yaml", "--param", "n=41", "--json")
    assert p.returncode == 0, p.stdout + p.stderr
    assert json.loads(p.stdout)["output"] == 42


def test_run_failed_exit_1():
    p = cli("run", f"{FEATURES}:non_retryable", "--json")
    assert p.returncode == 1
    data = json.loads(p.stdout)
    assert data["state"] == "failed"
    assert data["tasks"]["bad_value"]["error"].startswith("ValueError")


def test_bad_param_exit_2_names_the_field():
    p = cli("run", f"{FEATURES}:fanout", "--param", "n=lots")
    assert p.returncode == 2
    assert "params.n" in p.stderr and "expects int" in p.stderr


def test_validate_and_compile_invalid_exit_2_and_write_nothing(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import unipipe as up\n\n@up.task(timeout='soon')\ndef t():\n    pass\n")
    p = cli("validate", f"{bad}:t")
    assert p.returncode == 2
    assert f"{bad}:3" in p.stderr.replace("\n", "") and "timeout" in p.stderr
    out = tmp_path / "out"
    p = cli("compile", f"{bad}:t", "--target", "local", "--out", str(out))
    assert p.returncode == 2
    assert not out.exists()


def test_validate_ok_lists_features():
    p = cli("validate", f"{FEATURES}:cached")
    assert p.returncode == 0
    assert "cache.expire" in p.stdout


def test_export_then_run_from_ir_json(tmp_path):
    target = tmp_path / "p.json"
    assert cli("export", f"{FEATURES}:quality_gate", "-o", str(target)).returncode == 0
    doc = json.loads(target.read_text())
    assert doc["name"] == "quality-gate" and doc["schema_version"] == "1.0"
    p = cli("run", str(target), "--param", "value=0.1", "--json", cwd=ROOT / "tests")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["tasks"]["register"]["state"] == "skipped"
    yaml_target = tmp_path / "p.yaml"
    assert cli("export", f"{FEATURES}:quality_gate", "-o", str(yaml_target)).returncode == 0
    assert cli("validate", str(yaml_target)).returncode == 0


def test_schema_prints_json_schema():
    p = cli("schema")
    assert p.returncode == 0
    assert json.loads(p.stdout)["title"] == "unipipe pipeline IR"


def test_graph_mermaid_and_dot():
    p = cli("graph", f"{FEATURES}:quality_gate")
    assert p.returncode == 0
    assert "flowchart TD" in p.stdout and "passes -- when --> register" in p.stdout
    p = cli("graph", f"{FEATURES}:fanout", "--format", "dot")
    assert "digraph" in p.stdout and "make_numbers -> square;" in p.stdout
    assert "touch -> " not in p.stdout and "describe -> touch [style=dashed];" in p.stdout


def test_unknown_backend_exit_2():
    p = cli("run", f"{FEATURES}:fanout", "--backend", "dagster")
    assert p.returncode == 2 and "no backend named 'dagster'" in p.stderr


def test_missing_file_exit_2():
    p = cli("validate", "nope/missing.py:p")
    assert p.returncode == 2 and "no such file" in p.stderr


def test_compile_prints_the_written_paths_as_they_are(tmp_path):
    """Paths are printed without rich markup or emoji codes: an out folder named
    ``[bold]:smile:`` is shown as written, one path a line however long (and, with stderr not a
    terminal, no progress bar)."""
    (tmp_path / "plain.py").write_text(
        "import unipipe as up\n\n\n@up.task\ndef inc(n: int) -> int:\n    return n + 1\n\n\n"
        "@up.pipeline(name='plain')\ndef pipe(n: int = 1):\n    return inc(n)\n")
    out = tmp_path / "[bold]:smile:"
    p = cli("compile", "plain.py:pipe", "--target", "airflow", "--out", str(out), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert sorted(p.stdout.splitlines()) == sorted(str(f) for f in (out / "airflow").iterdir())
    assert len(p.stdout.splitlines()) == 2  # the DAG file and its requirements, one line each
    assert "compiling" not in p.stderr
