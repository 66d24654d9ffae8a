"""comparisons/MATRIX.md is generated, never edited: it equals a fresh regeneration, and every
feature x backend cell is backed by a case that ran or by an unsupported declaration."""

from __future__ import annotations

import json
import subprocess
import sys

from unipipe.harness.matrix import render_matrix
from unipipe.ir.features import Feature

from .conftest import ROOT


def test_committed_matrix_equals_a_fresh_regeneration(monkeypatch):
    monkeypatch.chdir(ROOT)
    assert (ROOT / "comparisons" / "MATRIX.md").read_text() == render_matrix()


def test_unipipe_matrix_check_agrees():
    proc = subprocess.run([sys.executable, "-m", "unipipe.cli", "matrix", "--check"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def _feature_table(text):
    rows = {}
    lines = text.split("## Features", 1)[1].split("## Cases", 1)[0].splitlines()
    header = next(line for line in lines if line.startswith("| feature |"))
    backends = [c.strip() for c in header.strip("|").split("|")[1:]]
    for line in lines:
        if line.startswith("| `"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0].strip("`")] = dict(zip(backends, cells[1:]))
    return backends, rows


def test_every_cell_is_backed_by_a_case_or_a_refusal():
    backends, rows = _feature_table((ROOT / "comparisons" / "MATRIX.md").read_text())
    assert backends == ["local", "airflow", "kubeflow", "prefect"]
    assert sorted(rows) == sorted(f.value for f in Feature)
    unbacked = [(f, b, cell) for f, cells in rows.items() for b, cell in cells.items()
                if "no case ran" in cell or "notimpl" in cell]
    assert unbacked == []


def test_cells_count_the_cases_of_a_feature(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    results = tmp_path / "comparisons" / "results"
    results.mkdir(parents=True)
    summary = {"backends": ["local"], "cases": {
        "a": {"doc": "", "tags": ["retry", "timeout"], "required": True,
              "results": {"local": {"status": "pass", "declared": None, "reason": ""}}},
        "b": {"doc": "", "tags": ["retry"], "required": False,
              "results": {"local": {"status": "xfail", "declared": "notyet",
                                    "reason": "engine | lacks it"}}}}}
    (results / "summary.json").write_text(json.dumps(summary))
    _, rows = _feature_table(render_matrix())
    assert rows["retry"]["local"] == "🟢 native · ⚠️ 1/2 (1 notyet)"
    assert rows["timeout"]["local"] == "🟢 native · ✅ 1/1"
    assert rows["cache"]["local"] == "🟢 native · ⚠️ no case ran"
    text = render_matrix()
    assert "| **a** | ✅ pass |" in text
    assert "- `b` on local (notyet): engine \\| lacks it" in text
