"""Prefect's result storage on the pipeline's shared store (``--store``).

Prefect 3.7 refuses a result-storage block object that is not saved on the server ("Result
storage configuration must be persisted server-side", ``prefect/flows.py`` ~386 and
``prefect/tasks.py`` ~596), and resolves a string as a saved block's slug with ``Block.load``
(``prefect/results.py::resolve_result_storage``). So the generated flow names a
``remote-file-system`` block (``prefect/filesystems.py::RemoteFileSystem``, fsspec underneath,
so any URL the store takes) by a name derived from the store URL, and whoever runs or deploys
the flow saves that block first. Task runs inherit the flow's result store
(``ResultStore.update_for_flow`` / ``update_for_task``), so Prefect's own cache entries and
results land in ``<store>/prefect-results`` where every flow-run container reads them.
"""

from __future__ import annotations

import hashlib


def _is_local(store: str) -> bool:
    return store.startswith("file://")


def block_type(store: str) -> str:
    """``local-file-system`` for a ``file://`` store (RemoteFileSystem refuses a URL with no
    location after the scheme: ``prefect/filesystems.py::RemoteFileSystem.check_basepath``),
    ``remote-file-system`` for every other fsspec URL."""
    return "local-file-system" if _is_local(store) else "remote-file-system"


def block_name(store: str) -> str:
    return "unipipe-store-" + hashlib.sha256(store.encode()).hexdigest()[:12]


def block_slug(store: str) -> str:
    return f"{block_type(store)}/{block_name(store)}"


def results_url(store: str) -> str:
    base = f"{store.rstrip('/')}/prefect-results"
    return base.removeprefix("file://") if _is_local(store) else base


def save_block(store: str) -> str:
    """Save (or update) the store's result-storage block on PREFECT_API_URL; returns its slug."""
    from prefect.filesystems import LocalFileSystem, RemoteFileSystem

    kind = LocalFileSystem if _is_local(store) else RemoteFileSystem
    kind(basepath=results_url(store)).save(block_name(store), overwrite=True)
    return block_slug(store)
