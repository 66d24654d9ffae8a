"""The shared store: URL checks, where the runtime puts things, what the compiler writes."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

import unipipe as up
from unipipe.cli import app
from unipipe.compiler.spec import task_spec
from unipipe.runtime import store as rt
from unipipe.store import StoreError, check_store_url, normalise, one_machine_note, with_store

FEATURES = "tests/pipelines/features.py"


@pytest.mark.parametrize("url, message", [
    ("bucket/prefix", "has no protocol"),
    ("s3://AKIA:secret@bucket/p", "holds credentials"),
    ("s3://bucket/p?token=abc", "query or fragment"),
    ("memory://x/y", "one process's memory"),
    ("nosuch://bucket/p", "unknown protocol 'nosuch'"),
    ("s3:///just-a-path", "names no bucket"),
    ("file://relative/path", "needs an absolute path"),
])
def test_a_store_url_that_cannot_be_shared_is_refused(url, message):
    with pytest.raises(StoreError, match=message):
        check_store_url(url)


def test_store_urls_are_normalised():
    assert normalise("s3://bucket/prefix/") == "s3://bucket/prefix"
    assert normalise("local") is None and normalise(None) is None
    assert normalise("/srv/shared") == "file:///srv/shared"
    assert check_store_url("gs://b/p") == "gs://b/p"


def test_the_store_is_compiled_into_every_task_spec_and_the_hash_is_unchanged_without_it():
    from tests.pipelines.features import cached

    ir = up.load(cached)
    assert "store" not in task_spec(ir, ir.tasks[0])
    shared = with_store(ir, "s3://bucket/runs")
    assert shared.store == "s3://bucket/runs"
    assert task_spec(shared, shared.tasks[0])["store"] == "s3://bucket/runs"
    assert shared.ir_hash() != ir.ir_hash()
    assert "store" not in ir.model_dump(mode="json") or ir.model_dump(mode="json")["store"] is None
    assert one_machine_note(ir) is not None and one_machine_note(shared) is None
    from unipipe.ir.features import Feature, features_used

    assert Feature.SHARED_STORE in features_used(shared)
    assert Feature.SHARED_STORE not in features_used(ir)


def test_runtime_roots_follow_the_compiled_store_and_explicit_variables_win(monkeypatch, tmp_path):
    for name in ("UNIPIPE_CACHE_URL", "UNIPIPE_ARTIFACT_URL", "UNIPIPE_STORE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    try:
        rt.use(None)
        assert rt.artifact_root() == str(tmp_path / "unipipe" / "artifacts")
        rt.use("s3://bucket/runs")
        assert (rt.artifact_root(), rt.cache_root(), rt.scratch_root()) == (
            "s3://bucket/runs/artifacts", "s3://bucket/runs/cache", "s3://bucket/runs/scratch")
        monkeypatch.setenv("UNIPIPE_STORE_URL", "gs://other/p")  # a worker's override
        assert rt.cache_root() == "gs://other/p/cache"
        monkeypatch.setenv("UNIPIPE_CACHE_URL", str(tmp_path / "c"))  # the specific one wins
        assert rt.cache_root() == str(tmp_path / "c")
        assert rt.artifact_root() == "gs://other/p/artifacts"
    finally:
        rt.use(None)


def test_a_local_run_keeps_artifacts_and_cache_in_the_store(tmp_path, monkeypatch):
    for name in ("UNIPIPE_CACHE_URL", "UNIPIPE_ARTIFACT_URL"):
        monkeypatch.delenv(name, raising=False)
    from tests.pipelines.features import cached

    store = tmp_path / "shared"
    first = up.run(cached, backend="local", store=store.as_uri())
    second = up.run(cached, backend="local", store=store.as_uri())
    assert first.tasks["expensive"].cache_hit is False
    assert second.tasks["expensive"].cache_hit is True
    assert len(list((store / "cache").glob("*.json"))) == 1


def test_compile_without_a_store_says_the_output_is_for_one_machine(tmp_path):
    result = CliRunner().invoke(app, ["compile", f"{FEATURES}:cached", "--target", "kubeflow",
                                      "--out", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    assert "this output is for one machine" in " ".join(result.output.split())
    shared = CliRunner().invoke(app, ["compile", f"{FEATURES}:cached", "--target", "kubeflow",
                                      "--out", str(tmp_path / "b"), "--store", "s3://b/p"])
    assert shared.exit_code == 0, shared.output
    assert "for one machine" not in shared.output
    module = (tmp_path / "b" / "kubeflow" / "cached_kfp.py").read_text()
    assert '"store": "s3://b/p"' in module


def test_cli_refuses_a_bad_store_on_run_and_conform_with_exit_2(tmp_path):
    run = CliRunner().invoke(app, ["run", f"{FEATURES}:cached", "--store", "memory://x/y"])
    assert run.exit_code == 2 and "--store:" in run.output
    iso = CliRunner().invoke(app, ["conform", f"{FEATURES}:cached", "--backends", "kubeflow",
                                   "--isolated", "--out", str(tmp_path / "o")])
    assert iso.exit_code == 2 and "--isolated needs --store URL" in iso.output
    lacking = CliRunner().invoke(app, ["conform", f"{FEATURES}:cached", "--backends", "airflow@2.11",
                                       "--isolated", "--store", "s3://b/p", "--out",
                                       str(tmp_path / "o")])
    assert lacking.exit_code == 2 and "airflow@2.11 cannot put each attempt in a sandbox" in \
        " ".join(lacking.output.split())
