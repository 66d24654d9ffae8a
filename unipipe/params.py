"""Pipeline parameters: defaults, CLI strings, and type checks shared by every backend."""

from __future__ import annotations

import json
from typing import Any

from unipipe.ir.errors import PipelineError, Problem
from unipipe.ir.models import Pipeline


def parse_cli_params(pairs: list[str]) -> dict[str, Any]:
    """``k=v`` pairs; v is read as JSON when it parses (3, 0.5, true, [1]), else as a string."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise PipelineError(Problem(f"--param {pair!r} must look like name=value", "<cli>", 0, "param"))
        key, _, raw = pair.partition("=")
        try:
            out[key.strip()] = json.loads(raw)
        except ValueError:
            out[key.strip()] = raw
    return out


def _coerce(ptype: str, value: Any) -> Any:
    if ptype == "any" or value is None:
        return value
    if ptype == "float" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if ptype == "str" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    checks = {"str": str, "int": int, "float": float, "bool": bool, "dict": dict, "list": list}
    expected = checks[ptype]
    if isinstance(value, bool) and ptype in ("int", "float"):
        raise TypeError
    if not isinstance(value, expected):
        raise TypeError
    return value


def resolve_params(ir: Pipeline, given: dict[str, Any] | None) -> dict[str, Any]:
    """Every parameter's value for a run; unknown, missing or mistyped ones raise PipelineError."""
    given = dict(given or {})
    file = ir.location.file if ir.location else "<pipeline>"
    line = ir.location.line if ir.location else 0
    problems = []
    out: dict[str, Any] = {}
    names = {p.name for p in ir.params}
    for key in given:
        if key not in names:
            problems.append(Problem(f"unknown parameter {key!r} (known: {', '.join(sorted(names)) or 'none'})",
                                    file, line, f"params.{key}"))
    for p in ir.params:
        if p.name in given:
            value = given[p.name]
        elif p.required:
            problems.append(Problem(f"parameter {p.name!r} is required", file, line, f"params.{p.name}"))
            continue
        else:
            value = p.default
        try:
            out[p.name] = _coerce(p.type, value)
            json.dumps(out[p.name], allow_nan=False)
        except (TypeError, ValueError):
            problems.append(Problem(f"parameter {p.name!r} expects {p.type}, got {value!r}",
                                    file, line, f"params.{p.name}"))
    if problems:
        raise PipelineError(problems)
    return out
