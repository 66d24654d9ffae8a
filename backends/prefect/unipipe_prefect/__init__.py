"""unipipe backend for Prefect 3.7: a flow module and a prefect.yaml per pipeline, run on a real
Prefect server (``Backend`` in :mod:`unipipe_prefect.backend`).

Light on import: :class:`LocalPrefectServer` (``unipipe_prefect.server``) loads on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LocalPrefectServer"]


def __getattr__(name: str) -> Any:
    if name == "LocalPrefectServer":
        from unipipe_prefect.server import LocalPrefectServer

        return LocalPrefectServer
    raise AttributeError(f"module 'unipipe_prefect' has no attribute {name!r}")
