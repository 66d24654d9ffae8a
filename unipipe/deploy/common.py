"""Pieces every deploy target shares: compiling into memory, version dialects, object uploads."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from unipipe.deploy.bundle import LocalFile
from unipipe.deploy.options import InvalidDeploy, Options
from unipipe.deploy.plan import Plan, Step
from unipipe.ir.models import Pipeline


def compile_files(ir: Pipeline, target: str, version: str | None = None, *, opts: Options,
                  **extra: Any) -> tuple[list[LocalFile], list[str]]:
    """Compile into a temp folder; the files in the order the backend wrote them (entry last)
    and the diagnostics as text. ``--set allow_unsupported=true`` warns instead of refusing."""
    from unipipe.compiler.diagnostics import ErrorLevel
    from unipipe.compiler.driver import compile_ir

    level = ErrorLevel.WARN if opts.flag("allow_unsupported") else ErrorLevel.RAISE
    with tempfile.TemporaryDirectory(prefix="unipipe-deploy-") as tmp:
        result = compile_ir(ir, target, Path(tmp), target_version=version, error_level=level, **extra)
        files = [LocalFile(Path(p).resolve().relative_to(Path(tmp).resolve()).as_posix(),
                           Path(p).read_bytes()) for p in result.paths]
    return files, [f"{d.level}: {d}" for d in result.diagnostics]


def dialect(target: str, wanted: str | None) -> str:
    """The backend dialect for a service's version: "2.10.3" -> "2.10", "3.0.6" -> "3.0"
    (or the newest dialect of that major version not newer than it)."""
    from unipipe.compiler.registry import get_backend

    versions: tuple[str, ...] = get_backend(target).versions
    if wanted is None:
        return versions[0]
    if wanted in versions:
        return wanted

    def key(v: str) -> tuple[int, ...]:
        return tuple(int(x) for x in v.split(".") if x.isdigit())

    try:
        want = key(wanted)
    except ValueError:
        want = ()
    if not want:
        raise InvalidDeploy(f"cannot read {target} version {wanted!r}")
    fits = [v for v in versions if key(v)[:1] == want[:1] and key(v)[:2] <= want[:2]]
    if not fits:
        raise InvalidDeploy(f"{target} {wanted} is not a dialect unipipe writes "
                            f"(dialects: {', '.join(versions)})")
    return max(fits, key=key)


def upload_step(plan: Plan, store: Any, key: str, data: bytes, *, inspect: bool,
                on_done: Callable[[str | None], None] | None = None, detail: str = "") -> Step:
    """A step that puts ``data`` at ``key`` unless the remote object already holds these bytes."""
    remote = store.stat(key) if inspect else None
    if not inspect:
        change = "unknown"
    elif remote is None:
        change = "create"
    elif remote.same_as(data):
        change = "unchanged"
    else:
        change = "update"

    def apply() -> str | None:
        version = store.put(key, data)
        if on_done is not None:
            on_done(version)
        return f"version {version}" if version else None

    step = plan.add(Step("upload", store.url(key), change, detail or f"{len(data)} bytes", apply))
    if change == "unchanged" and on_done is not None and remote is not None:
        on_done(remote.version)
    return step


def join_key(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))
