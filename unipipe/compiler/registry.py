"""Backends are found through the ``unipipe.backends`` entry-point group."""

from __future__ import annotations

import sys
from importlib.metadata import entry_points
from typing import Any

GROUP = "unipipe.backends"
_INSTANCES: dict[str, Any] = {}
_FOUND: dict[tuple[str, ...], dict[str, Any]] = {}


def available() -> dict[str, Any]:
    """name -> entry point, for every installed backend (not imported yet). Reading entry points
    scans every installed distribution's metadata (~10 ms with Airflow, Prefect and kfp
    installed), so the answer is kept per ``sys.path``: a compile asks several times."""
    key = tuple(sys.path)
    if key not in _FOUND:
        _FOUND[key] = {ep.name: ep for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name)}
    return dict(_FOUND[key])


class UnknownBackend(LookupError):
    pass


def own_top_level() -> frozenset[str]:
    """Top-level import names of unipipe's own code: the core and each installed backend's
    package (read from its entry point, ``unipipe_airflow.backend:Backend`` -> unipipe_airflow)."""
    return frozenset({"unipipe"} | {ep.value.split(":")[0].split(".")[0]
                                    for ep in available().values()})


def get_backend(name: str) -> Any:
    if name not in _INSTANCES:
        eps = available()
        if name not in eps:
            known = ", ".join(eps) or "none installed"
            raise UnknownBackend(f"no backend named {name!r} (installed: {known})")
        try:
            _INSTANCES[name] = eps[name].load()()
        except Exception as exc:  # a broken third-party backend must not break the others
            raise UnknownBackend(f"backend {name!r} is installed but failed to load: "
                                 f"{type(exc).__name__}: {exc}") from exc
    return _INSTANCES[name]


def compile_targets() -> list[str]:
    """Installed backends that compile to an engine (everything except the reference runner)."""
    return [n for n in available() if n != "local"]


def split_label(label: str) -> tuple[str, dict[str, Any]]:
    """A backend label: a name with optional ``@`` suffixes, each a version or a mode.

    ``airflow@2.11`` -> ("airflow", {"version": "2.11"}): the engine version to run on (and the
    dialect to compile for); ``airflow@scheduler`` -> ("airflow", {"mode": "scheduler"}): another
    way of running the same engine. A suffix of digits and dots is a version.
    """
    name, *suffixes = label.split("@")
    extra: dict[str, Any] = {}
    for suffix in suffixes:
        key = "version" if suffix.replace(".", "").isdigit() else "mode"
        extra[key] = suffix
    return name, extra


def run_versions(backend: Any) -> tuple[str, ...]:
    """Engine versions ``backend`` can run on (``run_versions`` if it says, else its dialects)."""
    return tuple(getattr(backend, "run_versions", None) or getattr(backend, "versions", ()))


def get_backend_for(label: str) -> tuple[Any, dict[str, Any]]:
    """The backend a label names and the run options its suffixes select; an unknown version
    raises :class:`UnknownBackend` listing the versions the backend runs."""
    name, extra = split_label(label)
    backend = get_backend(name)
    version = extra.get("version")
    if version is not None and version not in (known := run_versions(backend)):
        raise UnknownBackend(f"backend {name!r} cannot run version {version!r} "
                             f"(label {label!r}); it runs {', '.join(known)}")
    return backend, extra
