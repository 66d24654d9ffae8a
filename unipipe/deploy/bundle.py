"""What ships next to a compiled pipeline: the user's task modules and the packages it needs."""

from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.metadata
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from unipipe import __version__
from unipipe.deploy.options import InvalidDeploy
from unipipe.ir.models import Pipeline


@dataclass(frozen=True)
class LocalFile:
    """A file to publish: its path relative to the destination folder, and its bytes."""

    relpath: str
    data: bytes

    @property
    def sha256(self) -> str:
        return sha256(self.data)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _is_installed_library(file: Path) -> bool:
    parts = set(file.parts)
    return "site-packages" in parts or "dist-packages" in parts or file.is_relative_to(
        Path(sys.base_prefix) / "lib")


def task_modules(ir: Pipeline) -> list[str]:
    """Dotted names of the modules that hold the pipeline and its task callables."""
    # a command task's callable is unipipe's own runner, shipped as unipipe, never as user code
    names = {t.fn.partition(":")[0] for t in ir.tasks if t.command is None}
    if ir.module:
        names.add(ir.module)
    return sorted(names)


def module_files(ir: Pipeline) -> list[LocalFile]:
    """The user's task modules and their packages' ``__init__.py``, as the import system sees them.

    A module is imported (when the IR came from a JSON file) to find its file; modules that live
    in an installed library are the environment's business (a requirement), not files to upload.
    """
    from unipipe.api import add_to_sys_path, search_path

    add_to_sys_path(search_path(ir))
    out: dict[str, LocalFile] = {}
    for name in task_modules(ir):
        if name == "__main__":
            raise InvalidDeploy("the pipeline's tasks live in __main__: put them in a module file to deploy")
        try:
            mod = sys.modules.get(name) or importlib.import_module(name)
        except ImportError as exc:
            raise InvalidDeploy(f"cannot import task module {name!r} to ship it ({exc}); "
                                "run unipipe from the folder that holds it") from None
        file = getattr(mod, "__file__", None)
        if not file:
            raise InvalidDeploy(f"task module {name!r} has no file to ship")
        path = Path(file).resolve()
        if _is_installed_library(path):
            continue
        parts = name.split(".")
        root = path.parent
        if path.name == "__init__.py":
            parts.append("__init__")
        else:
            parts[-1] = path.stem
        for _ in range(len(parts) - 1):
            root = root.parent
        # the module itself, then every package __init__ on the way down from the root
        pkg = root
        for part in parts[:-1]:
            pkg = pkg / part
            init = pkg / "__init__.py"
            rel = init.relative_to(root).as_posix()
            if init.exists() and rel not in out:
                out[rel] = LocalFile(rel, init.read_bytes())
        rel = path.relative_to(root).as_posix()
        out[rel] = LocalFile(rel, path.read_bytes())
    return [out[k] for k in sorted(out)]


def provider_requirements(sources: list[bytes]) -> list[str]:
    """``apache-airflow-providers-*`` distributions that generated DAG code imports (anywhere)."""
    found: set[str] = set()
    for src in sources:
        for node in ast.walk(ast.parse(src)):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for mod in names:
                parts = mod.split(".")
                if parts[:2] == ["airflow", "providers"] and len(parts) > 2:
                    found.add(_provider_distribution(parts[2:]))
    return sorted(found)


def _provider_distribution(parts: list[str]) -> str:
    """airflow.providers.cncf.kubernetes.x -> apache-airflow-providers-cncf-kubernetes."""
    for n in range(min(len(parts), 3), 0, -1):
        candidate = "apache-airflow-providers-" + "-".join(parts[:n])
        try:
            importlib.metadata.distribution(candidate)
            return candidate
        except importlib.metadata.PackageNotFoundError:
            continue
    return "apache-airflow-providers-" + parts[0]


def _req_name(line: str) -> str:
    match = re.match(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)", line)
    return re.sub(r"[-_.]+", "-", match.group(1)).lower() if match else line.strip()


def _pinned(name: str) -> str:
    """unipipe's own distributions are pinned to the installed version (the DAG was compiled by it)."""
    if _req_name(name).startswith("unipipe"):
        try:
            return f"{name}=={importlib.metadata.version(name)}"
        except importlib.metadata.PackageNotFoundError:
            return f"{name}=={__version__}" if _req_name(name) == "unipipe" else name
    return name


def requirements(*, declared: list[str], providers: list[str], extra: list[str]) -> list[str]:
    """The environment's PyPI packages: what the backend declared next to the DAG (unipipe, its
    runtime adapter, providers), providers the DAG imports, and the user's extras; an extra with
    the name of a listed package replaces it (e.g. ``unipipe @ https://.../unipipe.whl``)."""
    out: dict[str, str] = {}
    for line in declared + providers:
        line = line.strip()
        if line and not line.startswith("#") and _req_name(line) not in out:
            out[_req_name(line)] = _pinned(line) if re.fullmatch(r"[A-Za-z0-9._-]+", line) else line
    for line in extra:
        out[_req_name(line)] = line.strip()
    if "unipipe" not in out:
        out = {"unipipe": _pinned("unipipe"), **out}
    return list(out.values())
