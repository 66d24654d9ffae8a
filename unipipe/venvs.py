"""Virtual environments of their own for engines that cannot share unipipe's environment
(Airflow 2.11; a Prefect server whose scheduler needs SQLAlchemy < 2.1), created with uv on first
use and reused while complete (a marker file holds the requirements they were built from); and
engines' migrated SQLite databases, made once and copied (:func:`sqlite_template`)."""

from __future__ import annotations

import fcntl
import os
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path


def find_uv() -> str:
    """``uv run`` names itself in $UV; else uv on PATH or where its installer puts it."""
    uv = os.environ.get("UV") or shutil.which("uv") or shutil.which(
        "uv", path=str(Path.home() / ".local" / "bin"))
    if uv is None:
        raise RuntimeError("uv is needed to create an engine's own environment "
                           "(python3 -m pip install uv)")
    return uv


def ensure_venv(venv: str | Path, packages: Sequence[str], *,
                constraints: Sequence[str] = ()) -> Path:
    """The interpreter of a virtual environment at ``venv`` holding ``packages`` (pinned by
    ``constraints`` where given), built under a lock so parallel test workers build it once."""
    venv = Path(venv)
    python = venv / "bin" / "python"
    ready = venv / ".unipipe-ready"
    wanted = "\n".join([*packages, *(f"constraint {c}" for c in constraints)]) + "\n"

    def complete() -> bool:
        return python.exists() and ready.exists() and ready.read_text() == wanted

    if complete():
        return python
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f".{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if complete():
            return python
        uv = find_uv()
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([uv, "venv", "--quiet", "--python", "3.11", str(venv)], check=True,
                       timeout=600, stdin=subprocess.DEVNULL)
        cmd = [uv, "pip", "install", "--quiet", "--compile-bytecode", "--python", str(python)]
        if constraints:
            pins = venv / "constraints.txt"
            pins.write_text("\n".join(constraints) + "\n")
            cmd += ["-c", str(pins)]
        subprocess.run([*cmd, *packages], check=True, timeout=1800, stdin=subprocess.DEVNULL)
        ready.write_text(wanted)
    return python


def cache_dir(name: str) -> Path:
    """Where an environment named ``name`` lives: in a checkout of unipipe its git-ignored
    ``.cache/NAME`` (shared by the tests and the CLI); else the user's cache folder."""
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").exists() and (checkout / "backends").is_dir():
        return checkout / ".cache" / name
    from unipipe.runtime.store import user_cache_dir

    return Path(user_cache_dir()) / name


def sqlite_template(db: Path, migrate: Callable[[Path], Path]) -> Path:
    """``db``, a SQLite database an engine migrates once and every later home copies.

    Made under a lock (parallel test workers and lanes make it once): ``migrate(home)`` runs the
    engine's migration in a throwaway folder beside ``db`` and returns the database it made (or
    raises); what is still in that database's write-ahead log goes into the file, which alone
    moves into place (engines set WAL mode on SQLite); the folder goes."""
    if db.exists():
        return db
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if db.exists():
            return db
        home = Path(tempfile.mkdtemp(prefix="migrate-", dir=db.parent))
        try:
            made = migrate(home)
            con = sqlite3.connect(made)
            try:
                con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                con.close()
            os.replace(made, db)
        finally:
            shutil.rmtree(home, ignore_errors=True)
    return db


def installed_pins(*leave_out: str) -> list[str]:
    """``name==version`` of every distribution in this environment but ``leave_out`` (and
    unipipe's own): constraints that give another environment the same versions."""
    from importlib.metadata import distributions

    skip = {n.lower().replace("_", "-") for n in leave_out}
    pins = set()
    for dist in distributions():
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if name and name not in skip and not name.startswith("unipipe"):
            pins.add(f"{name}=={dist.version}")
    return sorted(pins)
