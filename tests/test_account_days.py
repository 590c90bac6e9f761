"""adperf.account_days and the sandbox's hourly split: table-driven, no I/O."""

from __future__ import annotations

import datetime as dt

import pytest

from adperf import account_days as days_of
from adperf.errors import ConfigError
from adperf.sandbox import hourly

D = dt.date


@pytest.mark.parametrize(
    ("account", "report", "first", "last", "want"),
    [
        # Seoul's 11-02 is 11-01 07:00 .. 11-02 07:00 in LA (PST after the DST end).
        (
            "America/Los_Angeles",
            "Asia/Seoul",
            D(2026, 11, 2),
            D(2026, 11, 2),
            (D(2026, 11, 1), D(2026, 11, 2)),
        ),
        # LA's 11-02 is 11-02 17:00 .. 11-03 17:00 in Seoul.
        (
            "Asia/Seoul",
            "America/Los_Angeles",
            D(2026, 11, 2),
            D(2026, 11, 4),
            (D(2026, 11, 2), D(2026, 11, 5)),
        ),
        (
            "Asia/Seoul",
            "Asia/Seoul",
            D(2026, 11, 2),
            D(2026, 11, 4),
            (D(2026, 11, 2), D(2026, 11, 4)),
        ),
        # Tokyo is Seoul's offset: the same days.
        (
            "Asia/Tokyo",
            "Asia/Seoul",
            D(2026, 3, 1),
            D(2026, 3, 31),
            (D(2026, 3, 1), D(2026, 3, 31)),
        ),
    ],
)
def test_local_range(
    account: str, report: str, first: dt.date, last: dt.date, want: tuple[dt.date, dt.date]
) -> None:
    assert days_of.local_range(first, last, account, report) == want


@pytest.mark.parametrize(
    ("account", "day", "hours", "text"),
    [
        ("America/Los_Angeles", D(2026, 10, 30), -16.0, "16 h behind"),
        ("America/Los_Angeles", D(2026, 11, 3), -17.0, "17 h behind"),
        ("Australia/Sydney", D(2026, 10, 2), 1.0, "1 h ahead"),
        ("Australia/Sydney", D(2026, 10, 6), 2.0, "2 h ahead"),
        ("Asia/Kolkata", D(2026, 10, 6), -3.5, "3.5 h behind"),
    ],
)
def test_offset_hours(account: str, day: dt.date, hours: float, text: str) -> None:
    got = days_of.offset_hours(account, "Asia/Seoul", day)
    assert got == hours
    assert days_of.describe_offset(got) == text


@pytest.mark.parametrize(
    ("value", "hour"), [("00:00:00 - 00:59:59", 0), ("23:00:00 - 23:59:59", 23), (7, 7), ("13", 13)]
)
def test_hour_label(value: object, hour: int) -> None:
    assert days_of.hour_label(value) == hour


@pytest.mark.parametrize("value", ["24:00:00 - 24:59:59", "", None, True, "1:00", "ab", -1])
def test_hour_label_refuses(value: object) -> None:
    with pytest.raises(ValueError, match="not an hour"):
        days_of.hour_label(value)


def recut(
    records: list[dict[str, object]], account: str = "America/Los_Angeles"
) -> list[dict[str, object]]:
    return days_of.recut_to_report_days(
        records,
        metrics=("spend",),
        key=("ad",),
        account_zone=account,
        report_zone="Asia/Seoul",
        first=D(2026, 11, 2),
        last=D(2026, 11, 2),
        what="test account",
    )


def test_recut_sums_the_hours_of_each_report_day_and_drops_the_rest() -> None:
    # Seoul's 11-02 = LA 11-01 07:00 .. 11-02 06:59 (PST).
    rows = [
        {"date": "2026-11-01", "hour": 6, "ad": "a", "spend": 1},  # Seoul 11-01 23:00
        {"date": "2026-11-01", "hour": 7, "ad": "a", "spend": 10},  # Seoul 11-02 00:00
        {"date": "2026-11-01", "hour": 23, "ad": "a", "spend": 100},
        {"date": "2026-11-02", "hour": 6, "ad": "a", "spend": 1000},  # Seoul 11-02 23:00
        {"date": "2026-11-02", "hour": 7, "ad": "a", "spend": 10000},  # Seoul 11-03
        {"date": "2026-11-02", "hour": 0, "ad": "b", "spend": 5},
    ]
    got = sorted((r["date"], r["ad"], r["spend"]) for r in recut(rows))
    assert got == [("2026-11-02", "a", 1110), ("2026-11-02", "b", 5)]


def test_recut_refuses_a_repeated_hour_row() -> None:
    rows = [{"date": "2026-11-01", "hour": 8, "ad": "a", "spend": 1}] * 2
    with pytest.raises(ValueError, match="two rows for 2026-11-01, 8, a"):
        recut(rows)


def test_recut_refuses_half_hour_zones() -> None:
    with pytest.raises(ConfigError, match="test account reports in Asia/Kathmandu.*:15"):
        recut([{"date": "2026-11-02", "hour": 8, "ad": "a", "spend": 1}], "Asia/Kathmandu")


def test_check_mode() -> None:
    assert days_of.check_mode("report") == "report"
    with pytest.raises(ConfigError, match="account_days = 'utc'"):
        days_of.check_mode("utc")


@pytest.mark.parametrize(
    ("day", "zone", "n_hours"),
    [
        ("2026-11-01", "America/Los_Angeles", 25),
        ("2026-10-04", "Australia/Sydney", 23),
        ("2026-11-02", "America/Los_Angeles", 24),
        ("2026-11-02", "Asia/Kolkata", 24),
    ],
)
def test_hourly_split_is_exact_over_dst_days(day: str, zone: str, n_hours: int) -> None:
    counts = {"spend": 123_457, "installs": 3}
    hours = hourly.by_instant(day, zone, counts)
    assert len(hours) == n_hours
    for k, v in counts.items():
        assert sum(c[k] for _, _, c in hours) == v
    walls = hourly.by_wall_hour(day, zone, counts)
    assert len(walls) == 24 if n_hours == 25 else len(walls) == n_hours
    assert sum(c["spend"] for _, c in walls) == counts["spend"]


def test_split_and_units() -> None:
    assert hourly.split(10, [1.0, 1.0, 2.0]) == [3, 2, 5]  # ties to the earlier hour
    assert hourly.split(0, [1.0, 2.0]) == [0, 0]
    assert hourly.minor_units("123.45") == (12345, 2)
    assert hourly.minor_units("12345") == (12345, 0)
    assert hourly.amount(12345, 2) == "123.45"


def test_accounts_line_names_each_offset_account_once() -> None:
    rows = [
        ("facebook", "111", "America/Los_Angeles"),
        ("facebook", "111", "America/Los_Angeles"),
        ("facebook", "222", "Asia/Seoul"),
        ("google_ads", "333", "Australia/Sydney"),
        ("facebook", "444", "Asia/Tokyo"),  # Seoul's offset: not offset
        ("facebook", "555", None),  # a pull from before the zone was recorded
    ]
    line = days_of.accounts_line(rows, "Asia/Seoul", D(2026, 12, 6), "account")
    assert line == (
        "Ad accounts on their own days: facebook 111 (America/Los_Angeles, 17 h behind); "
        "google_ads 333 (Australia/Sydney, 2 h ahead). Their spend on 2026-12-06 is their own "
        "2026-12-06, not 2026-12-06 in Asia/Seoul ([adperf] account_days = report re-cuts it)."
    )
    recut = days_of.accounts_line(rows, "Asia/Seoul", D(2026, 12, 6), "report")
    assert recut is not None and recut.startswith("Re-cut into Asia/Seoul days from hourly rows")
    assert days_of.accounts_line(rows[2:3], "Asia/Seoul", D(2026, 12, 6), "account") is None


def test_the_report_shows_the_accounts_line() -> None:
    import pandas as pd

    from adperf.sinks.html import build_html_report
    from adperf.sinks.slack import build_slack_message

    empty = pd.DataFrame(
        columns=["platform", "campaign_id", "campaign_name", "spend", "installs", "roas"]
    )
    actions = pd.DataFrame(columns=["action", "spend"])
    line = "Ad accounts on their own days: facebook 111 (America/Los_Angeles, 17 h behind)."
    message = build_slack_message(
        day="2026-12-06",
        currency="USD",
        campaigns=empty,
        actions=actions,
        reconciliation={},
        notes=[],
        accounts_line=line,
    )
    texts = [e["text"] for b in message["blocks"] if b["type"] == "context" for e in b["elements"]]
    assert any(line in t for t in texts)
    without = build_slack_message(
        day="2026-12-06",
        currency="USD",
        campaigns=empty,
        actions=actions,
        reconciliation={},
        notes=[],
    )
    assert len(without["blocks"]) == len(message["blocks"]) - 1
    html = build_html_report(
        day="2026-12-06",
        currency="USD",
        totals=[],
        comparison=("2026-12-05", "2026-11-29"),
        campaigns=empty,
        actions=actions,
        notes=[],
        png=b"",
        accounts_line=line,
    )
    assert f'<p class="muted" id="account-days">{line}</p>' in html
