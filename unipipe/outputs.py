"""Evaluating a pipeline's output expression once its tasks have run (shared by every runner)."""

from __future__ import annotations

from typing import Any

from unipipe.ir.models import DictValue, ListValue, LiteralInput, OutputInput, ParamInput, Value
from unipipe.runtime.store import from_transport, select


def evaluate(value: Value | None, outputs: dict[str, Any], params: dict[str, Any]) -> Any:
    """``outputs`` maps task id -> transported output (absent or None for skipped tasks)."""
    if value is None:
        return None
    if isinstance(value, LiteralInput):
        return value.value
    if isinstance(value, ParamInput):
        return select(params.get(value.name), value.path)
    if isinstance(value, OutputInput):
        if outputs.get(value.task) is None:
            return None
        return select(from_transport(outputs[value.task]), value.path)
    if isinstance(value, ListValue):
        return [evaluate(v, outputs, params) for v in value.items]
    if isinstance(value, DictValue):
        return {k: evaluate(v, outputs, params) for k, v in value.items.items()}
    raise TypeError(value)
