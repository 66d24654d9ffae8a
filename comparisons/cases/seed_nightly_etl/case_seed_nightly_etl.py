"""The seeds' Airflow ETL DAG (examples/nightly_etl.py), with a low minimum so the full load
runs, and a staging folder of the case's own."""

from nightly_etl import nightly_etl as pipe

__all__ = ["pipe"]
