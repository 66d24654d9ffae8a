"""The shim benchmark's chain written by hand as an Airflow 3 TaskFlow DAG (no unipipe).

K comes from ``SHIM_CHAIN_K`` (read when Airflow parses the file); the DAG id is
``native-chain-<K>``. Task ids are ``step``, ``step_2`` .. ``step_<K>``, as unipipe names them.
"""

import os

import pendulum
from airflow.sdk import Param, dag, get_current_context, task

K = int(os.environ.get("SHIM_CHAIN_K", "20"))


@task
def first():
    return get_current_context()["params"]["start"] + 1


@task
def step(x):
    return x + 1


@dag(dag_id=f"native-chain-{K}", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
     catchup=False, params={"start": Param(0, type="integer")})
def native_chain():
    value = first.override(task_id="step")()
    for i in range(2, K + 1):
        value = step.override(task_id=f"step_{i}")(value)


native_chain()
