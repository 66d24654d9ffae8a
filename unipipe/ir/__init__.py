"""The neutral pipeline IR."""

from unipipe.ir.durations import DurationError, format_duration, parse_duration
from unipipe.ir.errors import PipelineError, Problem
from unipipe.ir.features import Feature, features_used
from unipipe.ir.io import dump_ir, json_schema, load_ir_data, load_ir_file
from unipipe.ir.models import (
    SCHEMA_VERSION,
    Alert,
    Cache,
    Condition,
    DictValue,
    ListValue,
    LiteralInput,
    OutputInput,
    Param,
    ParamInput,
    Pipeline,
    Policies,
    Resources,
    Retry,
    Schedule,
    SourceLocation,
    Task,
)
from unipipe.ir.validate import validate

__all__ = [
    "SCHEMA_VERSION", "Alert", "Cache", "Condition", "DictValue", "DurationError", "Feature",
    "ListValue", "LiteralInput", "OutputInput", "Param", "ParamInput", "Pipeline", "PipelineError",
    "Policies", "Problem", "Resources", "Retry", "Schedule", "SourceLocation", "Task",
    "dump_ir", "features_used", "format_duration", "json_schema", "load_ir_data", "load_ir_file",
    "parse_duration", "validate",
]
