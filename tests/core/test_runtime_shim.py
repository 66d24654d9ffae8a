"""The in-task shim stays small: no pydantic, no libcst, no fsspec on import."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import unipipe as up
from unipipe.runtime import store
from unipipe.runtime.invoke import invoke


def test_importing_the_runtime_pulls_in_nothing_heavy():
    code = ("import sys, unipipe.runtime; "
            "print([m for m in ('pydantic', 'libcst', 'fsspec', 'typer', 'rich', 'black') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.replace("'", '"')) == []


def test_small_values_pass_inline_and_large_ones_through_the_artifact_store():
    assert store.to_transport({"a": 1}) == {"a": 1}
    big = list(range(50_000))
    pointer = store.to_transport(big)
    assert set(pointer) == {store.ARTIFACT_KEY, "format"} and pointer["format"] == "json"
    assert store.from_transport(pointer) == big
    obj = pointer_obj = store.to_transport({1, 2, 3})
    assert pointer_obj["format"] == "pickle" and store.from_transport(obj) == {1, 2, 3}


def test_artifacts_are_content_addressed_so_equal_values_share_one_pointer():
    big = {"rows": list(range(30_000))}
    first, again = store.to_transport(big), store.to_transport(dict(big))
    assert first == again  # same value, same pointer: engines' input-hash caches hit across runs
    other = store.to_transport({"rows": list(range(30_001))})
    assert other[store.ARTIFACT_KEY] != first[store.ARTIFACT_KEY]
    url = first[store.ARTIFACT_KEY]
    assert "/sha256/" in url and url.endswith(".json")
    assert store.from_transport(first) == big


def test_key_paths_select_and_explain_failures():
    assert store.select({"a": [1, {"b": 2}]}, ["a", 1, "b"]) == 2
    with pytest.raises(KeyError, match="cannot select 'z'"):
        store.select({"a": 1}, ["z"])


def test_invoke_marks_non_retryable_errors():
    from pipelines import features as f

    ir = f.non_retryable.ir
    from unipipe.compiler.spec import task_spec

    spec = task_spec(ir, ir.task("bad_value"))
    with pytest.raises(ValueError) as info:
        invoke(spec, {}, run_id="r1", attempt=1, backend="test")
    assert info.value.__unipipe_retryable__ is False


def test_current_is_only_available_inside_a_task():
    with pytest.raises(RuntimeError, match="only available while a unipipe task runs"):
        up.current()


def test_task_called_outside_a_pipeline_is_a_plain_function():
    from pipelines import features as f

    assert f.square(7) == 49
    assert f.describe([1, 5], "x") == {"label": "x", "count": 2, "max": 5}


_TASK_MODULE = '''
import unipipe as up


def key(inputs):
    return "k"


@up.task(retry=up.Retry(max_retries=2, delay="1s", backoff=2.0), cache=up.Cache(key_fn=key),
         timeout="5m", alerts=[up.Alert(on="failure", webhook="env:HOOK")])
def step(x: int) -> int:
    return x + 1


@up.task(retries=-1)
def broken(x: int) -> int:
    return x


@up.pipeline(name="lazy", schedule="*/5 * * * *", defaults=up.Defaults(retries=1))
def lazy(x: int = 1):
    return step(x)


@up.pipeline(name="bad")
def bad(x: int = 1):
    return broken(x)
'''


def _in_fresh_process(tmp_path, body: str) -> dict:
    (tmp_path / "lazy_tasks.py").write_text(_TASK_MODULE)
    code = ("import json, sys\n"
            "from unipipe.runtime.invoke import resolve_callable\n"
            "fn = resolve_callable('lazy_tasks:step')\n"
            "out = {'value': fn(41), 'heavy': [m for m in ('pydantic', 'croniter', 'libcst') "
            "if m in sys.modules]}\n" + body + "\nprint(json.dumps(out))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, env={**__import__("os").environ, "PYTHONPATH": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_a_task_module_imported_by_the_runtime_builds_no_ir(tmp_path):
    """In a task process the runtime imports the user's module in execution mode: decorators only
    wrap (the pipeline was checked when compiled), so an attempt does not pay for pydantic."""
    out = _in_fresh_process(tmp_path, "")
    assert out == {"value": 42, "heavy": []}


def test_a_module_imported_in_execution_mode_still_traces_to_the_same_ir(tmp_path):
    out = _in_fresh_process(tmp_path, (
        "import unipipe as up, lazy_tasks\n"
        "out['ir'] = up.load(lazy_tasks.lazy).model_dump(mode='json', exclude={'location': True, 'tasks': {'__all__': {'location'}}})\n"
        "try:\n"
        "    up.load(lazy_tasks.bad)\n"
        "except up.PipelineError as exc:\n"
        "    out['error'] = str(exc)\n"))
    # the same module authored normally: the bad decorator fails at import, at its line
    sys.path.insert(0, str(tmp_path))
    try:
        with pytest.raises(up.PipelineError, match=r"lazy_tasks.py:15: \[retries\]"):
            import lazy_tasks  # noqa: F401
        sys.modules.pop("lazy_tasks", None)
        good = _TASK_MODULE[:_TASK_MODULE.index("@up.task(retries=-1)")]
        (tmp_path / "lazy_ok.py").write_text(good + _TASK_MODULE[_TASK_MODULE.index(
            "@up.pipeline(name=\"lazy\""):_TASK_MODULE.index("@up.pipeline(name=\"bad\")")])
        import lazy_ok

        expected = json.loads(json.dumps(up.load(lazy_ok.lazy).model_dump(
            mode="json", exclude={"location": True, "tasks": {"__all__": {"location"}}}))
            .replace("lazy_ok", "lazy_tasks"))
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("lazy_tasks", None)
        sys.modules.pop("lazy_ok", None)
    assert out["ir"] == expected
    assert out["ir"]["tasks"][0]["policies"]["retry"]["delay"] == 1.0
    assert out["ir"]["schedule"]["cron"] == "*/5 * * * *"
    # the deferred check names the decorator's file, line and field, as the eager one does
    assert "lazy_tasks.py:15: [retries]" in out["error"]


def test_threads_importing_one_task_module_all_get_the_finished_module(tmp_path, monkeypatch):
    """Prefect runs map elements in threads: each resolves the task while another may be halfway
    through importing its module; all must wait for the import and get the function."""
    import threading

    from unipipe.runtime.loading import import_object

    (tmp_path / "slow_tasks.py").write_text(
        "import time\nimport unipipe as up\ntime.sleep(0.3)\n\n\n"
        "@up.task\ndef late(x: int) -> int:\n    return x * 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    results: list[object] = []

    def resolve() -> None:
        try:
            results.append(import_object("slow_tasks:late").fn(2))
        except Exception as exc:  # noqa: BLE001 - recorded for the assertion
            results.append(exc)

    threads = [threading.Thread(target=resolve) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.modules.pop("slow_tasks", None)
    assert results == [6, 6, 6, 6]


def test_a_forked_attempt_does_not_walk_the_parents_objects():
    """forking.fork freezes the parent's objects: a collection in the child sees only its own,
    and the parent's collector is back to normal after the fork."""
    import gc
    import os

    from unipipe.runtime import forking

    ballast = [[i] for i in range(50_000)]  # tracked objects the child must not walk
    read, write = os.pipe()
    pid = forking.fork()
    if pid == 0:
        os.close(read)
        os.write(write, str(len(gc.get_objects())).encode())
        os._exit(0)
    os.close(write)
    child_tracked = int(os.read(read, 64))
    os.close(read)
    os.waitpid(pid, 0)
    assert gc.get_freeze_count() == 0
    assert len(gc.get_objects()) > len(ballast) > child_tracked
