"""The compiler: driver, Backend protocol, diagnostics and the backend registry."""

from unipipe.compiler.backend import Backend, CompileOptions, CompileResult, RunOptions
from unipipe.compiler.diagnostics import (
    Diagnostic,
    ErrorLevel,
    Status,
    Support,
    UnsupportedFeature,
    check_features,
)
from unipipe.compiler.registry import available, get_backend

__all__ = [
    "Backend", "CompileOptions", "CompileResult", "Diagnostic", "ErrorLevel", "RunOptions",
    "Status", "Support", "UnsupportedFeature", "available", "check_features", "get_backend",
]
