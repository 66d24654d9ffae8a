"""User-facing policy objects (``up.Retry``, ``up.Cache``, ...) and their conversion to IR.

They accept what people write (duration strings, exception classes, ``retries=3``) and fail at
the line that wrote them, naming the field, before any pipeline is traced.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from unipipe.authoring.base import Loc, caller_location, fail, import_path, m
from unipipe.ir.durations import DurationError, parse_duration
from unipipe.runtime.loading import executing

# Loc, caller_location, fail, import_path and m live in unipipe.authoring.base (cheap to import
# inside a task attempt) and are re-exported here for the modules that import them from here
__all__ = ["Alert", "Cache", "Defaults", "Duration", "Loc", "Resources", "Retry",
           "caller_location", "duration", "fail", "import_path", "m", "policies_ir"]

Duration = str | float | int | timedelta


def duration(value: Duration | None, loc: Loc | None, field_name: str) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value, field=field_name)
    except DurationError as exc:
        raise fail(loc, field_name, str(exc)) from None


def _ir(model: type, loc: Loc | None, field_name: str, **kw: Any) -> Any:
    from pydantic import ValidationError

    try:
        return model(**kw)
    except ValidationError as exc:
        first = exc.errors()[0]
        sub = ".".join(str(p) for p in first.get("loc", ()))
        name = f"{field_name}.{sub}" if sub else field_name
        raise fail(loc, name, first.get("msg", "invalid value")) from None


@dataclass
class Retry:
    max_retries: int = 0
    delay: Duration = 0
    backoff: float = 1.0
    max_delay: Duration | None = None
    jitter: float = 0.0
    retry_on: Iterable[type[BaseException] | str] = ()
    fail_on: Iterable[type[BaseException] | str] = ()
    _loc: Loc | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._loc = caller_location(3)
        if not executing():
            self.to_ir()  # fail at the line that wrote it

    def to_ir(self) -> m.Retry:
        loc = self._loc
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int):
            raise fail(loc, "retry.max_retries", "max_retries must be a whole number")
        if self.max_retries < 0:
            raise fail(loc, "retry.max_retries", f"max_retries must be >= 0, got {self.max_retries}")
        return _ir(
            m.Retry, loc, "retry",
            max_retries=self.max_retries,
            delay=duration(self.delay, loc, "retry.delay"),
            backoff=self.backoff,
            max_delay=duration(self.max_delay, loc, "retry.max_delay"),
            jitter=self.jitter,
            retry_on=tuple(import_path(e, loc, "retry.retry_on") for e in self.retry_on),
            fail_on=tuple(import_path(e, loc, "retry.fail_on") for e in self.fail_on),
        )


@dataclass
class Cache:
    expire: Duration | None = None
    version: str = "0"
    key_fn: Callable[..., str] | str | None = None
    _loc: Loc | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._loc = caller_location(3)
        if not executing():
            self.to_ir()

    def to_ir(self) -> m.Cache:
        loc = self._loc
        return _ir(
            m.Cache, loc, "cache",
            version=str(self.version),
            expire=duration(self.expire, loc, "cache.expire"),
            key_fn=import_path(self.key_fn, loc, "cache.key_fn") if self.key_fn else None,
        )


@dataclass
class Resources:
    cpu: str | int | float | None = None
    memory: str | None = None
    gpu: int | None = None
    gpu_type: str | None = None
    _loc: Loc | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._loc = caller_location(3)
        if not executing():
            self.to_ir()

    def to_ir(self) -> m.Resources:
        cpu = None if self.cpu is None else str(self.cpu)
        return _ir(m.Resources, self._loc, "resources", cpu=cpu, memory=self.memory,
                   gpu=self.gpu, gpu_type=self.gpu_type)


@dataclass
class Alert:
    on: Iterable[str] | str = ("failure",)
    webhook: str | None = None
    email: Iterable[str] | str = ()
    callback: Callable[..., Any] | str | None = None
    _loc: Loc | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._loc = caller_location(3)
        if not executing():
            self.to_ir()

    def to_ir(self) -> m.Alert:
        loc = self._loc
        on = (self.on,) if isinstance(self.on, str) else tuple(self.on)
        email = (self.email,) if isinstance(self.email, str) else tuple(self.email)
        if self.webhook is not None and str(self.webhook).split(":", 1)[0] not in (
            "env", "airflow-conn", "airflow-var", "prefect-block"
        ):
            raise fail(loc, "alert.webhook",
                       "webhook must be a secret reference such as 'env:ALERT_WEBHOOK_URL' "
                       "(a URL written in code would be copied into every generated file)")
        cb = import_path(self.callback, loc, "alert.callback") if self.callback else None
        return _ir(m.Alert, loc, "alert", on=on, webhook=self.webhook, email=email, callback=cb)


@dataclass
class Defaults:
    retry: Retry | None = None
    retries: int | None = None
    cache: Cache | bool | None = None
    timeout: Duration | None = None
    resources: Resources | None = None
    image: str | None = None
    alerts: Iterable[Alert] = ()
    _loc: Loc | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._loc = caller_location(3)
        if not executing():
            self.to_ir()

    def to_ir(self) -> m.Policies:
        return policies_ir(self._loc, retry=self.retry, retries=self.retries, cache=self.cache,
                           timeout=self.timeout, resources=self.resources, image=self.image,
                           alerts=self.alerts)


def policies_ir(loc: Loc | None, *, retry: Retry | None, retries: int | None,
                cache: Cache | bool | None, timeout: Duration | None,
                resources: Resources | None, image: str | None,
                alerts: Iterable[Alert] | None) -> m.Policies:
    if retry is not None and retries is not None:
        raise fail(loc, "retries", "give retry= or retries=, not both")
    retry_ir = None
    if retries is not None:
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise fail(loc, "retries", f"retries must be a whole number >= 0, got {retries!r}")
        retry_ir = m.Retry(max_retries=retries)
    elif retry is not None:
        if not isinstance(retry, Retry):
            raise fail(loc, "retry", "retry= takes up.Retry(...)")
        retry_ir = retry.to_ir()
    cache_ir = None
    if cache is True:
        cache_ir = m.Cache()
    elif isinstance(cache, Cache):
        cache_ir = cache.to_ir()
    elif cache not in (None, False):
        raise fail(loc, "cache", "cache= takes True or up.Cache(...)")
    alerts_ir = []
    for a in alerts or ():
        if not isinstance(a, Alert):
            raise fail(loc, "alerts", "alerts= takes a list of up.Alert(...)")
        alerts_ir.append(a.to_ir())
    if resources is not None and not isinstance(resources, Resources):
        raise fail(loc, "resources", "resources= takes up.Resources(...)")
    return _ir(
        m.Policies, loc, "policies",
        retry=retry_ir,
        cache=cache_ir,
        timeout=duration(timeout, loc, "timeout"),
        resources=resources.to_ir() if resources is not None else None,
        image=image,
        alerts=tuple(alerts_ir),
    )
