"""The in-task shim that generated code calls. Small and fast to import: no pydantic, no libcst.

Generated task bodies call :func:`invoke` with a plain-dict task spec. Everything a backend cannot
do natively (cache, cache expiry, exception filters, jitter, timeouts, per-retry alerts) is done
here, once, so every backend shares one implementation of the IR's meaning.
"""

from unipipe.runtime.context import TaskContext, current
from unipipe.runtime.invoke import NonRetryable, TaskTimeout, invoke

__all__ = ["NonRetryable", "TaskContext", "TaskTimeout", "current", "invoke"]
