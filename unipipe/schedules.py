"""When a schedule fires: the reference meaning of ``up.Schedule`` that every engine is compared
with, and what ``unipipe backfill`` creates runs for.

A cron fires at wall-clock times in the schedule's timezone (croniter reads the expression over
naive local times). Across a daylight-saving change:

- a time that does not exist (02:30 on the spring-forward day in Europe/Berlin) fires once, moved
  forward by the gap (03:30 CEST), as PEP 495's default (``fold=0``) resolves it;
- a time that happens twice (02:30 on the fall-back day) fires once, at its first occurrence
  (02:30 CEST).

Engines differ (docs/facts/events-schedules-artifacts.md, measured on the installed engines):
Airflow 3.3 and 2.11 ``CronTriggerTimetable`` fire the fall-back day at the *second* 02:30
(``airflow/timetables/_cron.py`` ``_get_next``), Prefect 3.7's ``CronSchedule.get_dates`` fires
the spring-forward day an hour early (01:30 CET). Each backend declares its difference.

An interval schedule fires at ``start + k * interval``. The window of a schedule is
``[start, end]``; times are timezone-aware datetimes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from unipipe.ir.models import Schedule


class ScheduleError(ValueError):
    """A schedule or a window that cannot be used: exit 2, nothing created."""


def zone(name: str):  # type: ignore[no-untyped-def]
    """The ``zoneinfo`` timezone ``name``, or a clear error."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    if not isinstance(name, str) or not name or name != name.strip() or ".." in name \
            or name.startswith("/"):
        raise ScheduleError(f"unknown timezone {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"unknown timezone {name!r} (use an IANA name such as "
                            f"'Europe/Berlin' or 'UTC')") from None


def parse_when(text: str, tz_name: str = "UTC") -> datetime:
    """An ISO date or date-time; one without an offset is a wall-clock time in ``tz_name``."""
    tz = zone(tz_name)
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00") if isinstance(text, str)
                                       else text)
    except (TypeError, ValueError):
        raise ScheduleError(f"{text!r} is not an ISO date or date-time (2024-01-01 or "
                            f"2024-01-01T06:00)") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=tz)
    return value


def problems(schedule: Schedule) -> list[tuple[str, str]]:
    """What is wrong with a schedule, as (field, reason) pairs."""
    found: list[tuple[str, str]] = []
    try:
        zone(schedule.timezone)
    except ScheduleError as exc:
        found.append(("schedule.timezone", str(exc)))
        return found
    bounds = {}
    for key in ("start", "end"):
        text = getattr(schedule, key)
        if text is not None:
            try:
                bounds[key] = parse_when(text, schedule.timezone)
            except ScheduleError as exc:
                found.append((f"schedule.{key}", str(exc)))
    if "start" in bounds and "end" in bounds and bounds["start"] > bounds["end"]:
        found.append(("schedule.end", f"the schedule ends ({schedule.end}) before it starts "
                      f"({schedule.start})"))
    if schedule.catchup and schedule.start is None:
        found.append(("schedule.catchup", "catchup=True creates the runs missed since start=; "
                      "give the schedule a start"))
    return found


def fire_times(schedule: Schedule, start: datetime, end: datetime,
               limit: int = 100_000) -> list[datetime]:
    """Every time the schedule fires in ``[start, end]`` (clipped to its own window), in the
    schedule's timezone, oldest first."""
    tz = zone(schedule.timezone)
    if start.tzinfo is None or end.tzinfo is None:
        raise ScheduleError("the window's start and end need a timezone")
    if schedule.start is not None:
        start = max(start, parse_when(schedule.start, schedule.timezone))
    if schedule.end is not None:
        end = min(end, parse_when(schedule.end, schedule.timezone))
    out: list[datetime] = []
    if start > end:
        return out
    if schedule.interval is not None:
        origin = parse_when(schedule.start, schedule.timezone) if schedule.start else start
        step = timedelta(seconds=schedule.interval)
        k = max(0, -(-int((start - origin).total_seconds()) // int(schedule.interval)))
        t = origin + k * step
        while t < start:
            t += step
        while t <= end and len(out) < limit:
            out.append(t.astimezone(tz))
            t += step
        return out
    from croniter import croniter

    # croniter over naive wall-clock times; each is then placed in the zone with fold=0
    local_start = start.astimezone(tz).replace(tzinfo=None)
    it = croniter(schedule.cron, local_start - timedelta(microseconds=1))
    seen: set[datetime] = set()
    while len(out) < limit:
        naive = it.get_next(datetime)
        when = naive.replace(tzinfo=tz).astimezone(UTC).astimezone(tz)
        if when > end:
            if naive.replace(tzinfo=tz) > end + timedelta(hours=3):  # past any DST shift
                break
            continue
        if when >= start and when not in seen:
            seen.add(when)
            out.append(when)
    return out


# ---------------------------------------------------------------- a zone's cron as UTC crons


@dataclass(frozen=True)
class UtcSegment:
    """A stretch of a schedule's fire times that one UTC cron gives exactly: ``cron`` fires at
    ``first``, at every reference time after it up to ``last``, and at nothing else between."""

    cron: str
    first: datetime
    last: datetime


def _utc_cron(cron: str, offset: timedelta) -> str | None:
    """``cron`` (wall-clock in a zone ``offset`` ahead of UTC) read in UTC: the minute and hour
    fields moved back by the offset; None when that cannot be written (minutes that move into
    different hours, or an hour that moves to another day while the day fields are not all
    ``*``)."""
    from croniter import croniter

    total = int(offset.total_seconds()) // 60
    if total * 60 != int(offset.total_seconds()):
        return None
    fields = cron.split()
    minutes, hours = croniter(cron).expanded[:2]
    shift_h, shift_m = divmod(total, 60)
    if shift_m:
        if minutes == ["*"]:
            return None
        carries = {(int(m) - shift_m) // 60 for m in minutes}
        if len(carries) != 1:
            return None
        shift_h -= carries.pop()
        fields[0] = ",".join(str(m) for m in sorted((int(m) - shift_m) % 60 for m in minutes))
    if hours == ["*"]:
        return " ".join(fields)
    moved = sorted(int(h) - shift_h for h in hours)
    if moved[0] < 0 or moved[-1] > 23:
        if fields[2:] != ["*", "*", "*"]:  # the day fields would move too
            return None
        moved = sorted(h % 24 for h in moved)  # every day: only the hour changes
    fields[1] = ",".join(str(h) for h in moved)
    return " ".join(fields)


def utc_segments(schedule: Schedule, start: datetime, end: datetime,
                 limit: int = 64) -> list[UtcSegment]:
    """The cron schedule's fire times in ``[start, end]`` as consecutive UTC crons, for an
    engine whose cron has no timezone (KFP): each stretch between daylight-saving changes gets
    the cron moved by that stretch's offset, and a stretch is checked time by time against
    :func:`fire_times` (the moved-forward time of a spring gap stays with the stretch before it,
    the repeated hour of a fall-back day ends one). Raises ScheduleError when a fire time has
    no UTC cron or the window needs more than ``limit`` stretches."""
    from croniter import croniter

    if schedule.cron is None:
        raise ScheduleError("only a cron schedule is split into UTC crons")
    tz = zone(schedule.timezone)
    segments: list[UtcSegment] = []
    expected: datetime | None = None  # the current stretch's cron's next time
    it = None
    for when in fire_times(schedule, start, end):
        at = when.astimezone(UTC)
        if it is not None and expected == at:
            segments[-1] = UtcSegment(segments[-1].cron, segments[-1].first, at)
            expected = it.get_next(datetime)
            continue
        tried = []
        for probe in (at, at - timedelta(hours=3), at + timedelta(hours=3)):
            offset = probe.astimezone(tz).utcoffset()
            assert offset is not None
            cron = _utc_cron(schedule.cron, offset)
            if cron is None or cron in tried:
                continue
            tried.append(cron)
            if croniter(cron, at - timedelta(seconds=1)).get_next(datetime) == at:
                break
        else:
            raise ScheduleError(
                f"cron {schedule.cron!r} in {schedule.timezone} fires at {when.isoformat()}, "
                f"which no UTC cron gives (an offset of part of an hour, or an hour that moves "
                f"to another day in UTC)")
        if len(segments) == limit:
            raise ScheduleError(f"cron {schedule.cron!r} in {schedule.timezone} needs more than "
                                f"{limit} UTC crons in the window")
        segments.append(UtcSegment(cron, at, at))
        it = croniter(cron, at)
        expected = it.get_next(datetime)
    return segments
