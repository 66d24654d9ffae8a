"""No literal secret-looking value in any golden file or generated output."""

from __future__ import annotations

from pathlib import Path

import pytest

from unipipe.compiler.driver import compile_ir
from unipipe.compiler.registry import compile_targets
from unipipe.compiler.secrets import scan_paths, scan_text

ROOT = Path(__file__).resolve().parents[2]


SHAPES = [
    ("url = 'https://hooks.slack.com/services/T0001/B0002/abcdefghijkl'", "slack webhook url"),
    ("key = 'AKIAIOSFODNN7EXAMPLE'", "aws access key id"),
    ("aws_secret_access_key = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY'", "aws secret key assignment"),
    ("SLACK = 'xoxb-1234567890-abcdefghij'", "slack token"),
    ("GH = 'ghp_" + "a1" * 18 + "'", "github token"),
    ("G = 'AIza" + "b" * 35 + "'", "google api key"),
    ("password = 'hunter2hunter2'", "password assignment"),
    ("conn = 'postgresql://user:s3cretpw@db:5432/x'", "credentials in url"),
    ("-----BEGIN RSA PRIVATE KEY-----", "private key block"),
    ("PREFECT_API_KEY = 'pnu_abcdefghijklmnopqrstuvwxyz0123456789'", "prefect api key"),
]


@pytest.mark.parametrize("text, kind", SHAPES)
def test_scanner_finds_secret_shapes(text, kind):
    assert [f.kind for f in scan_text(text)][:1] == [kind]


def test_every_pattern_has_a_shape_and_its_needles_stay_in_step():
    """The substring prefilter (NEEDLES) must never hide a match: every pattern has an example
    above, and an example of a kind with needles contains one of them, so a pattern changed
    without its needles (or added without an example) fails here."""
    from unipipe.compiler.secrets import NEEDLES, PATTERNS

    assert sorted(kind for _, kind in SHAPES) == sorted(PATTERNS)
    assert set(NEEDLES) <= set(PATTERNS)
    for text, kind in SHAPES:
        match = PATTERNS[kind].search(text)
        assert match is not None, kind
        if kind in NEEDLES:
            assert any(n in match.group(0) for n in NEEDLES[kind]), (kind, match.group(0))


def test_scanner_accepts_references():
    text = "webhook='env:ALERT_WEBHOOK_URL' conn='airflow-conn:slack' block='prefect-block:hook'"
    assert scan_text(text) == []


def test_golden_files_hold_no_secrets():
    golden = [p for p in (ROOT / "comparisons" / "golden").rglob("*") if p.is_file()]
    assert scan_paths(golden) == []


@pytest.mark.parametrize("target", compile_targets())
def test_generated_outputs_hold_no_secrets(target, tmp_path):
    import sys

    sys.path.insert(0, str(ROOT / "examples"))
    from ml_training import training
    from pipelines import features, hostile

    for i, pipe in enumerate([training, features.retries_exhausted, features.success_alert,
                              hostile.hostile]):
        result = compile_ir(pipe.ir, target, tmp_path / str(i), error_level="warn")
        assert result.paths
        assert scan_paths(result.paths) == []
        assert not [d for d in result.diagnostics if "secret-looking" in d.message]
