"""Turn a generated module into the PipelineSpec YAML with kfp's own compiler."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path


def load_pipeline(module_path: Path, pipeline_name: str):  # type: ignore[no-untyped-def]
    """Import a generated module from its file and return its ``@dsl.pipeline`` function.

    The module gets a unique name, so two pipelines (or two versions of one) never clash; it
    stays in sys.modules because kfp reads component sources through ``inspect``.
    """
    mod_name = f"_unipipe_kfp_{uuid.uuid4().hex[:12]}"
    spec = importlib.util.spec_from_file_location(mod_name, module_path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    spec.loader.exec_module(module)
    return getattr(module, pipeline_name)


def compile_yaml(module_path: Path, pipeline_name: str, yaml_path: Path) -> Path:
    """kfp.compiler.Compiler().compile(...) into a temp file, then an atomic rename."""
    from kfp import compiler

    with kfp_speedups():  # kfp builds the whole PipelineSpec while the module is imported
        func = load_pipeline(module_path, pipeline_name)
    yaml_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{yaml_path.name}.", suffix=".yaml", dir=yaml_path.parent)
    os.close(fd)
    try:
        with kfp_speedups():
            compiler.Compiler().compile(func, tmp)
        os.replace(tmp, yaml_path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return yaml_path


# ------------------------------------------------------------------ faster, byte-identical kfp

def _unique_name(name: str, collection: list[str], delimiter: str) -> str:
    """``kfp.dsl.utils.make_name_unique_by_adding_index`` with a set: the same answer (the
    smallest free index from 2), without a list scan per candidate (O(n) per candidate there)."""
    if name not in collection:
        return name
    taken = set(collection)
    i = 2
    while f"{name}{delimiter}{i}" in taken:
        i += 1
    return f"{name}{delimiter}{i}"


@contextlib.contextmanager
def kfp_speedups() -> Iterator[None]:
    """Make kfp's compiler linear-time where it is quadratic, without changing a byte it writes.

    kfp 2.16 re-sanitises every task name of a DAG once per task (``build_spec_by_group``: a
    regex per name, n^2 calls), finds a free task name by scanning a list per candidate index
    (``make_name_unique_by_adding_index``: n^2 to n^3 when one component is called n times).
    Here the sanitiser (a pure function of a string) is memoised and the free-name search uses a
    set. (libyaml's emitter would halve the YAML writing but folds long strings differently, so
    the bytes would change: left alone.) ``UNIPIPE_KFP_SPEEDUPS=0`` compiles with kfp untouched; a test checks that
    both give the same bytes.
    """
    if os.environ.get("UNIPIPE_KFP_SPEEDUPS", "1") == "0":
        yield
        return
    from kfp.dsl import utils

    saved = {name: getattr(utils, name) for name in
             ("maybe_rename_for_k8s", "sanitize_task_name", "make_name_unique_by_adding_index")}
    try:
        rename = functools.lru_cache(maxsize=None)(saved["maybe_rename_for_k8s"])
        utils.maybe_rename_for_k8s = rename
        utils.sanitize_task_name = rename  # kfp's sanitize_task_name is exactly this call
        utils.make_name_unique_by_adding_index = _unique_name
        yield
    finally:
        for name, fn in saved.items():
            setattr(utils, name, fn)
