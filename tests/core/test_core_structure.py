"""The core's shape: it imports no backend package, and its modules import each other without
cycles (a cycle shows a responsibility in the wrong module)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "unipipe"
BACKEND_PACKAGES = ("unipipe_airflow", "unipipe_prefect", "unipipe_kubeflow")


def _modules() -> dict[str, tuple[Path, bool]]:
    """Dotted name -> (file, is a package __init__) for every module of the core."""
    out = {}
    for path in sorted(CORE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return out


def _imports(tree: ast.Module, module: str, is_pkg: bool,
             deferred: bool) -> list[tuple[str, int]]:
    """(imported name, line) for the module's imports: module level only (class bodies and
    top-level if/try included, ``if TYPE_CHECKING:`` excluded), or every import when
    ``deferred`` (those inside functions too)."""
    package = module if is_pkg else module.rpartition(".")[0]
    found: list[tuple[str, int]] = []
    todo: list[ast.AST] = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) and not deferred:
            continue
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) \
                and node.test.id == "TYPE_CHECKING":
            todo.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([node.module] if node.module else []))
            # ``from pkg import name``: the submodule pkg.name if there is one, else pkg itself
            found += [(f"{base}.{a.name}", node.lineno) for a in node.names]
        else:
            todo.extend(ast.iter_child_nodes(node))
    return found


def _graph(deferred: bool) -> dict[str, set[str]]:
    mods = _modules()

    def owner(name: str) -> str | None:
        """The core module an imported name belongs to (``unipipe.ir.io.load_ir`` -> io)."""
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, (path, is_pkg) in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        deps = {owner(imp) for imp, _ in _imports(tree, name, is_pkg, deferred)}
        graph[name] = {d for d in deps if d is not None and d != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    comp.append(member)
                    if member == node:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_cycle_finder_finds_a_cycle_and_only_that():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_import_finder_sees_relative_deferred_and_skips_type_checking():
    tree = ast.parse(
        "from . import x\nif TYPE_CHECKING:\n    import t\nelse:\n    import u\n"
        "def f():\n    import v\n")
    top = {n for n, _ in _imports(tree, "unipipe.pkg.mod", False, deferred=False)}
    assert top == {"unipipe.pkg.x", "u"}
    every = {n for n, _ in _imports(tree, "unipipe.pkg.mod", False, deferred=True)}
    assert every == top | {"v"}


def test_the_core_imports_no_backend_package():
    offenders = []
    for name, (path, is_pkg) in _modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for imp, line in _imports(tree, name, is_pkg, deferred=True):
            if imp.split(".")[0] in BACKEND_PACKAGES:
                offenders.append(f"{path.relative_to(ROOT)}:{line} imports {imp}")
        # importlib.import_module("unipipe_prefect...") would dodge the AST check
        text = path.read_text(encoding="utf-8")
        offenders += [f"{path.relative_to(ROOT)} names {pkg}" for pkg in BACKEND_PACKAGES
                      if f'"{pkg}' in text or f"'{pkg}" in text]
    assert offenders == []


@pytest.mark.parametrize("deferred", [False, True], ids=["module-level", "with-deferred"])
def test_no_import_cycle_among_core_modules(deferred):
    """Module-level imports; and also counting imports deferred into functions, since a cycle
    hidden behind a function-level import is still a responsibility in the wrong place."""
    graph = _graph(deferred)
    assert len(graph) > 50 and "unipipe.harness.execute" in graph  # the walk saw the core
    assert "unipipe.ir.validate" in graph["unipipe.ir.io"]  # and its imports
    assert _cycles(graph) == []


def test_lane_service_hook_is_optional_and_airflow_names_its_db_cache(tmp_path):
    from unipipe.compiler.backend import LaneServices, lane_service
    from unipipe.compiler.registry import available, get_backend

    with lane_service(get_backend("local"), tmp_path) as env:
        assert env == {}
    with lane_service(None, tmp_path) as env:
        assert env == {}
    if "airflow" not in available():
        pytest.skip("the airflow backend is not installed")
    airflow = get_backend("airflow")
    assert isinstance(airflow, LaneServices)
    with lane_service(airflow, tmp_path / "lane", {"mode": "scheduler"}) as env:  # no prepared
        # Airflow; the template DB the suite's lanes (the lane folder's siblings) share
        assert env == {"UNIPIPE_AIRFLOW_CACHE": str(tmp_path / "airflow-cache")}
