"""A user's pipeline file written by a test, and the line a marker sits on (for the
file:line [field] assertions of the authoring errors)."""

from __future__ import annotations

import textwrap
import uuid
from pathlib import Path

HEADER = "import unipipe as up\n\n"


def user_module(tmp_path: Path, body: str, prefix: str = "userpipe") -> Path:
    """``body`` (dedented, after ``import unipipe as up``) in a file with a module name of its
    own, so modules written by different tests never collide in ``sys.modules``."""
    path = tmp_path / f"{prefix}_{uuid.uuid4().hex[:8]}.py"
    path.write_text(HEADER + textwrap.dedent(body))
    return path


def line_of(path: Path, needle: str) -> int:
    """The first line of ``path`` that contains ``needle`` (1-based)."""
    return next(i for i, ln in enumerate(path.read_text().splitlines(), 1) if needle in ln)
