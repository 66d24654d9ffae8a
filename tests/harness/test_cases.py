"""The conformance cases as data: complete, tagged truthfully, strict about their declarations."""

from __future__ import annotations

from pathlib import Path

import pytest

from unipipe.harness.cases import CaseError, check_tags, discover, load_case
from unipipe.ir.features import Feature

ROOT = Path(__file__).resolve().parents[2]
CASES = ROOT / "comparisons" / "cases"
ALL = discover([CASES])


def test_there_are_at_least_25_cases_with_unique_ids():
    ids = [c.id for c in ALL]
    assert len(ids) >= 25
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize("case", ALL, ids=[c.id for c in ALL])
def test_case_tags_equal_features_used(case):
    assert check_tags(case) == []


def test_every_ir_feature_is_covered_by_a_case():
    covered = {t for c in ALL for t in c.tags}
    assert [f.value for f in Feature if f.value not in covered] == []


def test_required_tier_holds_the_seed_scenarios_and_the_faults():
    required = {c.id for c in ALL if c.required}
    assert {
        "ml_training_flaky",  # training fails twice then succeeds
        "retries_exhausted_one_alert",  # retries exhausted, then exactly one alert
        "cached_feature_engineering",  # cached feature engineering re-run
        "quality_gate_skips",  # quality gate that skips registration
        "map_shard_retry",  # per-shard fan-out
        "checkpoint_resume",  # checkpoint resume across retries
        "retry_fail_twice",  # fault: fail k times then succeed
        "non_retryable_fail_on",  # fault: non-retryable error
        "timeout_hang",  # fault: hang past the timeout
        "sigkill_mid_attempt",  # fault: process killed mid-attempt
        "bad_param_value",  # fault: bad parameter value
    } <= required
    by_id = {c.id: c for c in ALL}
    assert by_id["retries_exhausted_one_alert"].expect.state == "failed"  # always fail
    assert by_id["bad_param_value"].expect.refused is True
    assert all(not by_id[i].backends for i in required)


def test_cached_cases_expect_hits_on_their_second_run():
    by_id = {c.id: c for c in ALL}
    second = by_id["cached_feature_engineering"].second_run
    assert second is not None
    assert second.expect.tasks["compute_features"]["cache_hit"] is True
    assert second.expect.tasks["train_model"]["cache_hit"] is False
    assert by_id["cache_expired"].second_run.wait > 2  # longer than the 2s expiry


def _write_case(folder: Path, extra: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "case.yaml").write_text(
        f"id: {folder.name}\ndoc: d\npipeline: p.py:pipe\nexpect: {{state: success}}\n{extra}")
    return folder


def test_a_required_case_cannot_declare_a_difference(tmp_path):
    folder = _write_case(tmp_path / "c1", "required: true\nbackends:\n"
                         "  airflow: {status: notyet, reason: engine lacks it}\n")
    with pytest.raises(CaseError, match="required case cannot declare"):
        load_case(folder)


def test_a_declaration_needs_a_known_status_and_a_reason(tmp_path):
    bad = _write_case(tmp_path / "c2", "backends:\n  airflow: {status: skip, reason: x}\n")
    with pytest.raises(CaseError, match=r"c2/case.yaml: backends.airflow.status"):
        load_case(bad)
    silent = _write_case(tmp_path / "c3", "backends:\n  airflow: {status: never}\n")
    with pytest.raises(CaseError, match="needs a reason"):
        load_case(silent)


def test_the_id_must_match_the_folder(tmp_path):
    folder = tmp_path / "c4"
    folder.mkdir()
    (folder / "case.yaml").write_text("id: other\ndoc: d\npipeline: p.py:pipe\n"
                                      "expect: {state: success}\n")
    with pytest.raises(CaseError, match="must equal the folder name"):
        load_case(folder)


def test_expected_alerts_default_to_none_delivered(tmp_path):
    case = load_case(_write_case(tmp_path / "c5", ""))
    assert case.expect.alerts == []
    assert case.pipeline == f"{tmp_path / 'c5' / 'p.py'}:pipe"


def test_paths_add_import_folders_relative_to_the_case(tmp_path):
    (tmp_path / "lib").mkdir()
    case = load_case(_write_case(tmp_path / "c6", "paths: [../lib]\n"))
    assert case.search_path() == [str(tmp_path / "c6"), str(tmp_path / "lib")]
    with pytest.raises(CaseError, match=r"c7/case.yaml: paths: 'nowhere' is not a folder"):
        load_case(_write_case(tmp_path / "c7", "paths: [nowhere]\n"))
    with pytest.raises(CaseError, match="paths is a list of folders"):
        load_case(_write_case(tmp_path / "c8", "paths: ../lib\n"))


def test_a_backend_label_suffix_is_a_version_when_it_is_numeric():
    from unipipe.compiler.registry import split_label

    assert split_label("airflow") == ("airflow", {})
    assert split_label("airflow@2.11") == ("airflow", {"version": "2.11"})
    assert split_label("airflow@3.3") == ("airflow", {"version": "3.3"})
    assert split_label("airflow@scheduler") == ("airflow", {"mode": "scheduler"})
