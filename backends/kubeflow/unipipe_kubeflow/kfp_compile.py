"""Turn a generated module into the PipelineSpec YAML with kfp's own compiler."""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
import uuid
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

    func = load_pipeline(module_path, pipeline_name)
    yaml_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{yaml_path.name}.", suffix=".yaml", dir=yaml_path.parent)
    os.close(fd)
    try:
        compiler.Compiler().compile(func, tmp)
        os.replace(tmp, yaml_path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return yaml_path
