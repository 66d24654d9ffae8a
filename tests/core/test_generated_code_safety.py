"""Across every installed target: deterministic bytes, atomic writes, inert hostile strings."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pipelines.hostile import INJECTIONS, MARKER

from unipipe.compiler.registry import compile_targets

ROOT = Path(__file__).resolve().parents[2]
HOSTILE = ROOT / "tests" / "pipelines" / "hostile.py"
EXAMPLE = ROOT / "examples" / "ml_training.py"
TARGETS = compile_targets()


def compile_in_subprocess(spec: str, target: str, out: Path, cwd: Path) -> list[Path]:
    p = subprocess.run([sys.executable, "-m", "unipipe.cli", "compile", spec, "--target", target,
                        "--out", str(out), "--allow-unsupported"],
                       capture_output=True, text=True, cwd=cwd, timeout=600)
    assert p.returncode == 0, p.stderr
    return sorted(x for x in out.rglob("*") if x.is_file())


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("spec", [f"{EXAMPLE}:training", f"{HOSTILE}:hostile"])
def test_same_ir_same_bytes_from_different_processes_and_folders(target, spec, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b" / "deeper").mkdir(parents=True)
    first = compile_in_subprocess(spec, target, tmp_path / "out1", tmp_path / "a")
    second = compile_in_subprocess(spec, target, tmp_path / "out2", tmp_path / "b" / "deeper")
    assert [p.relative_to(tmp_path / "out1") for p in first] == \
        [p.relative_to(tmp_path / "out2") for p in second]
    for a, b in zip(first, second):
        assert a.read_bytes() == b.read_bytes(), f"{a.name} differs between compiles"
    assert not [p for p in first if p.name.endswith(".tmp")], "temp files left behind"


def _string_constants(tree: ast.AST) -> set[str]:
    return {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}


@pytest.mark.parametrize("target", TARGETS)
def test_hostile_strings_stay_literals_and_never_run(target, tmp_path):
    if os.path.exists(MARKER):
        os.unlink(MARKER)
    files = compile_in_subprocess(f"{HOSTILE}:hostile", target, tmp_path / "out", ROOT)
    py_files = [f for f in files if f.suffix == ".py"]
    assert py_files
    constants: set[str] = set()
    for f in py_files:
        tree = ast.parse(f.read_text(encoding="utf-8"))
        constants |= _string_constants(tree)
        # nothing from the user became a call to os/subprocess/eval
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                assert node.func.attr not in ("system", "popen", "Popen"), ast.unparse(node)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in ("eval", "exec", "__import__"), ast.unparse(node)
    for value in INJECTIONS:
        assert value in constants, f"{value!r} did not survive as an exact literal"
    # importing the generated modules runs nothing the user wrote
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "tests"), *[str(f.parent) for f in py_files]]))
    for f in py_files:
        p = subprocess.run([sys.executable, "-c", f"import runpy; runpy.run_path({str(f)!r})"],
                           capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
        assert p.returncode == 0, p.stderr[-2000:]
    assert not os.path.exists(MARKER)


@pytest.mark.parametrize("target", TARGETS)
def test_refused_compile_leaves_the_output_folder_untouched(target, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    bad = tmp_path / "bad.py"
    bad.write_text("import unipipe as up\n\n@up.pipeline(schedule='99 * * * *')\ndef p():\n    pass\n")
    p = subprocess.run([sys.executable, "-m", "unipipe.cli", "compile", f"{bad}:p", "--target", target,
                        "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 2
    assert sorted(x.name for x in out.rglob("*")) == ["keep.txt"]


class _Exploding(str):
    """A str whose encoding fails half-way, as a crash in the middle of a write would."""


def test_interrupted_write_leaves_no_partial_file(tmp_path, monkeypatch):
    from unipipe.compiler import codegen

    target = tmp_path / "dags" / "p.py"
    codegen.write_atomic(target, "OLD = 1\n")
    real_fdopen = os.fdopen

    class Boom:
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()
            return False

        def write(self, text):
            self.fh.write(text[: len(text) // 2])
            raise KeyboardInterrupt("interrupted mid-write")

    monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: Boom(real_fdopen(fd, *a, **k)))
    with pytest.raises(KeyboardInterrupt):
        codegen.write_atomic(target, "NEW = 2\n" * 1000)
    monkeypatch.setattr(os, "fdopen", real_fdopen)
    assert target.read_text() == "OLD = 1\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["p.py"]


@pytest.mark.parametrize("target", TARGETS)
def test_compile_killed_midway_leaves_only_whole_files(target, tmp_path):
    """SIGKILL a compile of a 1500-task pipeline at several moments: every file present is whole."""
    import signal
    import time

    perf, out_dir = str(ROOT / "comparisons" / "perf"), str(tmp_path / "out")
    script = (
        f"import sys; sys.path.insert(0, {perf!r})\n"
        "import synthetic\n"
        "from unipipe.compiler.driver import compile_ir\n"
        f"compile_ir(synthetic.pipeline(1500), {target!r}, {out_dir!r})\n"
    )
    for delay in (0.5, 1.5, 3.0):
        scratch = tmp_path / f"tmp-{delay}"  # a killed compile cannot clean its staging folder
        scratch.mkdir()
        proc = subprocess.Popen([sys.executable, "-c", script], env=dict(
            os.environ, PYTHONPATH=str(ROOT / "comparisons" / "perf"), TMPDIR=str(scratch)))
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        out = tmp_path / "out"
        for f in (out.rglob("*") if out.exists() else []):
            if f.is_file():
                if f.name.startswith("."):
                    # a kill during a write can strand a temp file; engines never load it
                    assert f.name.endswith(".tmp"), f.name
                    continue
                if f.suffix == ".py":
                    ast.parse(f.read_text())
