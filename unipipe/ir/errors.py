"""Errors a person can act on: each problem names the file, the line and the field."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Problem:
    message: str
    file: str = "<unknown>"
    line: int = 0
    field: str = ""

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        field = f" [{self.field}]" if self.field else ""
        return f"{where}:{field} {self.message}"


def line_of(text: str, loc: tuple[Any, ...]) -> int:
    """Best-effort line of a field (a pydantic error location, or a dotted field split into
    parts) in a JSON/YAML text: find each key in turn; 0 when not found."""
    pos = 0
    for part in loc:
        if isinstance(part, int):
            continue
        for needle in (f'"{part}"', f"{part}:"):
            found = text.find(needle, pos)
            if found >= 0:
                pos = found
                break
    return text.count("\n", 0, pos) + 1 if pos else 0


class PipelineError(ValueError):
    """Invalid pipeline or IR. ``problems`` lists every issue found, not just the first."""

    def __init__(self, problems: list[Problem] | Problem | str):
        if isinstance(problems, str):
            problems = [Problem(problems)]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))
