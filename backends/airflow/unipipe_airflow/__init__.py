"""unipipe's Airflow backend: TaskFlow DAG files for Airflow 3.x and 2.10/2.11, and runs on a
real Airflow (``airflow dags test`` or a scheduler).

Nothing is imported here: generated task bodies import :mod:`unipipe_airflow.runtime`, which
must stay cheap; the backend class is :class:`unipipe_airflow.backend.Backend`.
"""
