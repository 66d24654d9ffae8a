"""Finding pipelines: ``path/to/file.py:name``, ``module:name`` or an IR ``.json``/``.yaml`` file."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from unipipe.authoring.modules import module_name_for_file
from unipipe.ir.errors import PipelineError, Problem
from unipipe.ir.models import Pipeline


def import_file(path: str | Path) -> Any:
    name, root = module_name_for_file(path)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    if name in sys.modules and getattr(sys.modules[name], "__file__", None) == str(Path(path).resolve()):
        return sys.modules[name]
    return importlib.import_module(name)


def load_pipeline_object(spec: str) -> Any:
    """The @up.pipeline object (or an IR Pipeline) that ``spec`` names."""
    from unipipe.ir.io import load_ir_file

    target, _, attr = spec.rpartition(":") if ":" in spec else (spec, "", "")
    if not target:
        target, attr = spec, ""
    if target.endswith((".json", ".yaml", ".yml")) and not attr:
        return load_ir_file(target)
    if spec.endswith((".json", ".yaml", ".yml")):
        return load_ir_file(spec)
    if target.endswith(".py"):
        if not Path(target).exists():
            raise PipelineError(Problem("no such file", target))
        module = _guarded_import(lambda: import_file(target), target)
    else:
        module = _guarded_import(lambda: importlib.import_module(target), target)
    if not attr:
        found = [v for v in vars(module).values() if _is_pipeline(v)]
        if len(found) != 1:
            raise PipelineError(Problem(
                f"name the pipeline as {target}:NAME ({len(found)} pipelines found)", target))
        return found[0]
    obj = getattr(module, attr, None)
    if obj is None:
        raise PipelineError(Problem(f"module has no attribute {attr!r}", getattr(module, "__file__", target)))
    if not _is_pipeline(obj):
        raise PipelineError(Problem(f"{attr!r} is not a @up.pipeline", getattr(module, "__file__", target)))
    return obj


def _is_pipeline(obj: Any) -> bool:
    from unipipe.authoring.decorators import PipelineDef

    return isinstance(obj, (PipelineDef, Pipeline))


def _guarded_import(fn: Any, where: str) -> Any:
    try:
        return fn()
    except PipelineError:
        raise
    except SyntaxError as exc:
        raise PipelineError(Problem(f"syntax error: {exc.msg}", exc.filename or where, exc.lineno or 0)) from None
    except ImportError as exc:
        raise PipelineError(Problem(f"cannot import: {exc}", where)) from None


def load_ir(spec: Any) -> Pipeline:
    """IR for anything that names a pipeline: a spec string, a PipelineDef or a Pipeline."""
    from unipipe.authoring.decorators import PipelineDef

    obj = load_pipeline_object(spec) if isinstance(spec, str) else spec
    if isinstance(obj, PipelineDef):
        return obj.ir
    if isinstance(obj, Pipeline):
        return obj
    raise TypeError(f"not a pipeline: {obj!r}")


def unproduced_trigger_assets(ir: Pipeline) -> list[str]:
    """The assets ``ir`` is triggered by that no pipeline of its module produces (a trigger
    that may never fire: the producer may live elsewhere, so this is a warning, not an error)."""
    if ir.trigger is None or not ir.module:
        return []
    module = sys.modules.get(ir.module)
    if module is None:
        return list(ir.trigger.assets)
    produced: set[str] = set()
    for value in vars(module).values():
        if _is_pipeline(value):
            try:
                other = load_ir(value)
            except PipelineError:
                continue
            produced.update(uri for t in other.tasks for uri in t.produces)
    return [uri for uri in ir.trigger.assets if uri not in produced]
