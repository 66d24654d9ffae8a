"""Backends come from the `unipipe.backends` entry-point group, so third parties can add one;
unsupported features are refused before anything is written."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

from unipipe.compiler.diagnostics import (
    ErrorLevel,
    Support,
    UnsupportedFeature,
    UnsupportedFeatureWarning,
    check_features,
)
from unipipe.ir.features import Feature

ROOT = Path(__file__).resolve().parents[2]
FEATURES = ROOT / "tests" / "pipelines" / "features.py"

FAKE = '''
from pathlib import Path
from unipipe.compiler.backend import CompileResult
from unipipe.compiler.codegen import write_atomic
from unipipe.compiler.diagnostics import Support
from unipipe.ir.features import Feature


class Backend:
    name = "toy"
    versions = ("1",)

    def support(self, version=None):
        table = {f: Support.native() for f in Feature}
        table[Feature.RETRY] = Support.unsupported("toy engines never retry")
        table[Feature.CACHE] = Support.emulated("by the shim")
        return table

    def compile(self, ir, out_dir, options):
        path = write_atomic(Path(out_dir) / f"{ir.name}.toy", ir.name + "\\n")
        return CompileResult([path], [])

    def run(self, ir, options):
        raise NotImplementedError
'''


@pytest.fixture
def toy_backend(tmp_path):
    site = tmp_path / "site"
    (site / "toy_backend-1.0.dist-info").mkdir(parents=True)
    (site / "toy_backend-1.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-backend\nVersion: 1.0\n")
    (site / "toy_backend-1.0.dist-info" / "entry_points.txt").write_text(
        "[unipipe.backends]\ntoy = toy_backend:Backend\n")
    (site / "toy_backend.py").write_text(textwrap.dedent(FAKE))
    return site


def run_cli(site: Path, *args: str) -> subprocess.CompletedProcess:
    import os

    env = dict(os.environ, PYTHONPATH=str(site))
    return subprocess.run([sys.executable, "-m", "unipipe.cli", *args], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=120)


def test_third_party_backend_compiles_through_its_entry_point(toy_backend, tmp_path):
    out = tmp_path / "out"
    p = run_cli(toy_backend, "compile", f"{FEATURES}:cached", "--target", "toy", "--out", str(out))
    assert p.returncode == 0, p.stderr
    assert (out / "toy" / "cached.toy").read_text() == "cached\n"
    assert "cache: emulated by the unipipe runtime: by the shim" in p.stderr


def test_unsupported_feature_is_refused_and_nothing_is_written(toy_backend, tmp_path):
    out = tmp_path / "out"
    p = run_cli(toy_backend, "compile", f"{FEATURES}:retry_then_succeed", "--target", "toy", "--out", str(out))
    assert p.returncode == 2
    assert "retry: toy engines never retry" in p.stderr
    assert not out.exists()


def test_allow_unsupported_downgrades_to_a_warning(toy_backend, tmp_path):
    out = tmp_path / "out"
    p = run_cli(toy_backend, "compile", f"{FEATURES}:retry_then_succeed", "--target", "toy",
                "--out", str(out), "--allow-unsupported")
    assert p.returncode == 0, p.stderr
    assert (out / "toy" / "retry-then-succeed.toy").exists()
    assert "warning: toy: retry: toy engines never retry" in p.stderr


def test_check_features_levels():
    support = {Feature.RETRY: Support.unsupported("no"), Feature.CACHE: Support.emulated()}
    with pytest.raises(UnsupportedFeature) as info:
        check_features("x", support, [Feature.RETRY, Feature.CACHE])
    assert [d.feature for d in info.value.diagnostics] == [Feature.RETRY]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        diags = check_features("x", support, [Feature.RETRY, Feature.CACHE], ErrorLevel.WARN)
    assert [d.level for d in diags] == ["warning", "info"]
    assert caught and issubclass(caught[0].category, UnsupportedFeatureWarning)
    # an undeclared feature counts as unsupported: nothing is dropped silently
    with pytest.raises(UnsupportedFeature, match="not declared"):
        check_features("x", {}, [Feature.MAP])
