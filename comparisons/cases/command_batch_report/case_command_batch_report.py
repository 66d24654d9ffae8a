"""Seed scenario: a KubernetesPodOperator-style DAG rewritten with command tasks.

The pipeline is the example's (examples/batch_report.py, on the path through case.yaml).
"""

from batch_report import batch_report as pipe

__all__ = ["pipe"]
