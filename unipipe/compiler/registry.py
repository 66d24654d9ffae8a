"""Backends are found through the ``unipipe.backends`` entry-point group."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

GROUP = "unipipe.backends"
_INSTANCES: dict[str, Any] = {}


def available() -> dict[str, Any]:
    """name -> entry point, for every installed backend (not imported yet)."""
    return {ep.name: ep for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name)}


class UnknownBackend(LookupError):
    pass


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
