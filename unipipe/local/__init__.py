"""The reference runner (backend ``local``)."""

from unipipe.local.runner import LocalRunner, ProcessKilled

__all__ = ["LocalRunner", "ProcessKilled"]
