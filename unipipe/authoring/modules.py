"""The importable name of a user's file: what another process (an engine's task process, a
worker) imports it as, so the import paths written into the IR resolve there too.

Cheap and dependency-free: the decorators use it in execution mode, where no IR is built.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # keeps `typing` off the execution path; type checkers see True
if TYPE_CHECKING:
    from pathlib import Path


def module_name_for_file(path: str | Path) -> tuple[str, Path]:
    """Dotted module name of a file and the folder to put on sys.path to import it that way.

    Walks up through folders that hold an ``__init__.py`` so a file inside a package keeps its
    package-qualified name (other processes can then import it the same way).
    """
    from pathlib import Path  # not at the top: a task attempt imports this module, rarely uses it

    p = Path(path).resolve()
    parts = [p.stem]
    root = p.parent
    while (root / "__init__.py").exists():
        parts.insert(0, root.name)
        root = root.parent
    return ".".join(parts), root


def main_module_name() -> str | None:
    """The importable name of a script run as __main__, so other processes can import it."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if not path:
        return None
    return module_name_for_file(path)[0]
