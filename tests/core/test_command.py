"""Command tasks (``up.command``): argv without a shell, output, failure, the process group, and
every bad input named by file, line and field."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from pipelines.usermodule import line_of as _line
from pipelines.usermodule import user_module

import unipipe as up
from unipipe.authoring.loader import load_ir
from unipipe.compiler.spec import task_spec
from unipipe.ir import PipelineError, load_ir_data
from unipipe.ir.features import Feature, features_used
from unipipe.local.runner import LocalRunner
from unipipe.runtime import retry as retry_rules
from unipipe.runtime.command import (
    CommandFailed,
    PlaceholderError,
    parse_output,
    placeholders,
    render,
    run,
)
from unipipe.runtime.invoke import TaskTimeout, run_attempt

ROOT = Path(__file__).resolve().parents[2]
HOSTILE = "x; touch pwned # $(touch pwned) `touch pwned` && touch pwned | touch pwned"
ARGV_JSON = "import json, sys; print(json.dumps(sys.argv[1:]))"


# ---------------------------------------------------------------- placeholders and argv


def test_placeholders_are_plain_names_and_double_braces_are_literal():
    assert placeholders("--x={x}-{y}/{x}") == ["x", "y", "x"]
    assert placeholders("{{not}} {{{x}}}") == ["x"]
    assert render(["{{a}}", "{{{x}}}"], {"x": 1}) == ["{a}", "{1}"]


@pytest.mark.parametrize("item", ["{x.attr}", "{x[0]}", "{x!r}", "{x:>4}", "{}", "{0}", "a{", "b}",
                                  "{ x }", "{é}"])
def test_anything_but_a_plain_placeholder_is_refused(item):
    with pytest.raises(PlaceholderError):
        placeholders(item)


def test_values_fill_one_item_each_strings_as_they_are_others_as_json():
    argv = render(["prog", "--who={who}", "{n}", "{flag}", "{none}", "{items}", "{conf}"],
                  {"who": HOSTILE, "n": 3, "flag": True, "none": None, "items": ["a", 1],
                   "conf": {"k": "v"}})
    assert argv == ["prog", f"--who={HOSTILE}", "3", "true", "null", '["a", 1]', '{"k": "v"}']


def test_output_is_the_last_non_blank_line_as_json_else_text():
    assert parse_output("log\n{\"a\": [1, 2]}\n\n") == {"a": [1, 2]}
    assert parse_output("log\n42\n") == 42
    assert parse_output("a\nplain text, not json\n") == "plain text, not json"
    assert parse_output("NaN\n") == "NaN"  # not a value a task output can carry
    assert parse_output("") is None
    assert parse_output("\n  \n") is None


# ---------------------------------------------------------------- running


def test_a_hostile_value_stays_one_argument_and_no_shell_runs_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = run(["python3", "-c", ARGV_JSON, "{who}", "--who={who}"], {"who": HOSTILE})
    assert out == [HOSTILE, f"--who={HOSTILE}"]
    assert list(tmp_path.iterdir()) == []


def test_env_is_set_over_the_workers_environment(monkeypatch):
    monkeypatch.setenv("UNIPIPE_TEST_INHERITED", "yes")
    code = "import json, os; print(json.dumps([os.environ['MODE'], os.environ['UNIPIPE_TEST_INHERITED']]))"
    assert run(["python3", "-c", code], {}, env={"MODE": "a b"}) == ["a b", "yes"]


def test_a_nonzero_exit_is_a_retryable_failure_with_the_tail_of_stderr(capfd):
    code = "import sys; print('out'); sys.stderr.write('x' * 5000 + 'the reason'); sys.exit(3)"
    with pytest.raises(CommandFailed) as info:
        run(["python3", "-c", code], {})
    err = info.value
    assert err.returncode == 3
    assert str(err).startswith("command 'python3' exited with code 3: ")
    assert str(err).endswith("the reason") and len(err.stderr) == 2000
    assert retry_rules.is_retryable(err, {"max_retries": 2})
    assert "out" in capfd.readouterr().out  # what it printed reaches the task's log


def test_a_program_that_does_not_exist_fails_the_attempt():
    with pytest.raises(CommandFailed, match="could not start"):
        run(["unipipe-no-such-program-x"], {})
    with pytest.raises(CommandFailed, match="could not start"):  # no argv item can hold NUL
        run(["python3", "{v}"], {"v": "a\x00b"})


def test_the_attempt_facts_reach_the_program_as_environment_variables():
    spec = {"pipeline": "p", "id": "t", "fn": "unipipe.runtime.command:run",
            "command": ["python3", "-c", "import json, os; print(json.dumps({{k: v for k, v in "
                        "os.environ.items() if k.startswith('UNIPIPE_')}}))"],  # {{ }}: braces
            "retry": {"max_retries": 4}}
    value, hit = run_attempt(spec, {}, run_id="r1", attempt=2, backend="local")
    assert not hit
    facts = {"UNIPIPE_RUN_ID": "r1", "UNIPIPE_PIPELINE": "p", "UNIPIPE_TASK_ID": "t",
             "UNIPIPE_ATTEMPT": "2", "UNIPIPE_MAX_ATTEMPTS": "5", "UNIPIPE_BACKEND": "local"}
    assert {k: value.get(k) for k in facts} == facts
    assert "UNIPIPE_MAP_INDEX" not in value  # set for mapped elements only


# ---------------------------------------------------------------- the process group

_GROUP = textwrap.dedent("""
    import os, subprocess, sys, time
    child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
    with open(sys.argv[1], 'w') as f:
        f.write('%d %d' % (os.getpid(), child.pid))
    time.sleep(60)
""")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[-1][:1]
    except OSError:
        return False
    return state != "Z"


def _wait_pids(path: Path) -> list[int]:
    deadline = time.time() + 20
    while time.time() < deadline:
        if path.exists() and len(path.read_text().split()) == 2:
            return [int(p) for p in path.read_text().split()]
        time.sleep(0.02)
    raise AssertionError("the command never wrote its pids")


def _all_gone(pids: list[int], within: float = 5.0) -> bool:
    deadline = time.time() + within
    while time.time() < deadline:
        if not any(_alive(p) for p in pids):
            return True
        time.sleep(0.02)
    for p in pids:  # do not leave them behind if the test fails
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass
    return False


def test_the_shims_timeout_kills_the_whole_process_group(tmp_path):
    pidfile = tmp_path / "pids"
    spec = {"pipeline": "p", "id": "hang", "fn": "unipipe.runtime.command:run",
            "command": ["python3", "-c", _GROUP, "{path}"], "timeout": 1.0}
    start = time.time()
    with pytest.raises(TaskTimeout):
        run_attempt(spec, {"path": str(pidfile)}, run_id="r", attempt=1, backend="local",
                    emulate={"timeout"})
    assert time.time() - start < 10
    assert _all_gone(_wait_pids(pidfile), within=0.5)  # killed before the error was raised


def test_killing_the_attempts_process_kills_the_commands_group(tmp_path):
    """What the runners do on a timeout (SIGKILL the attempt's process): the reaper sees the
    attempt go and kills the group the command runs in, its child included."""
    pidfile = tmp_path / "pids"
    code = ("import sys; from unipipe.runtime.command import run; "
            f"run(['python3', '-c', {_GROUP!r}, sys.argv[1]], {{}})")
    attempt = subprocess.Popen([sys.executable, "-c", code, str(pidfile)])
    pids = _wait_pids(pidfile)
    assert all(_alive(p) for p in pids)
    attempt.kill()
    attempt.wait()
    assert _all_gone(pids)


def test_what_a_command_leaves_running_does_not_outlive_its_attempt(tmp_path):
    pidfile = tmp_path / "pid"
    code = ("import subprocess, sys; c = subprocess.Popen([sys.executable, '-c', "
            "'import time; time.sleep(60)']); open(sys.argv[1], 'w').write(str(c.pid)); print('done')")
    assert run(["python3", "-c", code, str(pidfile)], {}) == "done"
    assert _all_gone([int(pidfile.read_text())])


# ---------------------------------------------------------------- authoring and the IR

def _module(tmp_path: Path, body: str) -> Path:
    return user_module(tmp_path, body, prefix="cmdpipe")


def _problems(tmp_path: Path, body: str) -> tuple[Path, list]:
    path = _module(tmp_path, body)
    with pytest.raises(PipelineError) as info:
        load_ir(f"{path}:p")
    return path, info.value.problems


def test_a_command_task_is_a_task_with_an_argv_and_a_hash_of_it(tmp_path):
    path = _module(tmp_path, """
        emit = up.command("emit", command=["prog", "--n={n}", "{who}"], env={"A": "1"},
                          retries=2, timeout="5s", image="python:3.11-slim")

        @up.task
        def use(v: dict) -> int:
            return 1

        @up.pipeline(name="p")
        def p(n: int = 1):
            r = emit(n=n, who="lit")
            return use(r)
    """)
    ir = load_ir(f"{path}:p")
    task = ir.task("emit")
    assert task.command == ("prog", "--n={n}", "{who}") and task.env == {"A": "1"}
    assert task.fn == "unipipe.runtime.command:run"
    assert task.policies.retry.max_retries == 2 and task.policies.timeout == 5.0
    assert task.policies.image == "python:3.11-slim"
    assert task.location.line == _line(path, "r = emit(")
    assert Feature.COMMAND in features_used(ir) and Feature.IMAGE in features_used(ir)
    spec = task_spec(ir, task)
    assert spec["command"] == ["prog", "--n={n}", "{who}"] and spec["env"] == {"A": "1"}
    assert spec["literals"] == {"who": "lit"}
    assert "command" not in task_spec(ir, ir.task("use"))
    assert load_ir_data(json.loads(ir.to_json())).model_dump() == ir.model_dump()


def test_the_command_hash_changes_with_the_command_and_python_tasks_hash_as_before(tmp_path):
    from unipipe.authoring.commands import command_hash

    assert command_hash(["a", "{x}"], {}) != command_hash(["a", "{y}"], {})
    assert command_hash(["a"], {}) != command_hash(["a"], {"E": "1"})
    from unipipe.ir import models as m

    t = m.Task(id="t", fn="mod:t", source_hash="a" * 64)
    data = m.Pipeline(name="x", tasks=(t,)).model_dump(mode="json")
    assert data["tasks"][0]["command"] is None
    # the golden files of Python-only pipelines keep their IR hash (tests/*/..golden..), and:
    assert "command" not in json.dumps({k: v for k, v in data["tasks"][0].items()
                                        if v not in (None, {})})


@pytest.mark.parametrize(("call", "field", "words"), [
    ('up.command("t", command="echo {x}")', "command", "list of strings"),
    ('up.command("t", command=[])', "command", "at least the program"),
    ('up.command("t", command=["echo", 3])', "command[1]", "each argument is a string"),
    ('up.command("t", command=["", "x"])', "command[0]", "empty"),
    ('up.command("t", command=["echo", "{x!r}"])', "command[1]", "not a placeholder"),
    ('up.command("t", command=["echo"], env={"A": 1})', "env.A", "strings"),
    ('up.command("t", command=["echo", "a\\x00b"])', "command[1]", "NUL"),
    ('up.command("t", command=["echo"], env={"A-B": "1"})', "env.A-B", "variable name"),
    ('up.command("t", command=["echo"], env=["A"])', "env", "dict"),
    ('up.command("bad name", command=["echo"])', "name", "identifier"),
    ('up.command("t", command=["echo"], timeout="soon")', "timeout", ""),
])
def test_a_bad_command_definition_names_its_line_and_field(tmp_path, call, field, words):
    path, probs = _problems(tmp_path, f"""
        t = {call}

        @up.pipeline(name="p")
        def p():
            return t()
    """)
    assert [(p.file, p.line, p.field) for p in probs][:1] == [(str(path), _line(path, "t = up."), field)]
    assert words in probs[0].message


def test_placeholders_without_inputs_and_unused_inputs_are_all_reported_at_the_call(tmp_path):
    path, probs = _problems(tmp_path, """
        t = up.command("t", command=["prog", "--a={a}", "{b}", "{a}"])

        @up.pipeline(name="p")
        def p(x: int = 1):
            return t(a=x, typo=2)
    """)
    line = _line(path, "return t(")
    assert sorted((p.line, p.field) for p in probs) == [
        (line, "tasks.t.command[2]"), (line, "tasks.t.inputs.typo")]
    by_field = {p.field: p.message for p in probs}
    assert "placeholder {b} has no input: pass b=..." in by_field["tasks.t.command[2]"]
    assert "'typo' is used by no placeholder" in by_field["tasks.t.inputs.typo"]


def test_positional_inputs_are_refused(tmp_path):
    path, probs = _problems(tmp_path, """
        t = up.command("t", command=["prog", "{a}"])

        @up.pipeline(name="p")
        def p():
            return t(1)
    """)
    assert [(p.line, p.field) for p in probs] == [(_line(path, "return t("), "t")]
    assert "keyword inputs only" in probs[0].message and "t(a=...)" in probs[0].message


def test_an_ir_document_with_a_bad_command_task_is_refused_with_every_problem():
    doc = {"name": "p", "tasks": [
        {"id": "c", "fn": "mod:c", "source_hash": "a" * 64, "command": ["prog", "{x}"],
         "inputs": {}},
        {"id": "py", "fn": "mod:py", "source_hash": "a" * 64, "env": {"A": "1"}},
        {"id": "e", "fn": "unipipe.runtime.command:run", "source_hash": "a" * 64, "command": []},
    ]}
    from unipipe.ir.validate import validate

    with pytest.raises(PipelineError) as info:
        validate(load_ir_data(doc))
    assert sorted(p.field for p in info.value.problems) == [
        "tasks.c.command[1]", "tasks.c.fn", "tasks.e.command", "tasks.py.env"]


def test_validate_exits_2_naming_file_line_and_field_and_compile_writes_nothing(tmp_path):
    path = _module(tmp_path, """
        t = up.command("t", command=["prog", "{missing}"])

        @up.pipeline(name="p")
        def p():
            return t()
    """)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.run([sys.executable, "-m", "unipipe.cli", "validate", f"{path}:p"],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert p.returncode == 2
    text = p.stderr.replace("\n", "")
    assert f"{path}:{_line(path, 'return t(')}" in text and "[tasks.t.command[1]]" in text
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, "-m", "unipipe.cli", "compile", f"{path}:p", "--target",
                        "local", "--out", str(out)], capture_output=True, text=True, env=env,
                       cwd=tmp_path, timeout=120)
    assert p.returncode == 2 and not out.exists()


def test_called_outside_a_pipeline_a_command_runs_here():
    echo = up.command("echo", command=["python3", "-c", ARGV_JSON, "{a}", "{b}"])
    assert echo(a="x y", b=[1]) == ["x y", "[1]"]


# ---------------------------------------------------------------- the reference runner


def test_the_reference_runner_retries_a_failing_command_and_maps_over_one(tmp_path):
    path = _module(tmp_path, """
        flaky = up.command("flaky", command=["python3", "-c",
            "import os, sys; a = int(os.environ['UNIPIPE_ATTEMPT']); "
            "sys.exit(1) if a < 3 else print(a * int(sys.argv[1]))", "{k}"], retries=3)
        each = up.command("each", command=["python3", "-c",
            "import sys, os; print(sys.argv[1] + '@' + os.environ['UNIPIPE_MAP_INDEX'])", "{item}"])

        @up.pipeline(name="p")
        def p(k: int = 5):
            return {"flaky": flaky(k=k), "each": each.map(item=["a b", "c"])}
    """)
    result = LocalRunner(sleep=lambda s: None).run(load_ir(f"{path}:p"))
    assert result.state == "success"
    assert result.output == {"flaky": 15, "each": ["a b@0", "c@1"]}
    assert result.tasks["flaky"].attempts == 3
    assert result.tasks["each"].state == "success"


def test_a_cached_command_hits_on_the_second_run(tmp_path):
    marker = tmp_path / "runs"
    path = _module(tmp_path, f"""
        count = up.command("count", command=["python3", "-c",
            "import sys; open(sys.argv[2], 'a').write('x'); print(len(sys.argv[1]))",
            "{{text}}", {str(marker)!r}], cache=True)

        @up.pipeline(name="p")
        def p(text: str = "abc"):
            return count(text=text)
    """)
    ir = load_ir(f"{path}:p")
    first, second = (LocalRunner().run(ir) for _ in range(2))
    assert (first.output, second.output) == (3, 3)
    assert (first.tasks["count"].cache_hit, second.tasks["count"].cache_hit) == (False, True)
    assert marker.read_text() == "x"  # the program ran once
    third = LocalRunner().run(ir, {"text": "abcd"})
    assert third.output == 4 and not third.tasks["count"].cache_hit


def test_deploys_ship_no_part_of_unipipe_as_user_code(tmp_path):
    from unipipe.deploy.bundle import module_files, task_modules

    path = _module(tmp_path, """
        emit = up.command("emit", command=["prog", "{n}"])

        @up.task
        def use(v: int) -> int:
            return v

        @up.pipeline(name="p")
        def p(n: int = 1):
            return use(emit(n=n))
    """)
    ir = load_ir(f"{path}:p")
    assert task_modules(ir) == [path.stem]
    assert [f.relpath for f in module_files(ir)] == [path.name]
