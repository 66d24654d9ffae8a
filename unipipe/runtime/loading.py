"""Importing the user's objects (task functions, callbacks, key functions, exception classes)
from inside a task process.

A module the runtime imports itself is imported in *execution mode*: its ``@up.task`` and
``@up.pipeline`` decorators only wrap the functions and leave the IR (pydantic models, policy
checks, cron parsing) until someone traces a pipeline, because the pipeline was compiled and
checked before the engine ran it. That keeps the per-attempt cost of a task process to the
runtime itself (see comparisons/perf: importing a task module that builds its IR eagerly cost
~0.2 s per attempt). A module already imported (the reference runner's forked attempts, tests)
is used as it is.
"""

from __future__ import annotations

import importlib
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_executing = 0


def executing() -> bool:
    """True while the runtime imports a user module (decorators then defer their IR work)."""
    return _executing > 0


def import_module(name: str) -> Any:
    """The user's module ``name``, imported in execution mode unless it is imported already."""
    global _executing
    if name in sys.modules:
        # through the import system, not sys.modules: another thread may be importing it right
        # now (Prefect runs map elements in threads), and import_module waits for it to finish
        return importlib.import_module(name)
    _executing += 1
    try:
        return importlib.import_module(name)
    finally:
        _executing -= 1


def import_object(path: str) -> Any:
    """The object at ``module:qualname``."""
    module_name, _, qual = path.partition(":")
    obj: Any = import_module(module_name)
    for part in qual.split("."):
        obj = getattr(obj, part)
    return obj
