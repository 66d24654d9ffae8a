"""Task-result cache: key = callable + source hash + version + inputs, or a user key function.

Entries are JSON files ``<cache_root>/<key>.json`` holding the creation time and the transported
value. Expiry is checked on read (as Prefect checks ``cache_expiration``): an entry older than
``expire`` seconds is a miss and is overwritten by the next successful attempt.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import time

from unipipe.runtime.store import cache_root, read_bytes, write_bytes

TYPE_CHECKING = False  # keeps `typing` off the shim's import path; type checkers see True
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any


def _stable(value: Any) -> str:
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):
        return "pickle:" + hashlib.sha256(pickle.dumps(value, protocol=4)).hexdigest()


def cache_key(spec: Mapping[str, Any], inputs: Mapping[str, Any]) -> str:
    cache = spec["cache"]
    if cache.get("key_fn"):
        from unipipe.runtime.loading import import_object

        fn = import_object(cache["key_fn"])
        user_key = str(fn(dict(inputs)))
        material = f"{spec['fn']}\0{cache.get('version', '0')}\0{user_key}"
    else:
        material = "\0".join([
            spec["fn"], spec["source_hash"], str(cache.get("version", "0")),
            _stable({k: inputs[k] for k in sorted(inputs)}),
        ])
    return hashlib.sha256(material.encode()).hexdigest()


def lookup(spec: Mapping[str, Any], key: str, now: float | None = None) -> tuple[bool, Any]:
    data = read_bytes(f"{cache_root()}/{key}.json")
    if data is None:
        return False, None
    try:
        entry = json.loads(data)
    except ValueError:
        return False, None
    expire = spec["cache"].get("expire")
    if expire is not None and (now if now is not None else time.time()) - entry["created"] > expire:
        return False, None
    return True, entry["value"]


def lookup_record(key: str) -> dict[str, Any] | None:
    """The artifacts, metrics and report the cached attempt recorded (None: it kept none)."""
    data = read_bytes(f"{cache_root()}/{key}.json")
    try:
        return None if data is None else json.loads(data).get("record")
    except ValueError:
        return None


def save(key: str, value: Any, now: float | None = None, record: Any = None) -> None:
    entry = {"created": now if now is not None else time.time(), "value": value}
    if record is not None:  # a task's artifacts, metrics and report come back with its value
        entry["record"] = record
    write_bytes(f"{cache_root()}/{key}.json", json.dumps(entry).encode())
