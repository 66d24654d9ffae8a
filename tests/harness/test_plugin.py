"""The pytest plugin as a user meets it: in their own repo, through the pytest11 entry point."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap

import pytest

from .conftest import CASES

PIPES = '''
import unipipe as up


@up.task(retry=up.Retry(max_retries=2, delay="0.2s"))
def flaky(fail_times: int) -> str:
    if up.current().attempt <= fail_times:
        raise ConnectionError("not yet")
    return f"ok at {up.current().attempt}"


@up.pipeline(name="user-pipe")
def pipe(fail_times: int = 1):
    return flaky(fail_times)
'''

USER_TEST = '''
import mypipes


def test_portable(conform):
    suite = conform("mypipes:pipe", backends=["local"], params={"fail_times": 2})
    run = suite.outcome("user_pipe", "local").runs[0]
    assert run["tasks"]["flaky"]["attempts"] == 3
    assert run["output"] == "ok at 3"


def test_pipeline_object(conform):
    suite = conform(mypipes.pipe)
    assert suite.ok and suite.backends == ["local"]
'''


def _pytest(cwd, *args):
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           *args], cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.mark.timeout(600)
def test_the_conform_fixture_in_a_user_repo(tmp_path):
    (tmp_path / "mypipes.py").write_text(PIPES)
    (tmp_path / "test_user.py").write_text(textwrap.dedent(USER_TEST))
    proc = _pytest(tmp_path, "test_user.py")
    assert "2 passed" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-2000:]


@pytest.mark.timeout(600)
def test_case_files_are_collected_one_item_per_backend(tmp_path):
    shutil.copytree(CASES / "retry_fail_twice", tmp_path / "cases" / "retry_fail_twice")
    broken = tmp_path / "cases" / "map_literal"
    shutil.copytree(CASES / "map_literal", broken)
    text = (broken / "case.yaml").read_text()
    (broken / "case.yaml").write_text(text.replace("output: [30, 10, 20]\n  tasks",
                                                   "output: [10, 20, 30]\n  tasks"))
    proc = _pytest(tmp_path, "cases", "--unipipe-backends", "local", "-rf",
                   f"--basetemp={tmp_path / 'basetemp'}")
    assert "1 failed, 1 passed" in proc.stdout, proc.stdout[-3000:]
    # each case's runs and reports live in pytest's own temp folder, which pytest prunes
    runs = sorted(p.parent.name for p in (tmp_path / "basetemp").glob("unipipe-case[0-9]*/*/"))
    assert runs == ["unipipe-case0", "unipipe-case1"]
    assert "map_literal on local: fail: run 1: output is [30, 10, 20], expected [10, 20, 30]" \
        in proc.stdout
