"""A pipeline's code package: the wheels a worker installs to run its tasks, content-addressed.

``build_code_package(ir, search_path, out_dir, backends)`` writes into ``out_dir`` (a folder that
then holds only these wheels):

- ``unipipe`` (the core: the runtime every generated task calls) and the wheel of each backend
  asked for (``airflow`` -> ``unipipe-airflow``, ...), built from the workspace checkout with
  ``uv build --wheel --package NAME`` and cached by a hash of their sources (``UNIPIPE_WHEEL_CACHE``,
  default ``~/.cache/unipipe/wheels``), so a second build copies them;
- the pipeline's code wheel ``unipipe-code-<pipeline>``: the user's own top-level modules and
  packages that the IR names by import path (task callables, alert callbacks, cache key
  functions, retry_on/fail_on exception classes), found in ``search_path`` only (modules of the
  standard library or of installed distributions are the environment's business). It is written
  here byte for byte (sorted entries, fixed timestamps and permissions, RECORD hashes), so the
  same sources give the same bytes; its version is ``0+<first 12 hex of its content digest>``.

A worker installs the package with ``pip install --find-links <folder> <requirements...>``;
the requirements pin every wheel by name and version.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from unipipe.compiler.registry import own_top_level
from unipipe.ir.models import Alert, Pipeline, Policies

#: backend name (as in ``--target``) -> the distribution that holds it
BACKEND_DISTRIBUTIONS = {"airflow": "unipipe-airflow", "prefect": "unipipe-prefect",
                         "kubeflow": "unipipe-kubeflow"}

#: 1980-01-01 00:00:00, the earliest time a zip entry can hold (what reproducible wheels use)
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
_SKIP_DIRS = frozenset({"__pycache__", ".git", ".hg", ".svn", ".mypy_cache", ".pytest_cache",
                        ".ruff_cache", ".venv", "node_modules"})


class PackageError(ValueError):
    """The code package cannot be built from this input (exit 2: nothing written)."""


@dataclass(frozen=True)
class CodePackage:
    digest: str  # sha256 hex, content address of the whole package (same inputs -> same digest)
    folder: Path  # a folder holding only the wheels below
    wheels: tuple[Path, ...]  # unipipe core, each backend asked for, the pipeline's code wheel (last)
    requirements: tuple[str, ...]  # "name==version" for each wheel, for pip --find-links <folder>

    @property
    def code_wheel(self) -> Path:
        return self.wheels[-1]


# ------------------------------------------------------------------ what the IR references


def import_paths(ir: Pipeline) -> list[str]:
    """Every ``module:qualname`` the IR holds, in a stable order."""
    found: dict[str, None] = {}

    def alerts(items: Iterable[Alert]) -> None:
        for a in items:
            if a.callback:
                found[a.callback] = None

    def policies(p: Policies) -> None:
        if p.retry is not None:
            for path in (*p.retry.retry_on, *p.retry.fail_on):
                found[path] = None
        if p.cache is not None and p.cache.key_fn:
            found[p.cache.key_fn] = None
        alerts(p.alerts)

    for t in ir.tasks:
        found[t.fn] = None
        policies(t.policies)
    policies(ir.defaults)
    alerts(ir.alerts)
    return list(found)


def referenced_modules(ir: Pipeline) -> list[str]:
    """Dotted module names the IR references (the pipeline's own module included)."""
    names = {p.partition(":")[0] for p in import_paths(ir)}
    if ir.module and ir.module != "__main__":
        names.add(ir.module)
    return sorted(names)


def _is_installed(path: Path) -> bool:
    parts = set(path.parts)
    if "site-packages" in parts or "dist-packages" in parts:
        return True
    stdlib = Path(sys.base_prefix).resolve() / "lib"
    return path.is_relative_to(stdlib)


def _locate(top: str, search_path: Sequence[Path]) -> Path | None:
    """The file (``top.py``) or folder (a package, regular or namespace) ``top`` imports from,
    looking in ``search_path`` in order, as the import system would."""
    for folder in search_path:
        pkg = folder / top
        if (pkg / "__init__.py").is_file():
            return pkg
        mod = folder / f"{top}.py"
        if mod.is_file():
            return mod
    for folder in search_path:  # namespace packages lose to modules anywhere on the path
        if (folder / top).is_dir() and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", top):
            return folder / top
    return None


def user_sources(ir: Pipeline, search_path: Sequence[str | Path]) -> dict[str, bytes]:
    """relpath -> bytes of the user's top-level modules/packages the IR references, from
    ``search_path`` only. A task module found nowhere there (and not importable otherwise) is an
    error: no worker could import it."""
    import importlib.util

    folders = [Path(p).resolve() for p in search_path]
    out: dict[str, bytes] = {}
    tops = sorted({m.split(".")[0] for m in referenced_modules(ir)})
    task_tops = {t.fn.split(":")[0].split(".")[0] for t in ir.tasks}
    for top in tops:
        if top in own_top_level():  # unipipe's own wheels, never the user's code wheel
            continue
        where = _locate(top, folders)
        if where is None or _is_installed(where.resolve()):
            if top in task_tops and where is None and top not in sys.builtin_module_names:
                try:
                    spec = importlib.util.find_spec(top)
                except (ImportError, ValueError):
                    spec = None
                origin = getattr(spec, "origin", None) if spec is not None else None
                if origin in (None, "built-in", "frozen") or not _is_installed(Path(origin).resolve()):
                    if origin not in ("built-in", "frozen"):
                        raise PackageError(f"task module {top!r} is not in the search path "
                                           f"({', '.join(map(str, folders)) or 'empty'}) nor an "
                                           "installed distribution: no worker could import it")
            continue
        root = where.parent
        if where.is_file():
            out[where.name] = where.read_bytes()
            continue
        for dirpath, dirnames, filenames in os.walk(where):
            dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
            for name in sorted(filenames):
                if name.startswith(".") or name.endswith((".pyc", ".pyo")):
                    continue
                file = Path(dirpath) / name
                if file.is_file():
                    out[file.relative_to(root).as_posix()] = file.read_bytes()
    return dict(sorted(out.items()))


# ------------------------------------------------------------------ writing a wheel


def normalise(name: str) -> str:
    """PEP 503 name: lower case, runs of ``-_.`` as one ``-``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def write_wheel(folder: Path, name: str, version: str, files: dict[str, bytes], *,
                requires: Sequence[str] = (), summary: str = "") -> Path:
    """A pure-Python ``py3-none-any`` wheel of ``files`` (relpath -> bytes), byte-deterministic."""
    dist = re.sub(r"[-_.]+", "_", name).lower()
    info = f"{dist}-{version}.dist-info"
    meta = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    if summary:
        meta.append(f"Summary: {summary}")
    meta += [f"Requires-Dist: {r}" for r in requires]
    entries = dict(sorted(files.items()))
    entries[f"{info}/METADATA"] = ("\n".join(meta) + "\n").encode()
    entries[f"{info}/WHEEL"] = (b"Wheel-Version: 1.0\nGenerator: unipipe\nRoot-Is-Purelib: true\n"
                                b"Tag: py3-none-any\n")
    entries[f"{info}/top_level.txt"] = "".join(
        sorted({p.split("/")[0].removesuffix(".py") + "\n" for p in files})).encode()
    record = "".join(f"{p},{_record_hash(d)},{len(d)}\n" for p, d in entries.items())
    entries[f"{info}/RECORD"] = (record + f"{info}/RECORD,,\n").encode()
    # files in name order, then the dist-info (RECORD last), as wheel builders write them
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, data in entries.items():
            zi = zipfile.ZipInfo(path, date_time=_ZIP_TIME)
            zi.external_attr = 0o100644 << 16
            zi.compress_type = zipfile.ZIP_DEFLATED
            zi.create_system = 3
            zf.writestr(zi, data, compresslevel=9)
    target = folder / f"{dist}-{version}-py3-none-any.whl"
    target.write_bytes(buf.getvalue())
    return target


# ------------------------------------------------------------------ unipipe's own wheels


def workspace_root() -> Path:
    """The checkout unipipe runs from (its pyproject.toml names the project ``unipipe``)."""
    import unipipe

    root = Path(unipipe.__file__).resolve().parents[1]
    pyproject = root / "pyproject.toml"
    if pyproject.is_file():
        data = tomllib.loads(pyproject.read_text())
        if data.get("project", {}).get("name") == "unipipe":
            return root
    raise PackageError("the code package needs unipipe's source checkout to build its wheels "
                       f"(unipipe is imported from {root}, which is not one)")


def _members(root: Path) -> dict[str, Path]:
    """distribution name -> its project folder, for the workspace's root and members."""
    data = tomllib.loads((root / "pyproject.toml").read_text())
    out = {normalise(data["project"]["name"]): root}
    for member in data.get("tool", {}).get("uv", {}).get("workspace", {}).get("members", []):
        for folder in sorted(root.glob(member)):
            py = folder / "pyproject.toml"
            if py.is_file():
                out[normalise(tomllib.loads(py.read_text())["project"]["name"])] = folder
    return out


def source_hash(project: Path) -> str:
    """sha256 over what goes into the project's wheel: pyproject.toml, its readme, and every file
    of the packages ``[tool.hatch.build.targets.wheel]`` names (caches and bytecode skipped)."""
    data = tomllib.loads((project / "pyproject.toml").read_text())
    files = [project / "pyproject.toml"]
    readme = data.get("project", {}).get("readme")
    if isinstance(readme, str) and (project / readme).is_file():
        files.append(project / readme)
    packages = data.get("tool", {}).get("hatch", {}).get("build", {}).get("targets", {}) \
        .get("wheel", {}).get("packages") or [normalise(data["project"]["name"]).replace("-", "_")]
    for pkg in packages:
        for dirpath, dirnames, filenames in os.walk(project / pkg):
            dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS]
            files += [Path(dirpath) / f for f in filenames if not f.endswith((".pyc", ".pyo"))]
    h = hashlib.sha256()
    for f in sorted(files):
        h.update(f.relative_to(project).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def wheel_cache() -> Path:
    env = os.environ.get("UNIPIPE_WHEEL_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "unipipe" / "wheels"


def project_wheel(name: str) -> Path:
    """The wheel of workspace distribution ``name``, built once per source hash."""
    root = workspace_root()
    members = _members(root)
    key = normalise(name)
    if key not in members:
        raise PackageError(f"{name!r} is not a distribution of the unipipe workspace "
                           f"({', '.join(sorted(members))})")
    project = members[key]
    slot = wheel_cache() / f"{key}-{source_hash(project)[:24]}"
    found = sorted(slot.glob("*.whl")) if slot.is_dir() else []
    if len(found) == 1:
        return found[0]
    slot.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{key}-", dir=slot.parent) as tmp:
        uv = shutil.which("uv")
        if uv:
            cmd = [uv, "build", "--wheel", "--package", key, "--out-dir", tmp, "--quiet"]
        else:
            cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", tmp, str(project)]
        # hatchling writes reproducible wheels (fixed timestamps) with SOURCE_DATE_EPOCH unset
        env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
        proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, env=env)
        built = sorted(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or len(built) != 1:
            raise PackageError(f"building the {key} wheel failed ({' '.join(cmd)}): "
                               f"{(proc.stderr or proc.stdout).strip()[-2000:]}")
        staged = Path(tmp) / "slot"
        staged.mkdir()
        shutil.move(str(built[0]), staged / built[0].name)
        try:
            staged.rename(slot)
        except OSError:  # another build filled the slot first: theirs is the same wheel
            if not slot.is_dir():
                raise
    return sorted(slot.glob("*.whl"))[0]


def _wheel_name_version(wheel: Path) -> tuple[str, str]:
    name, version = wheel.name.split("-")[:2]
    return normalise(name), version


# ------------------------------------------------------------------ the package


def code_distribution(ir: Pipeline) -> str:
    return f"unipipe-code-{normalise(ir.name)}"


def build_code_package(ir: Pipeline, search_path: Sequence[str | Path], out_dir: Path,
                       backends: Sequence[str] = ()) -> CodePackage:
    """Write the package's wheels into ``out_dir`` (emptied of other wheels) and describe them."""
    dists = ["unipipe"]
    for b in backends:
        b = b.partition("@")[0]
        dist = BACKEND_DISTRIBUTIONS.get(b, b if b.startswith("unipipe-") else None)
        if dist is None:
            raise PackageError(f"no backend distribution for {b!r} "
                               f"(known: {', '.join(sorted(BACKEND_DISTRIBUTIONS))})")
        if dist not in dists:
            dists.append(dist)
    built = [project_wheel(d) for d in dists]
    core_version = _wheel_name_version(built[0])[1]

    sources = user_sources(ir, search_path)
    h = hashlib.sha256(code_distribution(ir).encode() + b"\0")
    for rel, data in sources.items():
        h.update(rel.encode() + b"\0" + hashlib.sha256(data).digest())
    version = f"0+{h.hexdigest()[:12]}"

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*.whl"):
        old.unlink()
    wheels: list[Path] = []
    for src in built:
        dst = out_dir / src.name
        shutil.copyfile(src, dst)
        wheels.append(dst)
    wheels.append(write_wheel(out_dir, code_distribution(ir), version, sources,
                              requires=[f"unipipe=={core_version}"],
                              summary=f"task code of unipipe pipeline {ir.name}"))
    reqs = tuple(f"{n}=={v}" for n, v in map(_wheel_name_version, wheels))
    total = hashlib.sha256()
    for w in wheels:
        total.update(w.name.encode() + b"\0" + hashlib.sha256(w.read_bytes()).digest())
    return CodePackage(digest=total.hexdigest(), folder=out_dir, wheels=tuple(wheels),
                       requirements=reqs)


# ------------------------------------------------------------------ reading wheels back


def wheel_files(wheel: Path) -> dict[str, bytes]:
    """relpath -> bytes of what a wheel installs into site-packages (its .dist-info left out)."""
    with zipfile.ZipFile(wheel) as zf:
        return {n: zf.read(n) for n in sorted(zf.namelist())
                if not n.endswith("/") and ".dist-info/" not in n}


def wheel_requires(wheel: Path) -> list[str]:
    """The wheel's unconditional ``Requires-Dist`` lines (extras and markers left out)."""
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        text = zf.read(meta).decode()
    return [line.split(":", 1)[1].strip() for line in text.splitlines()
            if line.startswith("Requires-Dist:") and ";" not in line]


def deterministic_zip(entries: dict[str, bytes]) -> bytes:
    """A zip of ``entries`` in name order with fixed timestamps and permissions."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(entries):
            zi = zipfile.ZipInfo(path, date_time=_ZIP_TIME)
            zi.external_attr = 0o100644 << 16
            zi.compress_type = zipfile.ZIP_DEFLATED
            zi.create_system = 3
            zf.writestr(zi, entries[path], compresslevel=9)
    return buf.getvalue()
