"""The pieces every authoring module needs, kept cheap: a task's module imported inside an
attempt (an Airflow task process, a KFP component, a Prefect forked child) imports
``unipipe.authoring.decorators`` and, through it, only this module (see
tests/core/test_import_cost.py). pydantic (``m``), the IR errors and ``pathlib`` load on first
use, which the execution path never reaches.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # keeps `typing` off the execution path; type checkers see True
if TYPE_CHECKING:
    from typing import Any

    from unipipe.ir import models as m
    from unipipe.ir.errors import PipelineError
else:
    class _LazyModels:
        """``m.X`` is ``unipipe.ir.models.X``, imported (with pydantic) on first use: a task
        process imports the user's module in execution mode and never builds IR."""

        def __getattr__(self, name: str) -> Any:
            from unipipe.ir import models

            return getattr(models, name)

    m = _LazyModels()


class Loc:
    """Where the user wrote something (a file and line), before it becomes IR."""

    __slots__ = ("file", "line")

    def __init__(self, file: str, line: int) -> None:
        self.file = file
        self.line = line

    def __repr__(self) -> str:
        return f"{self.file}:{self.line}"

    def to_ir(self) -> m.SourceLocation:
        return m.SourceLocation(file=self.file, line=self.line)


def caller_location(depth: int = 2) -> Loc:
    """Location of the user's code ``depth`` frames up, skipping unipipe's own frames."""
    frame = sys._getframe(depth)
    while frame is not None and frame.f_globals.get("__name__", "").startswith("unipipe."):
        frame = frame.f_back  # type: ignore[assignment]
    if frame is None:  # pragma: no cover - interpreter without frames
        return Loc("<unknown>", 0)
    return Loc(frame.f_code.co_filename, frame.f_lineno)


def fail(loc: Loc | None, field_name: str, message: str) -> PipelineError:
    from unipipe.ir.errors import PipelineError, Problem

    if loc is None:
        return PipelineError(Problem(message, field=field_name))
    return PipelineError(Problem(message, loc.file, loc.line, field_name))


def import_path(obj: Any, loc: Loc | None, field_name: str) -> str:
    """``module:qualname`` of a class or function; strings pass through if they look right."""
    if isinstance(obj, str):
        if ":" not in obj:
            raise fail(loc, field_name, f"{obj!r} is not an import path 'module:name'")
        return obj
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not module or not qualname or "<locals>" in qualname or "<lambda>" in qualname:
        raise fail(loc, field_name, f"{obj!r} must be importable at module level (module:name)")
    if module == "__main__":
        from unipipe.authoring.modules import main_module_name

        module = main_module_name() or module
    return f"{module}:{qualname}"
