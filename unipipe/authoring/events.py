"""Time- and event-driven runs, as people write them: ``up.Schedule``, ``up.Asset``, ``up.On``.

Each fails at the line that wrote it, naming the field, before any pipeline is traced.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from unipipe.authoring.policies import Duration, Loc, caller_location, duration, fail, m
from unipipe.runtime.loading import executing

#: schemes an asset URI may not use: Airflow reserves ``airflow://`` (``airflow/sdk/definitions/
#: asset/__init__.py`` ``_sanitize_uri``); ``file`` names one machine's folder, which no
#: other worker or engine service sees
_RESERVED = {"airflow": "the airflow:// scheme is reserved by Airflow"}


class AssetError(ValueError):
    pass


def normalise_asset(uri: Any) -> str:
    """The URI every engine gets for an asset: a lower-case scheme, a location, a sorted query,
    no fragment, no trailing slash, no credentials, ASCII only (Airflow 3 would otherwise store
    ``s3://b/x/`` and ``s3://b/x`` as two assets: docs/facts/events-schedules-artifacts.md)."""
    if not isinstance(uri, str) or not uri.strip():
        raise AssetError("an asset is named by a URI such as 's3://bucket/features/'")
    text = uri.strip()
    if not text.isascii() or any(c.isspace() or c in "'\"\\`" for c in text):
        raise AssetError(f"asset URI {uri!r} must be ASCII with no spaces, quotes or backslashes")
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if not scheme or len(scheme) == 1 or "://" not in text:
        raise AssetError(f"asset URI {uri!r} has no scheme: write s3://bucket/key, "
                         f"gs://bucket/key, postgres://host/db/table, ...")
    if scheme in _RESERVED:
        raise AssetError(f"asset URI {uri!r}: {_RESERVED[scheme]}")
    if parts.username or parts.password or "@" in parts.netloc:
        raise AssetError(f"asset URI {uri!r} holds credentials; name the data, not the login")
    if not parts.netloc:
        raise AssetError(f"asset URI {uri!r} names no bucket or host")
    path = parts.path.rstrip("/")
    query = urlencode(sorted(parse_qsl(parts.query, keep_blank_values=True)))
    norm = urlunsplit((scheme, parts.netloc.lower() if scheme not in ("s3", "gs") else
                       parts.netloc, path, query, ""))
    if len(norm) > 1500:
        raise AssetError(f"asset URI {uri[:60]!r}... is longer than 1500 characters")
    return norm


class Asset:
    """``up.Asset("s3://bucket/features/")``: data that a task updates and a pipeline may be
    triggered by. Two assets with the same normalised URI are the same asset."""

    __slots__ = ("_loc", "uri")

    def __init__(self, uri: str) -> None:
        self._loc = caller_location(2)
        try:
            self.uri = normalise_asset(uri)
        except AssetError as exc:
            if executing():
                self.uri = str(uri)
                return
            raise fail(self._loc, "asset", str(exc)) from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Asset) and other.uri == self.uri

    def __hash__(self) -> int:
        return hash(self.uri)

    def __repr__(self) -> str:
        return f"up.Asset({self.uri!r})"


def asset_uri(value: Any, loc: Loc | None, field_name: str) -> str:
    if isinstance(value, Asset):
        return value.uri
    try:
        return normalise_asset(value)
    except AssetError as exc:
        raise fail(loc, field_name, str(exc)) from None


class On:
    """``up.On(a, b, mode="all"|"any")``: a pipeline trigger on asset updates."""

    def __init__(self, *assets: Asset | str, mode: str = "all") -> None:
        self._loc = caller_location(2)
        self.assets = assets
        self.mode = mode
        if not executing():
            self.to_ir()

    def to_ir(self) -> m.Trigger:
        loc = self._loc
        if not self.assets:
            raise fail(loc, "trigger", "up.On() needs at least one up.Asset")
        if self.mode not in ("all", "any"):
            raise fail(loc, "trigger.mode", f"mode is 'all' or 'any', not {self.mode!r}")
        uris = tuple(asset_uri(a, loc, "trigger") for a in self.assets)
        if len(set(uris)) != len(uris):
            raise fail(loc, "trigger", f"an asset is named twice: {list(uris)}")
        return m.Trigger(assets=uris, mode=self.mode)


def _when_text(value: Any, loc: Loc | None, field_name: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str):
        return value.strip()
    raise fail(loc, field_name, f"{field_name.split('.')[-1]}= takes an ISO date "
               f"('2024-01-01'), a date-time or a datetime, not {value!r}")


@dataclass
class Schedule:
    """``up.Schedule(cron="0 6 * * *", timezone="Europe/Berlin", start="2024-01-01", end=None,
    catchup=False)``, or ``interval="6h"`` instead of a cron."""

    cron: str | None = None
    timezone: str = "UTC"
    start: str | date | None = None
    end: str | date | None = None
    catchup: bool = False
    interval: Duration | None = None
    _loc: Loc | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._loc = caller_location(3)
        if not executing():
            self.to_ir()

    def to_ir(self) -> m.Schedule:
        from unipipe.ir.validate import check_cron
        from unipipe.schedules import problems

        loc = self._loc
        if (self.cron is None) == (self.interval is None):
            raise fail(loc, "schedule", "a schedule is either cron= or interval=, exactly one")
        if self.cron is not None:
            reason = check_cron(self.cron) if isinstance(self.cron, str) else \
                f"cron= takes a string, not {self.cron!r}"
            if reason:
                raise fail(loc, "schedule.cron", reason)
        if not isinstance(self.catchup, bool):
            raise fail(loc, "schedule.catchup", f"catchup is True or False, not {self.catchup!r}")
        interval = None
        if self.interval is not None:
            interval = duration(self.interval, loc, "schedule.interval")
            if not interval:
                raise fail(loc, "schedule.interval", "an interval must be longer than 0s")
        if not isinstance(self.timezone, str):
            raise fail(loc, "schedule.timezone", f"timezone= takes an IANA name, not "
                       f"{self.timezone!r}")
        try:
            ir = m.Schedule(cron=self.cron, interval=interval, timezone=self.timezone,
                            start=_when_text(self.start, loc, "schedule.start"),
                            end=_when_text(self.end, loc, "schedule.end"), catchup=self.catchup)
        except ValueError as exc:
            key = next((k for k in ("start", "end") if k in str(exc)), "schedule")
            raise fail(loc, f"schedule.{key}" if key != "schedule" else key,
                       f"{key}= takes an ISO date or date-time such as '2024-01-01' or "
                       f"'2024-01-01T06:00'") from None
        for where, reason in problems(ir):
            raise fail(loc, where, reason)
        return ir
