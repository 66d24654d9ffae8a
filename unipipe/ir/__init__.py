"""The neutral pipeline IR.

Names load lazily (as in ``unipipe/__init__.py``): importing ``unipipe.ir.errors`` or
``unipipe.ir.durations`` must not pay for pydantic, because a task process imports the user's
module (and through its decorators, those two) without needing the models.
"""

from __future__ import annotations

_MODELS = ("SCHEMA_VERSION", "Alert", "Cache", "Condition", "DictValue", "ListValue",
           "LiteralInput", "OutputInput", "Param", "ParamInput", "Pipeline", "Policies",
           "Resources", "Retry", "Schedule", "SourceLocation", "Task")
_EXPORTS = {
    **{name: "unipipe.ir.models" for name in _MODELS},
    "DurationError": "unipipe.ir.durations",
    "format_duration": "unipipe.ir.durations",
    "parse_duration": "unipipe.ir.durations",
    "PipelineError": "unipipe.ir.errors",
    "Problem": "unipipe.ir.errors",
    "Feature": "unipipe.ir.features",
    "features_used": "unipipe.ir.features",
    "dump_ir": "unipipe.ir.io",
    "json_schema": "unipipe.ir.io",
    "load_ir_data": "unipipe.ir.io",
    "load_ir_file": "unipipe.ir.io",
    "validate": "unipipe.ir.validate",
}

__all__ = sorted(_EXPORTS)

from unipipe._lazy import lazy_exports  # noqa: E402 - after the table it serves

__getattr__, __dir__ = lazy_exports("unipipe.ir", _EXPORTS, globals())
