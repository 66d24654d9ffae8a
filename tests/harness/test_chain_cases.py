"""Chain cases (issue 14): the case shape, its bad input, the reference meaning of an event
chain, and how a chain is judged."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from unipipe.authoring.loader import load_ir
from unipipe.harness.cases import CaseError, check_tags, load_case
from unipipe.harness.compare import check_chain
from unipipe.local.chain import TriggerState, updates
from unipipe.result import RunResult, TaskResult

ROOT = Path(__file__).resolve().parents[2]
CHAIN = ROOT / "comparisons" / "cases" / "asset_chain_any"

GOOD = """\
id: {id}
doc: a chain
pipeline: case_asset_chain_any.py:producer
tags: [params, asset.produces, trigger.asset, trigger.any]
chain:
  consumer: case_asset_chain_any.py:consumer
  runs:
    - {{params: {{fail: true}}, expect: {{state: failed}}, consumer_runs: 0}}
    - {{params: {{fail: false}}, expect: {{state: success}}, consumer_runs: 1}}
  expect: {{state: success, output: {{logical_date_present: true}}}}
"""


def _case(tmp_path: Path, text: str, name: str = "c1") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "case_asset_chain_any.py").write_text((CHAIN / "case_asset_chain_any.py").read_text())
    (folder / "case.yaml").write_text(textwrap.dedent(text).replace("{id}", name))
    return folder


def test_the_chain_case_parses_with_its_runs_counts_and_consumer():
    case = load_case(CHAIN)
    assert case.chain is not None
    assert case.chain.consumer == f"{CHAIN / 'case_asset_chain_any.py'}:consumer"
    assert case.chain.params() == [{"fail": True}, {"fail": False}, {"fail": False}]
    assert [r.consumer_runs for r in case.chain.runs] == [0, 1, 1]
    assert [r.expect.state for r in case.chain.runs] == ["failed", "success", "success"]
    assert case.chain.expect.output == {"logical_date_present": True}
    assert case.backends["kubeflow"].status == "unsupported"
    assert check_tags(case) == []  # the producer's and the consumer's features together


def test_a_chain_cases_tags_are_both_pipelines_features(tmp_path):
    folder = _case(tmp_path, GOOD.format(id="{id}").replace(
        "tags: [params, asset.produces, trigger.asset, trigger.any]",
        "tags: [params, asset.produces]"))
    (problem,) = check_tags(load_case(folder))
    assert "'trigger.asset', 'trigger.any'" in problem


@pytest.mark.parametrize("change, message", [
    (("  consumer: case_asset_chain_any.py:consumer\n", "  consumer: 3\n"),
     r"c1/case.yaml: chain.consumer is a pipeline spec"),
    (("consumer_runs: 0}", "consumer_runs: -1}"),
     r"c1/case.yaml: chain.runs\[0\].consumer_runs is a whole number >= 0"),
    (("consumer_runs: 0}", "consumer_runs: true}"),
     r"chain.runs\[0\].consumer_runs is a whole number"),
    ((", consumer_runs: 0}", "}"), r"c1/case.yaml: chain.runs\[0\].consumer_runs is required"),
    (("{params: {fail: true}, expect: {state: failed}, ",
      "{params: {fail: true}, "), r"chain.runs\[0\].expect is required"),
    (("expect: {state: failed}", "expect: {state: maybe}"),
     r"c1/case.yaml: chain.runs\[0\]: expect.state is success or failed"),
    (("expect: {state: failed}", "expect: {refused: true}"),
     r"chain.runs\[0\].expect: a chain's runs are not refused"),
    (("consumer_runs: 0}", "consumer_runs: 0, wait: 3}"),
     r"chain.runs\[0\] takes params, expect, consumer_runs"),
    (("  expect: {state: success, output: {logical_date_present: true}}\n", ""),
     r"c1/case.yaml: chain takes exactly consumer, runs, expect"),
    (("  runs:\n    - {params: {fail: true}, expect: {state: failed}, consumer_runs: 0}\n"
      "    - {params: {fail: false}, expect: {state: success}, consumer_runs: 1}\n",
      "  runs: []\n"), r"chain.runs is a non-empty list"),
    (("chain:\n", "params: {fail: true}\nchain:\n"),
     r"c1/case.yaml: a chain case gives params and expect per run under chain.runs, not "
     r"\['params'\]"),
    (("chain:\n", "expect: {state: success}\nchain:\n"), r"not \['expect'\]"),
])
def test_bad_chains_are_refused_naming_the_file_and_the_field(tmp_path, change, message):
    old, new = change
    text = GOOD.format(id="{id}")
    assert old in text
    with pytest.raises(CaseError, match=message):
        load_case(_case(tmp_path, text.replace(old, new)))


def _result(ir, state: str, task_states: dict[str, str]) -> RunResult:
    return RunResult(ir.name, "local", "r", state,  # type: ignore[arg-type]
                     tasks={t: TaskResult(state=s) for t, s in task_states.items()})


def test_the_reference_meaning_any_all_and_a_failed_task():
    producer = load_ir(f"{CHAIN / 'case_asset_chain_any.py'}:producer")
    ok = _result(producer, "success", {"build_features": "success"})
    failed = _result(producer, "failed", {"build_features": "failed"})
    assert updates(producer, ok) == ["s3://lake/chain/features"]
    assert updates(producer, failed) == []
    anyone = TriggerState(("s3://a", "s3://b"), "any")
    assert [anyone.runs_for(u) for u in ([], ["s3://a"], ["s3://a", "s3://b"], ["s3://c"])] \
        == [0, 1, 2, 0]
    both = TriggerState(("s3://a", "s3://b"), "all")
    assert [both.runs_for(u) for u in (["s3://a"], ["s3://a"], ["s3://b"], ["s3://b"],
                                       ["s3://a", "s3://b"])] == [0, 0, 1, 0, 1]


def _run(state: str, output=None) -> dict:
    return {"status": "ok", "state": state, "output": output, "run_attempts": 1,
            "tasks": {"train": {"state": state, "attempts": 1, "cache_hit": False}},
            "alerts": [], "notes": []}


def test_check_chain_counts_each_producer_runs_consumer_runs_and_their_fields():
    chain = load_case(CHAIN).chain
    b = _run("success", {"logical_date_present": True})
    good = {"consumer_runs": [0, 1, 1], "consumer": [[], [b], [b]]}
    assert check_chain(good, chain, None) == []
    assert check_chain(good, chain, good, "airflow") == []
    collapsed = {"consumer_runs": [0, 1, 0], "consumer": [[], [b], []]}
    assert check_chain(collapsed, chain, good, "airflow") == [
        "consumer runs the engine created after each producer run: [0, 1, 0], expected [0, 1, 1]"]
    wrong = {"consumer_runs": [0, 1, 1],
             "consumer": [[], [b], [_run("success", {"logical_date_present": False})]]}
    diffs = check_chain(wrong, chain, good, "prefect")
    assert any(d.startswith("consumer run 1 after producer run 3: output is") for d in diffs)
    assert any("output: prefect" in d for d in diffs)
    assert check_chain(None, chain, good) == ["the chain was not observed"]


def test_the_reference_runs_the_all_mode_chain_a_failed_runs_successful_task_counting(tmp_path):
    """asset_chain_all: run 1 fails in build_labels but build_features updated its asset;
    run 2 updates both (features twice since B's last run counts once): one B run."""
    from unipipe.harness.execute import run_suite

    case = load_case(CHAIN.parent / "asset_chain_all")
    assert check_tags(case) == []
    suite = run_suite([case], [], tmp_path, jobs=1)
    outcome = suite.outcome("asset_chain_all", "local")
    assert outcome.status == "pass", outcome.diffs
    assert outcome.runs[0]["tasks"]["build_features"]["state"] == "success"
    assert suite.raws[("asset_chain_all", "local")]["chain"]["consumer_runs"] == [0, 1, 1]


def test_the_reference_runs_the_chain_case(tmp_path):
    from unipipe.harness.execute import run_suite

    suite = run_suite([load_case(CHAIN)], [], tmp_path, jobs=1)
    outcome = suite.outcome("asset_chain_any", "local")
    assert outcome.status == "pass", outcome.diffs
    assert [r["state"] for r in outcome.runs] == ["failed", "success", "success"]
    chain = suite.raws[("asset_chain_any", "local")]["chain"]
    assert chain["consumer_runs"] == [0, 1, 1]
    assert [r["output"] for rs in chain["consumer"] for r in rs] == \
        [{"logical_date_present": True}] * 2
    from unipipe.harness.report import markdown

    assert "| asset_chain_any | local | [0, 1, 1] | success, success |" in markdown(suite)
