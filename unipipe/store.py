"""The shared store: one fsspec prefix every worker of a deployed pipeline reads and writes.

Layout under the prefix (the runtime shim, :mod:`unipipe.runtime.store`, reads the same rules):
``artifacts/`` (values over the inline limit, content-addressed), ``cache/`` (task-result cache
entries), ``scratch/<run>/<task>/`` (attempt markers and checkpoints), ``prefect-results/``
(Prefect's own result storage) and ``code/<digest>/`` (code packages).

A pipeline compiled without a store keeps each machine's local folder (``~/.cache/unipipe``):
right for one machine, wrong for many, where a value written by one worker is read by another.
The URL is compiled into what is generated (``Pipeline.store`` -> each task spec), so workers need
no configuration; credentials never go into it: workers use their SDK's standard environment
(AWS_*, GOOGLE_APPLICATION_CREDENTIALS, ...).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:  # unipipe.ir.models calls check_store_url: no import back at module level
    from unipipe.ir.models import Pipeline

#: ``--store local``: the user asks, explicitly, for each machine's own folder
LOCAL = "local"
ENV = "UNIPIPE_STORE_URL"

#: deploy targets whose tasks land on different machines (Celery workers, pods, containers)
MULTI_MACHINE_TARGETS = ("mwaa", "composer", "kubeflow", "vertex")

# fsspec protocols whose data other processes on other machines can reach. ``file`` is shared
# only when the folder is (an NFS/EFS mount, or one machine): allowed, the user's choice.
_NOT_SHARED = {"memory": "memory:// lives in one process's memory; no other worker can read it"}


class StoreError(ValueError):
    """A store URL that cannot be used: exit 2, nothing written."""


#: the fsspec implementation a worker needs to reach a store, by protocol (fsspec's registry,
#: ``fsspec/registry.py`` ``known_implementations``); ``file`` needs fsspec alone
_FS_PACKAGES = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "abfs": "adlfs",
                "az": "adlfs", "abfss": "adlfs"}


def worker_packages(url: str) -> list[str]:
    """The pip requirements a bare worker (``python:3.11``) installs to read and write ``url``."""
    protocol = url.split("://", 1)[0] if "://" in url else "file"
    extra = _FS_PACKAGES.get(protocol)
    return ["fsspec"] + ([extra] if extra else [])


def check_store_url(url: str) -> str:
    """The URL, checked: a known fsspec protocol, an absolute location, no credentials."""
    if not isinstance(url, str) or not url.strip():
        raise StoreError("the store must be an fsspec URL such as s3://bucket/prefix")
    url = url.strip()
    if url == LOCAL:
        raise StoreError("'local' is not a URL: pass --store local to the CLI (or store=None) "
                         "to keep each machine's own folder")
    parts = urlsplit(url)
    if not parts.scheme or len(parts.scheme) == 1:  # "C:" style drive letters are not schemes
        raise StoreError(f"store {url!r} has no protocol: write s3://..., gs://... or "
                         f"file:///absolute/path")
    if "@" in parts.netloc or parts.password or parts.username:
        raise StoreError(f"store {_redact(url)!r} holds credentials: keep them out of the URL "
                         f"(workers use their SDK's standard environment, e.g. AWS_* variables)")
    if parts.query or parts.fragment:
        raise StoreError(f"store {_redact(url)!r} has a query or fragment: options and "
                         f"credentials do not belong in the compiled URL")
    import fsspec

    protocol = parts.scheme.lower()
    if protocol not in fsspec.available_protocols():
        raise StoreError(f"store {url!r}: unknown protocol {protocol!r} (fsspec knows "
                         f"s3, gs, gcs, file, abfs, ...)")
    if protocol in _NOT_SHARED:
        raise StoreError(f"store {url!r}: {_NOT_SHARED[protocol]}")
    if protocol == "file" and (parts.netloc not in ("", "localhost")
                               or not parts.path.startswith("/")):
        raise StoreError(f"store {url!r}: a file:// store needs an absolute path "
                         f"(file:///shared/folder)")
    if protocol != "file" and not parts.netloc:
        raise StoreError(f"store {url!r} names no bucket or container")
    return url.rstrip("/")


def _redact(url: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://***@{host}{parts.path}" if "@" in parts.netloc else \
        f"{parts.scheme}://{host}{parts.path}"


def normalise(url: str | None) -> str | None:
    """A CLI value as the IR holds it: ``local``/None -> None, a bare path -> ``file://`` URL."""
    if url is None or url.strip() == LOCAL:
        return None
    url = url.strip()
    if "://" not in url:
        url = "file://" + os.path.abspath(os.path.expanduser(url))
    return check_store_url(url)


def from_env() -> str | None:
    """``UNIPIPE_STORE_URL`` as a CLI default (``local`` and empty mean none)."""
    return os.environ.get(ENV) or None


def with_store(ir: Pipeline, url: str | None) -> Pipeline:
    """``ir`` compiled for ``url`` (normalised; ``local`` or None leaves the IR's own store)."""
    store = normalise(url)
    if store is None or store == ir.store:
        return ir
    return ir.model_copy(update={"store": store})


def one_machine_note(ir: Pipeline) -> str | None:
    """What a compile says when the output is for one machine only (no shared store)."""
    if ir.store is not None:
        return None
    return ("no shared store (--store): artifacts, cache entries and attempt markers go to each "
            "machine's ~/.cache/unipipe, so this output is for one machine; on MWAA, Composer, "
            "KFP or containers pass --store s3://... or gs://...")


def require_shared(ir: Pipeline, target: str, *, explicit_local: bool, why: str = "",
                   flag: str = "--to") -> None:
    """Refuse a deploy (or a run, ``flag``) on a multi-machine target without a shared store
    (unless asked for)."""
    if ir.store is not None or explicit_local:
        return
    raise StoreError(
        f"{flag} {target} runs tasks on many machines{' (' + why + ')' if why else ''}: a value "
        f"over 64 KiB, a cache entry or an attempt marker written by one worker would be "
        f"invisible to the next. Pass --store s3://bucket/prefix (or gs://...), or "
        f"--store local to deploy for one machine anyway")
