"""Artifact and cache stores: fsspec URLs, a folder under the user's cache dir by default.

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


def artifact_root() -> str:
    return os.environ.get("UNIPIPE_ARTIFACT_URL") or os.path.join(user_cache_dir(), "artifacts")


def cache_root() -> str:
    return os.environ.get("UNIPIPE_CACHE_URL") or os.path.join(user_cache_dir(), "cache")


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
