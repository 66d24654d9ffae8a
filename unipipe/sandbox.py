"""Many machines on one: a sandbox per task attempt (``unipipe conform --isolated``).

A sandbox is what a fresh pod or a worker on another machine gives a task: its own HOME,
TMPDIR, XDG folders and working folder, an interpreter that has the engine's third-party
packages (the "image") but neither unipipe nor the user's modules from this checkout, and the
pipeline's code only from its code package (:mod:`unipipe.deploy.package`), fetched from the
shared store. The store is the only medium the attempt shares with any other.

How the interpreter is cut off from the checkout: the workspace installs unipipe and its
backends editable, through ``.pth`` files in site-packages. The sandbox's ``python3`` runs the
same interpreter with ``-S`` (no ``site``: no ``.pth`` file is processed, no user site) and
``PYTHONPATH`` = the unpacked code package, then the interpreter's site-packages folders. So
``import unipipe`` finds the package's copy or nothing.

What a sandbox cannot do here: deny reads by absolute path (no container, no mount namespace).
A task that opens a file of the compiling machine by an absolute path would still find it; a
task that reads a file next to its module, in its working folder, or under HOME does not.
"""

from __future__ import annotations

import io
import os
import shlex
import shutil
import sys
import sysconfig
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

#: variables a sandbox never inherits: they would point it at the harness's machine
_DROP = ("UNIPIPE_CACHE_URL", "UNIPIPE_ARTIFACT_URL", "UNIPIPE_STORE_URL", "PYTHONHOME",
         "PYTHONSTARTUP", "PYTHONUSERBASE", "VIRTUAL_ENV", "OLDPWD")


def code_url(store: str, digest: str) -> str:
    return f"{store.rstrip('/')}/code/{digest}"


def code_pointer(store: str, ir_hash: str) -> str:
    """Where the URL of a pipeline's published code package is kept:
    ``<store>/code/pipelines/<first 16 hex of its IR hash>``. A KFP component compiled with a
    store reads it at start (``unipipe_kubeflow.codegen``): the package's own digest is not known
    when the pipeline is compiled, and must not be, or every change to unipipe would change every
    compiled file. The latest publication of the same IR wins, as an image tag does."""
    return f"{store.rstrip('/')}/code/pipelines/{ir_hash.split(':')[-1][:16]}"


def put(fs: object, path: str, data: bytes) -> None:
    """Write ``data`` at ``path`` on ``fs``, making its folder first (a local store has folders;
    an object store's makedirs does nothing)."""
    fs.makedirs(fs._parent(path), exist_ok=True)  # type: ignore[attr-defined]
    fs.pipe_file(path, data)  # type: ignore[attr-defined]


def publish_code(package: object, store: str, ir_hash: str | None = None) -> str:
    """Upload the code package's wheels to ``<store>/code/<digest>/`` (once: content-addressed)
    and return that folder's URL; with ``ir_hash``, point :func:`code_pointer` at it."""
    wheels = {w.name: w.read_bytes() for w in package.wheels}  # type: ignore[attr-defined]
    return publish_wheels(wheels, package.digest, store, ir_hash)  # type: ignore[attr-defined]


def publish_wheels(wheels: dict[str, bytes], digest: str, store: str,
                   ir_hash: str | None = None) -> str:
    """:func:`publish_code` of wheels already read (name -> bytes)."""
    import fsspec

    url = code_url(store, digest)
    fs, root = fsspec.core.url_to_fs(url)
    for name, data in wheels.items():
        path = f"{root}/{name}"
        if not fs.exists(path):
            put(fs, path, data)
    if ir_hash is not None:
        pfs, pointer = fsspec.core.url_to_fs(code_pointer(store, ir_hash))
        put(pfs, pointer, url.encode())
    return url


def fetch_code(url: str) -> dict[str, bytes]:
    """The wheels under a published code package URL: name -> bytes."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(url)
    names = sorted(p for p in fs.ls(root, detail=False) if p.endswith(".whl"))
    if not names:
        raise FileNotFoundError(f"no code package at {url}")
    return {p.rsplit("/", 1)[-1]: fs.cat_file(p) for p in names}


def engine_site_packages() -> list[str]:
    """The interpreter's own site-packages folders (the engine's packages, as in an image)."""
    paths = sysconfig.get_paths()
    return list(dict.fromkeys(paths[k] for k in ("purelib", "platlib")))


def image_path_entries(path: str, home: str | None = None) -> list[str]:
    """The entries of ``path`` an image would have: those under the account's home folder
    (``pwd``) or under ``home`` left out, the running interpreter's folder kept. Besides
    isolation it spares each task's ``pip`` (KFP's prelude) a process: pip's user agent runs
    ``rustc --version`` when ``rustc`` is on PATH (pip/_internal/network/session.py ~154), and
    ``~/.cargo/bin/rustc`` is a rustup proxy that takes 0.1-0.2 s to answer."""
    import pwd

    homes = {os.path.realpath(h) for h in (home, pwd.getpwuid(os.getuid()).pw_dir) if h}
    homes.discard("/")
    keep = {os.path.realpath(os.path.dirname(sys.executable))}
    out = []
    for entry in path.split(os.pathsep):
        real = os.path.realpath(entry) if entry else entry
        if entry and real not in keep and any(
                real == h or real.startswith(h.rstrip(os.sep) + os.sep) for h in homes):
            continue
        out.append(entry)
    return out


@dataclass(frozen=True)
class Sandbox:
    root: Path

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def site(self) -> Path:
        return self.root / "site"

    @property
    def python(self) -> Path:
        """``python3`` of the sandbox: this interpreter without ``site`` (see the module doc)."""
        return self.root / "bin" / "python3"

    def env(self, base: Mapping[str, str], *, image_path: bool = False) -> dict[str, str]:
        """``base`` as the sandbox's processes see it (see the module doc). ``image_path``: leave
        out of PATH the folders under the account's home and ``base``'s HOME (the user's own
        tools: ``~/.cargo/bin``, ``~/.pyenv/shims``, ...), which a pod's or a worker's image
        does not have; the interpreter's own folder stays (:func:`image_path_entries`)."""
        env = {k: v for k, v in base.items() if k not in _DROP}
        env.update({
            "HOME": str(self.home), "TMPDIR": str(self.tmp), "TMP": str(self.tmp),
            "TEMP": str(self.tmp), "XDG_CACHE_HOME": str(self.home / ".cache"),
            "XDG_CONFIG_HOME": str(self.home / ".config"),
            "XDG_DATA_HOME": str(self.home / ".local" / "share"), "PWD": str(self.work),
            "PYTHONPATH": os.pathsep.join([str(self.site), *engine_site_packages()]),
            "PYTHONNOUSERSITE": "1", "UNIPIPE_SANDBOX": str(self.root),
        })
        path = base.get("PATH", os.defpath)
        if image_path:
            path = os.pathsep.join(image_path_entries(path, base.get("HOME")))
        env["PATH"] = os.pathsep.join([str(self.python.parent), path])
        return env

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def make(root: Path, wheels: Mapping[str, bytes]) -> Sandbox:
    """A fresh sandbox at ``root`` with the code package's wheels unpacked into its site folder
    (pure-Python wheels: unpacking is installing, as ``pip install --target`` would)."""
    box = Sandbox(Path(root))
    if box.root.exists():
        shutil.rmtree(box.root)
    for d in (box.home, box.tmp, box.work, box.site, box.python.parent):
        d.mkdir(parents=True)
    for data in wheels.values():
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            zf.extractall(box.site)
    box.python.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -S \"$@\"\n")
    box.python.chmod(0o755)
    (box.python.parent / "python").symlink_to("python3")
    return box
