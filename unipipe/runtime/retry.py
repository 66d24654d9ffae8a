"""The one retry-delay formula of the IR, and the exception filter.

Retry ``k`` (k = 1 for the second attempt) waits::

    base_k  = delay * backoff ** (k - 1)
    capped  = min(base_k, max_delay)          # when max_delay is set, in every mode
    wait_k  = capped * (1 + jitter * u)       # u uniform in [0, 1); jitter 0 means exact

Jitter only ever lengthens a wait (as Airflow's hash jitter does), so a harness can check
``capped <= wait_k <= capped * (1 + jitter)`` on every backend.
"""

from __future__ import annotations

TYPE_CHECKING = False  # keeps `typing` off the shim's import path; type checkers see True
if TYPE_CHECKING:
    import random
    from collections.abc import Mapping
    from typing import Any


def base_delay(retry: Mapping[str, Any], k: int) -> float:
    """Wait before retry ``k`` (from 1) without jitter: exponential, then capped."""
    if k < 1:
        raise ValueError("retry numbers start at 1")
    delay = float(retry.get("delay", 0.0))
    backoff = float(retry.get("backoff", 1.0))
    try:
        wait = delay * backoff ** (k - 1)
    except OverflowError:
        wait = float("inf")
    cap = retry.get("max_delay")
    if cap is not None:
        wait = min(wait, float(cap))
    return wait


def jitter_extra(retry: Mapping[str, Any], k: int, rng: random.Random | None = None) -> float:
    """The random part of the wait before retry ``k``: ``base * jitter * u``."""
    jitter = float(retry.get("jitter", 0.0))
    if jitter <= 0:
        return 0.0
    if rng is None:
        import random

        rng = random  # type: ignore[assignment]
    u = rng.random()
    return base_delay(retry, k) * jitter * u


def retry_delay(retry: Mapping[str, Any], k: int, rng: random.Random | None = None) -> float:
    return base_delay(retry, k) + jitter_extra(retry, k, rng)


def delay_schedule(retry: Mapping[str, Any]) -> list[float]:
    """Jitter-free waits for every retry: what engines with a delay list (Prefect) take."""
    return [base_delay(retry, k) for k in range(1, int(retry.get("max_retries", 0)) + 1)]


def _resolve(path: str) -> type | None:
    from unipipe.runtime.loading import import_object

    try:
        obj = import_object(path)
    except (ImportError, AttributeError):
        return None
    return obj if isinstance(obj, type) else None


def _matches(exc: BaseException, paths: Any) -> bool:
    names = {f"{c.__module__}:{c.__qualname__}" for c in type(exc).__mro__}
    for path in paths:
        if path in names:
            return True
        cls = _resolve(path)
        if cls is not None and isinstance(exc, cls):
            return True
    return False


def is_retryable(exc: BaseException, retry: Mapping[str, Any] | None) -> bool:
    """``fail_on`` wins; a non-empty ``retry_on`` retries only what it lists."""
    if getattr(exc, "__unipipe_retryable__", True) is False:
        return False
    if not retry:
        return True
    if retry.get("fail_on") and _matches(exc, retry["fail_on"]):
        return False
    if retry.get("retry_on"):
        return _matches(exc, retry["retry_on"])
    return True
