"""Artifact and cache stores: fsspec URLs under one shared store prefix when the pipeline was
compiled with ``--store`` (see :mod:`unipipe.store`), a folder under the user's cache dir otherwise.

fsspec is imported only when a store is actually touched, so the shim stays cheap to import.
"""

from __future__ import annotations

import json
import os

TYPE_CHECKING = False  # keeps `typing` off the shim's import path; type checkers see True
if TYPE_CHECKING:
    from typing import Any

ARTIFACT_KEY = "__unipipe_artifact__"
INLINE_LIMIT = 64 * 1024  # bytes of JSON passed natively (XCom, Prefect results, KFP parameters)


def user_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "unipipe")


# The shared store compiled into the running task's spec (``spec["store"]``), set by
# :func:`use` at the start of each attempt; ``UNIPIPE_STORE_URL`` overrides it per worker.
_COMPILED: str | None = None


def use(url: str | None) -> None:
    """Make ``url`` (the spec's compiled store, or None) the store of this process's attempts."""
    global _COMPILED
    _COMPILED = url or None


def store_url() -> str | None:
    """The shared store prefix in force: ``UNIPIPE_STORE_URL``, else the compiled one."""
    return os.environ.get("UNIPIPE_STORE_URL") or _COMPILED


def _root(env: str, sub: str) -> str:
    """A specific override (``UNIPIPE_ARTIFACT_URL``/``UNIPIPE_CACHE_URL``), else the shared
    store's sub-folder, else the folder under this machine's user cache dir."""
    explicit = os.environ.get(env)
    if explicit:
        return explicit
    shared = store_url()
    return f"{shared.rstrip('/')}/{sub}" if shared else os.path.join(user_cache_dir(), sub)


def artifact_root() -> str:
    return _root("UNIPIPE_ARTIFACT_URL", "artifacts")


def cache_root() -> str:
    return _root("UNIPIPE_CACHE_URL", "cache")


def scratch_root() -> str:
    """Attempt markers and checkpoints: ``<store>/scratch``, else next to the artifacts."""
    shared = store_url()
    if shared and not os.environ.get("UNIPIPE_ARTIFACT_URL"):
        return f"{shared.rstrip('/')}/scratch"
    return f"{artifact_root()}/scratch"


def _fs(url: str) -> tuple[Any, str]:
    import fsspec

    fs, path = fsspec.core.url_to_fs(url)
    return fs, path


def write_bytes(url: str, data: bytes) -> None:
    """Write atomically where the filesystem allows (local: temp file + rename)."""
    fs, path = _fs(url)
    parent = path.rsplit("/", 1)[0]
    fs.makedirs(parent, exist_ok=True)
    import uuid

    if getattr(fs, "protocol", None) in ("file", ("file", "local")) or "file" in getattr(fs, "protocol", ()):
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        with fs.open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    else:
        with fs.open(path, "wb") as fh:
            fh.write(data)


def read_bytes(url: str) -> bytes | None:
    fs, path = _fs(url)
    try:
        with fs.open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        return None


def to_transport(value: Any) -> Any:
    """A value every engine can carry: small JSON as is, anything else as an artifact pointer.

    Artifacts are content-addressed (``sha256/<digest>.<format>``): the same value gives the same
    pointer in every run, so an engine whose cache hashes a task's inputs (Prefect's INPUTS, KFP's
    fingerprint) hits its cache across runs for large values as it does for small ones, and a
    value written twice is stored once.
    """
    try:
        text = json.dumps(value, allow_nan=False)
        if len(text) <= INLINE_LIMIT:
            return value
        data, kind = text.encode(), "json"
    except (TypeError, ValueError):
        import pickle

        data, kind = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL), "pickle"
    import hashlib

    digest = hashlib.sha256(data).hexdigest()
    url = f"{artifact_root()}/sha256/{digest[:2]}/{digest}.{kind}"
    fs, path = _fs(url)
    if not fs.exists(path):  # written atomically, so an existing file is complete
        write_bytes(url, data)
    return {ARTIFACT_KEY: url, "format": kind}


def from_transport(value: Any) -> Any:
    if isinstance(value, dict) and ARTIFACT_KEY in value:
        data = read_bytes(value[ARTIFACT_KEY])
        if data is None:
            raise FileNotFoundError(f"artifact {value[ARTIFACT_KEY]} is missing")
        if value.get("format") == "json":
            return json.loads(data)
        import pickle

        return pickle.loads(data)
    if isinstance(value, list):
        return [from_transport(v) for v in value]
    return value


def select(value: Any, path: Any) -> Any:
    """Apply a key path (``ref["a"][0]``) to a loaded value, with a clear error."""
    for key in path or ():
        try:
            value = value[key]
        except (KeyError, IndexError, TypeError) as exc:
            raise KeyError(f"cannot select {key!r} from {type(value).__name__}: {exc}") from None
    return value
