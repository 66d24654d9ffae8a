"""How an IR retry policy becomes Airflow task arguments, per dialect.

The IR waits ``delay * backoff ** (k - 1)`` before retry k, capped by ``max_delay``, lengthened by
up to ``jitter`` times itself. Airflow's own exponential mode is close but not equal: it rounds
the base up to whole seconds, adds a deterministic hash jitter in ``[b, 2b - 1]`` and applies
``max_retry_delay`` only in that mode (BACKEND_FACTS.md section 1). So, by default (``exact``):

- constant delay, no jitter: native ``retry_delay`` -- exact on every dialect;
- Airflow 3.3+: anything else goes through a ``retry_policy`` that runs in the worker after each
  failed try and returns the IR's exact wait (and the exception filter's verdict), which the
  scheduler honours as ``retry_delay_override``;
- older dialects: the engine retries with no delay (or the constant part) and the unipipe shim
  sleeps the IR wait (``retry.delay``) or only its jitter (``retry.jitter``) at the start of the
  next try; the exception filter becomes an ``AirflowFailException`` raised by the adapter.

``backoff="airflow"`` opts into Airflow's native exponential mode instead (float multiplier on
3.1+, the bool x2 flag before), accepting its hash jitter; the difference is reported as a
warning diagnostic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from unipipe.ir.models import Retry
from unipipe_airflow.dialects import Dialect

BACKOFF_MODES = ("exact", "airflow")


@dataclass(frozen=True)
class Seconds:
    """A duration argument; the generator writes it as ``timedelta(...)``."""

    value: float


@dataclass(frozen=True)
class Policy:
    """``retry_policy=UnipipeRetry({...})`` with the IR retry as a plain dict."""

    retry: dict[str, Any]
    #: False: the policy only filters; Airflow's own delay applies to retries it allows
    delays: bool = True
    #: the task runs in a pod: the verdict on the exception comes from the pod's shim
    pod: bool = False


@dataclass
class RetryPlan:
    kwargs: dict[str, Any] = field(default_factory=dict)
    emulate: set[str] = field(default_factory=set)
    #: the engine's retry_policy applies the exception filter (else the adapter does)
    engine_filter: bool = False
    notes: list[str] = field(default_factory=list)


def plan_retry(retry: Retry | None, dialect: Dialect, backoff: str = "exact") -> RetryPlan:
    if backoff not in BACKOFF_MODES:
        raise ValueError(f"backoff mode is one of {BACKOFF_MODES}, not {backoff!r}")
    plan = RetryPlan()
    if retry is None or retry.max_retries == 0:
        return plan
    plan.kwargs["retries"] = retry.max_retries
    exponential = retry.backoff != 1.0
    filtered = bool(retry.retry_on or retry.fail_on)

    if exponential and backoff == "airflow" and (dialect.float_backoff or retry.backoff == 2.0):
        plan.kwargs["retry_delay"] = Seconds(retry.delay)
        plan.kwargs["retry_exponential_backoff"] = (
            float(retry.backoff) if dialect.float_backoff else True)
        if retry.max_delay is not None:
            plan.kwargs["max_retry_delay"] = Seconds(retry.max_delay)
        plan.notes.append(
            "backoff='airflow': Airflow rounds each wait up to whole seconds and adds a hash "
            "jitter in [b, 2b-1] before max_retry_delay; the IR formula has neither")
        if retry.jitter > 0:
            plan.emulate.add("retry.jitter")
        exponential = False  # handled
        needs_policy = dialect.retry_policy and filtered
    else:
        needs_policy = dialect.retry_policy and (exponential or retry.jitter > 0 or filtered)
        if needs_policy or not exponential:
            # The policy overrides the wait on every retry; retry_delay still documents the base.
            plan.kwargs["retry_delay"] = Seconds(retry.delay)
        else:
            plan.kwargs["retry_delay"] = Seconds(0.0)
            plan.emulate.add("retry.delay")
        if not needs_policy and not exponential and retry.jitter > 0:
            plan.emulate.add("retry.jitter")

    if needs_policy:
        plan.kwargs["retry_policy"] = Policy(retry.model_dump(mode="json"),
                                             delays="retry_exponential_backoff" not in plan.kwargs)
        plan.engine_filter = True
    return plan
