"""Report days and their UTC bounds."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from adperf.errors import ConfigError


def zone(name: str) -> ZoneInfo:
    """A ZoneInfo, or a ConfigError naming the bad key."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"unknown time zone {name!r}. Fix: set [adperf] report_timezone to an IANA name "
            "such as Asia/Seoul or America/Los_Angeles"
        ) from None


def day_bounds_utc(first: dt.date, last: dt.date, tz: str) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) of the report days first..last in `tz`, as naive UTC datetimes."""
    z = zone(tz)
    start = dt.datetime.combine(first, dt.time(), tzinfo=z).astimezone(dt.UTC)
    end = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), tzinfo=z).astimezone(dt.UTC)
    return start.replace(tzinfo=None), end.replace(tzinfo=None)


def days(first: dt.date, last: dt.date) -> list[dt.date]:
    """Every day from first to last inclusive."""
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


def month_days(month: dt.date) -> tuple[dt.date, dt.date]:
    """First and last day of the month holding `month`."""
    first = month.replace(day=1)
    nxt = (first + dt.timedelta(days=32)).replace(day=1)
    return first, nxt - dt.timedelta(days=1)
