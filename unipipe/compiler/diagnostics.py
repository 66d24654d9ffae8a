"""Diagnostics: every "cannot" of a backend goes through :func:`check_features` (sqlglot-style)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from enum import Enum

from unipipe.ir.features import Feature


class ErrorLevel(str, Enum):
    RAISE = "raise"  # unsupported features stop the compile (default)
    WARN = "warn"  # --allow-unsupported: warn and compile without the feature
    IGNORE = "ignore"


class Status(str, Enum):
    NATIVE = "native"
    EMULATED = "emulated"
    UNSUPPORTED = "unsupported"


@dataclass(frozen=True)
class Support:
    status: Status
    note: str = ""

    @classmethod
    def native(cls, note: str = "") -> Support:
        return cls(Status.NATIVE, note)

    @classmethod
    def emulated(cls, note: str = "") -> Support:
        return cls(Status.EMULATED, note)

    @classmethod
    def unsupported(cls, note: str = "") -> Support:
        return cls(Status.UNSUPPORTED, note)


@dataclass(frozen=True)
class Diagnostic:
    level: str  # "info" (emulated) | "warning" (unsupported, allowed) | "error"
    feature: Feature
    backend: str
    message: str

    def __str__(self) -> str:
        return f"{self.backend}: {self.feature.value}: {self.message}"


class UnsupportedFeature(Exception):
    """The target cannot honour a feature the pipeline uses; nothing was written."""

    def __init__(self, diagnostics: list[Diagnostic]):
        self.diagnostics = diagnostics
        lines = [f"  - {d.feature.value}: {d.message}" for d in diagnostics]
        super().__init__(
            f"backend {diagnostics[0].backend!r} cannot honour these features:\n" + "\n".join(lines)
            + "\n(pass --allow-unsupported / error_level='warn' to compile without them)"
        )


class UnsupportedFeatureWarning(UserWarning):
    pass


def check_features(backend: str, support: dict[Feature, Support], used: list[Feature],
                   level: ErrorLevel = ErrorLevel.RAISE) -> list[Diagnostic]:
    """Diagnostics for ``used`` features; raise UnsupportedFeature per ``level``."""
    diags: list[Diagnostic] = []
    errors: list[Diagnostic] = []
    for feature in used:
        s = support.get(feature, Support.unsupported("not declared by the backend"))
        if s.status is Status.EMULATED:
            diags.append(Diagnostic("info", feature, backend, "emulated by the unipipe runtime"
                                    + (f": {s.note}" if s.note else "")))
        elif s.status is Status.UNSUPPORTED:
            d = Diagnostic("warning" if level is not ErrorLevel.RAISE else "error", feature,
                           backend, s.note or "not supported")
            errors.append(d)
            diags.append(d)
    if errors and level is ErrorLevel.RAISE:
        raise UnsupportedFeature(errors)
    if errors and level is ErrorLevel.WARN:
        for d in errors:
            warnings.warn(str(d), UnsupportedFeatureWarning, stacklevel=3)
    return diags
