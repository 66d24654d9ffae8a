"""The seeds' Prefect ETL flow with subflows (examples/prefect_etl.py)."""

from prefect_etl import etl as pipe

__all__ = ["pipe"]
