"""Days of ad accounts in their own time zone, and their re-cut into report days.

An ad platform reports each account's days in the account's zone (Facebook
`AdAccount.timezone_name`, Google Ads `customer.time_zone`); neither can report in another zone.
Two ways to put such an account in a report kept in `report_timezone` (`[adperf] account_days`):

- `account` (the default): an account's day D is its own calendar day D, as the platforms' UIs,
  the MMP dashboards and the common connectors show it; the report says which accounts are
  offset and by how many hours.
- `report`: the account's hourly rows (Facebook's `hourly_stats_aggregated_by_advertiser_time_zone`
  breakdown, Google Ads `segments.hour`, both in the account's zone) are summed into the report
  zone's days, exactly. A zone whose offset from the report zone is not a whole number of hours
  (Asia/Kolkata against Asia/Seoul: 3 h 30 min) would split an hour between two report days:
  refused by name. So is an hour that occurs twice (the hour a DST change repeats), which the
  platforms report as one row, when its two occurrences fall on different report days.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any
from zoneinfo import ZoneInfo

from adperf.errors import ConfigError
from adperf.timeutil import zone

ACCOUNT = "account"
REPORT = "report"
MODES = (ACCOUNT, REPORT)

_HOUR = dt.timedelta(hours=1)
_DAY = dt.timedelta(days=1)


def check_mode(mode: str) -> str:
    """`mode` if it is one of MODES, else a ConfigError naming the key."""
    if mode not in MODES:
        raise ConfigError(
            f"[adperf] account_days = {mode!r}. Fix: set it to 'account' (each ad account's "
            "own calendar days, the default) or 'report' (spend re-cut into report_timezone "
            "from hourly rows)"
        )
    return mode


def local_range(
    first: dt.date, last: dt.date, account_zone: str, report_zone: str
) -> tuple[dt.date, dt.date]:
    """The account's local days that overlap the report days first..last."""
    rz, az = zone(report_zone), zone(account_zone)
    start = dt.datetime.combine(first, dt.time(), tzinfo=rz)
    end = dt.datetime.combine(last + _DAY, dt.time(), tzinfo=rz)
    return start.astimezone(az).date(), (end.astimezone(az) - dt.timedelta(microseconds=1)).date()


def offset_hours(account_zone: str, report_zone: str, day: dt.date) -> float:
    """How many hours the account's clock is ahead (+) or behind (-) the report's, at the
    start of report day `day` (it changes with either zone's DST)."""
    at = dt.datetime.combine(day, dt.time(), tzinfo=zone(report_zone))
    account = at.astimezone(zone(account_zone)).utcoffset() or dt.timedelta()
    report = at.utcoffset() or dt.timedelta()
    return (account - report).total_seconds() / 3600


def describe_offset(hours: float) -> str:
    """'17 h behind', '1 h ahead', '3.5 h ahead'."""
    size = abs(hours)
    text = f"{size:g} h"
    return f"{text} behind" if hours < 0 else f"{text} ahead"


def hour_label(value: object) -> int:
    """The local hour of Facebook's `hourly_stats_aggregated_by_advertiser_time_zone`
    ('13:00:00 - 13:59:59') or of Google Ads' `segments.hour` (13); ValueError otherwise."""
    if isinstance(value, int) and not isinstance(value, bool):
        hour = value
    elif isinstance(value, str) and len(value) >= 2 and value[:2].isdigit():
        hour = int(value[:2])
        if value[2:3] not in ("", ":"):
            raise ValueError(f"not an hour: {value!r}")
    else:
        raise ValueError(f"not an hour: {value!r}")
    if not 0 <= hour <= 23:
        raise ValueError(f"not an hour: {value!r}")
    return hour


def recut_to_report_days(
    records: Iterable[dict[str, Any]],
    *,
    metrics: Sequence[str],
    key: Sequence[str],
    account_zone: str,
    report_zone: str,
    first: dt.date,
    last: dt.date,
    what: str,
) -> list[dict[str, Any]]:
    """Hourly records (`date` and `hour` in the account's zone) summed into report days.

    Records of one (date, hour, *key) must come once (ValueError naming it otherwise). The
    result has one record per (report date, *key) within first..last, `date` being the report
    day and no `hour`; the other fields are the first hourly record's. Raises ConfigError for an
    hour that would fall on two report days (see the module docstring); `what` names the
    account in messages.
    """
    az, rz = zone(account_zone), zone(report_zone)
    first_iso, last_iso = first.isoformat(), last.isoformat()
    day_of: dict[tuple[str, int], str] = {}
    seen: set[tuple[Any, ...]] = set()
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in records:
        local = (str(r["date"]), int(r["hour"]))
        ident = (*local, *(r[k] for k in key))
        if ident in seen:
            raise ValueError(f"{what}: two rows for {', '.join(map(str, ident))}")
        seen.add(ident)
        day = day_of.get(local)
        if day is None:
            day = day_of[local] = _report_day(local, az, rz, what)
        if not first_iso <= day <= last_iso:
            continue
        slot = (day, *(r[k] for k in key))
        have = out.get(slot)
        if have is None:
            out[slot] = {**{k: v for k, v in r.items() if k != "hour"}, "date": day}
        else:
            for m in metrics:
                have[m] += r[m]
    return list(out.values())


def _report_day(local: tuple[str, int], az: ZoneInfo, rz: ZoneInfo, what: str) -> str:
    """The report day of one local (date, hour) bucket; ConfigError when it has none."""
    date, hour = dt.date.fromisoformat(local[0]), local[1]
    days = set()
    for fold in (0, 1):
        start = dt.datetime.combine(date, dt.time(hour), tzinfo=az).replace(fold=fold)
        # Back through UTC: a wall hour that does not exist (spring forward) maps forward.
        utc = start.astimezone(dt.UTC)
        begin, end = utc.astimezone(rz), (utc + _HOUR).astimezone(rz)
        if (begin.minute, begin.second) != (0, 0):
            raise ConfigError(
                f"{what} reports in {az.key}, whose hours start at :{begin.minute:02d} in "
                f"{rz.key}: an hour of its spend would fall on two report days. Fix: set "
                "[adperf] account_days = account (each account's own days), or report in a "
                "zone a whole number of hours apart"
            )
        days.add(begin.date().isoformat())
        if end.date() != begin.date() and (end.hour, end.minute) != (0, 0):
            raise ConfigError(f"{what}: the hour {local} spans two report days")
    if len(days) > 1:
        raise ConfigError(
            f"{what} reports {local[0]} {hour:02d}:00 in {az.key} once, but that hour occurs "
            f"twice (a DST change) and its two occurrences fall on report days "
            f"{' and '.join(sorted(days))} in {rz.key}. Fix: set [adperf] account_days = "
            "account for this report zone"
        )
    return days.pop()


def accounts_line(
    accounts: Iterable[tuple[str, str, str | None]], report_zone: str, day: dt.date, mode: str
) -> str | None:
    """One line for the report on the ad accounts whose days are not the report's, from
    (platform, account id, account zone) of the day's spend rows; None when there are none."""
    offset = []
    for platform, account_id, account_zone in sorted(set(accounts)):
        if not account_zone or account_zone == report_zone:
            continue
        hours = offset_hours(account_zone, report_zone, day)
        if hours == 0:
            continue
        offset.append(f"{platform} {account_id} ({account_zone}, {describe_offset(hours)})")
    if not offset:
        return None
    listed = "; ".join(offset)
    if mode == REPORT:
        return (
            f"Re-cut into {report_zone} days from hourly rows: {listed}. Their spend on {day} "
            f"is the spend of {day} in {report_zone}."
        )
    return (
        f"Ad accounts on their own days: {listed}. Their spend on {day} is their own {day}, "
        f"not {day} in {report_zone} ([adperf] account_days = report re-cuts it)."
    )
