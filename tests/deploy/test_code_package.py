"""The code package: unipipe's wheels and the pipeline's own code wheel, content-addressed."""

from __future__ import annotations

import itertools
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

import unipipe as up
from unipipe.deploy.package import PackageError, build_code_package, project_wheel, write_wheel

ROOT = Path(__file__).resolve().parents[2]
_n = itertools.count(1)


def _pipeline(tmp_path: Path, body: str = "", *, package: bool = False, extra_path: Path | None = None):
    """A pipeline in a fresh module (unique name) under tmp_path/src; returns (ir, src folder, module)."""
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    name = f"cp_mod_{next(_n)}"
    code = textwrap.dedent(f'''
        import unipipe as up
        {"import cp_errors" if extra_path else ""}

        @up.task(retry=up.Retry(max_retries=1, retry_on=({"cp_errors.Flaky, " if extra_path else ""}ConnectionError,)))
        def double(x: int) -> int:
            return 2 * x

        @up.pipeline(name="cp-{name}")
        def pipe(x: int = 4):
            return double(x)
        ''') + body
    if package:
        pkg = src / name
        pkg.mkdir()
        (pkg / "__init__.py").write_text("")
        (pkg / "tasks.py").write_text(code)
        (pkg / "__pycache__").mkdir()
        (pkg / "__pycache__" / "tasks.cpython-311.pyc").write_bytes(b"junk")
        spec, file = f"{name}.tasks:pipe", pkg / "tasks.py"
    else:
        file = src / f"{name}.py"
        file.write_text(code)
        spec = f"{name}:pipe"
    sys.path.insert(0, str(src))
    if extra_path:
        sys.path.insert(0, str(extra_path))
    try:
        ir = up.load(spec)
    finally:
        sys.path.remove(str(src))
        if extra_path:
            sys.path.remove(str(extra_path))
    return ir, src, name, file


def _members(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        return zf.namelist()


def test_two_builds_give_the_same_digest_and_bytes(tmp_path):
    ir, src, name, _ = _pipeline(tmp_path)
    a = build_code_package(ir, [src], tmp_path / "a", ["airflow"])
    b = build_code_package(ir, [src], tmp_path / "b", ["airflow"])
    assert a.digest == b.digest and len(a.digest) == 64
    # unipipe's wheels come from the source-hash cache the second time (the same cached file)
    assert project_wheel("unipipe") == project_wheel("unipipe")
    assert [w.name for w in a.wheels] == [w.name for w in b.wheels]
    assert [w.read_bytes() for w in a.wheels] == [w.read_bytes() for w in b.wheels]
    assert sorted(p.name for p in a.folder.iterdir()) == sorted(w.name for w in a.wheels)
    assert a.requirements[:2] == ("unipipe==0.1.0", "unipipe-airflow==0.1.0")
    code_version = a.code_wheel.name.split("-")[1]
    assert a.requirements[2] == f"unipipe-code-cp-{name.replace('_', '-')}=={code_version}"
    assert code_version.startswith("0+") and len(code_version) == 14
    members = _members(a.code_wheel)
    assert members[0] == f"{name}.py"
    with zipfile.ZipFile(a.code_wheel) as zf:
        assert {i.date_time for i in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        record = zf.read(next(m for m in members if m.endswith("/RECORD"))).decode()
    assert record.startswith(f"{name}.py,sha256=")


def test_a_changed_task_module_gives_a_new_digest(tmp_path):
    ir, src, _, file = _pipeline(tmp_path)
    before = build_code_package(ir, [src], tmp_path / "a")
    file.write_text(file.read_text() + "\n# a comment changes the code\n")
    after = build_code_package(ir, [src], tmp_path / "b")
    assert after.digest != before.digest
    assert after.code_wheel.name != before.code_wheel.name
    assert after.wheels[0].read_bytes() == before.wheels[0].read_bytes()  # unipipe's wheel did not change


def test_only_modules_in_the_search_path_are_packed(tmp_path):
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "cp_errors.py").write_text("class Flaky(Exception):\n    pass\n")
    ir, src, name, _ = _pipeline(tmp_path, package=True, extra_path=other)
    assert "cp_errors:Flaky" in ir.tasks[0].policies.retry.retry_on
    pkg = build_code_package(ir, [src], tmp_path / "out")
    code = [m for m in _members(pkg.code_wheel) if ".dist-info/" not in m]
    assert code == [f"{name}/__init__.py", f"{name}/tasks.py"]  # no cp_errors, builtins, bytecode
    # with the other folder in the search path, the exception's module is packed too
    both = build_code_package(ir, [src, other], tmp_path / "out2")
    assert "cp_errors.py" in _members(both.code_wheel)
    assert both.digest != pkg.digest


def test_a_task_module_nowhere_is_refused(tmp_path):
    ir, _, _, _ = _pipeline(tmp_path)
    with pytest.raises(PackageError, match="not in the search path"):
        build_code_package(ir, [tmp_path / "empty"], tmp_path / "out")


def test_the_package_installs_and_imports_without_the_checkout(tmp_path):
    ir, src, name, _ = _pipeline(tmp_path, package=True)
    pkg = build_code_package(ir, [src], tmp_path / "pkg", ["airflow"])
    target = tmp_path / "site"
    proc = subprocess.run(["uv", "pip", "install", "--python", sys.executable, "--target", str(target),
                           "--find-links", str(pkg.folder), *pkg.requirements],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    check = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(target)!r})
        import {name}.tasks as t, unipipe.runtime, unipipe_airflow
        assert t.__file__.startswith({str(target)!r}), t.__file__
        assert unipipe.runtime.__file__.startswith({str(target)!r}), unipipe.runtime.__file__
        assert not any(p.startswith({str(ROOT)!r}) for p in sys.path), sys.path
        print(t.double.fn(21))
        """)
    # -I: no PYTHONPATH, no user site, no cwd; -S: no site-packages (the checkout's .venv)
    run = subprocess.run([sys.executable, "-I", "-S", "-c", check], capture_output=True, text=True,
                         cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "42"


def test_written_wheels_are_byte_stable(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    one = write_wheel(tmp_path / "a", "unipipe-code-x", "0+abc", {"m.py": b"x = 1\n", "a/__init__.py": b""})
    two = write_wheel(tmp_path / "b", "unipipe-code-x", "0+abc", {"a/__init__.py": b"", "m.py": b"x = 1\n"})
    assert one.read_bytes() == two.read_bytes()
    assert one.name == "unipipe_code_x-0+abc-py3-none-any.whl"
