"""Duration parsing shared by authoring and IR validation.

Durations are authored as strings ("30s", "5m", "2h", "1h30m", "1.5s", "250ms"), numbers of
seconds, or ``datetime.timedelta``; the IR always stores float seconds so every backend maps from
one unit.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_WHOLE = re.compile(r"^(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w))+$")


class DurationError(ValueError):
    """A duration that cannot be read; the message says what forms are accepted."""


def parse_duration(value: object, *, field: str = "duration") -> float:
    """Return seconds for a duration string, number or timedelta; raise DurationError otherwise."""
    if isinstance(value, bool):
        raise DurationError(f"{field}: expected a duration, got a bool {value!r}")
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        if not text or not _WHOLE.match(text):
            raise DurationError(
                f"{field}: {value!r} is not a duration; use forms like '30s', '5m', '2h', "
                "'1h30m', '250ms', a number of seconds or a timedelta"
            )
        seconds = sum(float(n) * _UNITS[u] for n, u in _PART.findall(text))
    else:
        raise DurationError(f"{field}: expected a duration, got {type(value).__name__}")
    if math.isnan(seconds) or math.isinf(seconds) or seconds < 0:
        raise DurationError(f"{field}: duration must be a finite, non-negative number of seconds")
    return seconds


def format_duration(seconds: float) -> str:
    """Shortest readable string for a number of seconds ("90s" -> "1m30s")."""
    if seconds != int(seconds):
        return f"{seconds:g}s"
    rest = int(seconds)
    if rest == 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(parts)
