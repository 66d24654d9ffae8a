"""What an attempt pays to import a task's module (issue 16): inside a task process (an Airflow
task runner, a KFP component, a Prefect forked child) the runtime imports the user's module in
execution mode, and ``import unipipe as up`` + ``@up.task`` / ``@up.pipeline`` must load only
the decorators, not what compiling needs (pydantic, libcst, the policies, the IR). Asserted on
``sys.modules`` in a fresh interpreter, never on time (figures: comparisons/perf/shim_engines.md).
The same module then loaded for compiling gives the IR a normal import gives."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import unipipe as up

_TASKS = '''
import unipipe as up


@up.task
def step(x: int) -> int:
    return x + 1


@up.task(retries=2, timeout="5m", run_if="all_done", packages=["requests==2.32.3"])
def tidy(x: int) -> int:
    """Cleans up."""
    return x


@up.pipeline(name="cheap", schedule="6h", retries=1, retry_delay="10s")
def cheap(x: int = 1):
    tidy(x).after(step(x))
'''

_BAD = '''
import unipipe as up


@up.task(run_if="sometimes")
def odd(x: int) -> int:
    return x


@up.task
async def later(x: int) -> int:
    return x


@up.pipeline(name="odd")
def odd_pipe(x: int = 1):
    odd(x)


@up.pipeline(name="later")
def later_pipe(x: int = 1):
    later(x)
'''

#: what importing a task module may add to an attempt's process, of unipipe's own modules (the
#: runtime's importer, then what ``@up.task`` needs)
ALLOWED = {"unipipe.runtime.loading", "unipipe.authoring", "unipipe.authoring.base",
           "unipipe.authoring.decorators"}
#: never on the execution path (they load for compiling only)
HEAVY = ("pydantic", "pydantic_core", "libcst", "typing_extensions", "typing", "hashlib",
         "pathlib", "datetime", "textwrap", "unipipe.ir.models", "unipipe.authoring.policies",
         "unipipe.authoring.events", "unipipe.result", "unipipe.ir.errors")


def _fresh(tmp_path, body: str) -> dict:
    (tmp_path / "cheap_tasks.py").write_text(_TASKS)
    (tmp_path / "odd_tasks.py").write_text(_BAD)
    code = ("import json, sys\n"
            "import unipipe.runtime.invoke\n"
            "before = set(sys.modules)\n"
            "from unipipe.runtime.invoke import resolve_callable\n"
            "out = {'value': resolve_callable('cheap_tasks:step')(41)}\n"
            "resolve_callable('cheap_tasks:tidy')\n"
            "out['odd'] = resolve_callable('odd_tasks:odd')(3)\n"
            "out['new'] = sorted(set(sys.modules) - before)\n" + body
            + "\nprint(json.dumps(out))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path)},
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_a_task_module_imported_in_an_attempt_loads_only_the_decorators(tmp_path):
    out = _fresh(tmp_path, "")
    assert out["value"] == 42 and out["odd"] == 3
    new = set(out["new"])
    assert {m for m in new if m.startswith("unipipe")} == ALLOWED
    assert {"cheap_tasks", "odd_tasks"} <= new
    assert [m for m in HEAVY if m in new] == []


def _ir(pipeline) -> dict:
    return up.load(pipeline).model_dump(
        mode="json", exclude={"location": True, "tasks": {"__all__": {"location"}}})


def test_the_module_then_loaded_for_compiling_gives_the_same_ir_and_errors(tmp_path):
    out = _fresh(tmp_path, (
        "import unipipe as up, cheap_tasks, odd_tasks\n"
        "out['ir'] = up.load(cheap_tasks.cheap).model_dump(mode='json', exclude={'location': "
        "True, 'tasks': {'__all__': {'location'}}})\n"
        "out['errors'] = []\n"
        "for p in (odd_tasks.odd_pipe, odd_tasks.later_pipe):\n"
        "    try:\n"
        "        up.load(p)\n"
        "    except up.PipelineError as exc:\n"
        "        out['errors'].append(str(exc))\n"))
    sys.path.insert(0, str(tmp_path))
    try:
        import cheap_tasks  # authored normally: every check at import

        expected = _ir(cheap_tasks.cheap)
        with pytest.raises(up.PipelineError) as eager:
            import odd_tasks  # noqa: F401
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("cheap_tasks", None)
        sys.modules.pop("odd_tasks", None)
    assert out["ir"] == expected
    tidy = next(t for t in expected["tasks"] if t["id"] == "tidy")
    assert tidy["run_if"] == "all_done" and tidy["packages"] == ["requests==2.32.3"]
    assert tidy["policies"]["timeout"] == 300.0 and tidy["doc"] == "Cleans up."
    assert expected["schedule"]["interval"] == 21600.0 and expected["retry_delay"] == 10.0
    # the deferred checks fail at the decorator's line, with the eager import's message
    assert out["errors"][0] == str(eager.value)
    assert "odd_tasks.py:5: [run_if]" in out["errors"][0]
    assert "odd_tasks.py:10: [task] async tasks are not supported" in out["errors"][1]
