"""Delivery rows of a sandbox fake, found by account and date range without a full scan.

A fake serves a year of ad-level rows (about a million on the `large` world) and is asked for
a few weeks of one account at a time, once per page of a paged answer: scanning every row per
request made the fakes, not adperf, the slowest part of a cold run.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import defaultdict
from itertools import chain
from typing import Any


class DayIndex:
    """`records` grouped by (account, day); `select` keeps the records' own order."""

    def __init__(self, records: list[dict[str, Any]], account: str, day: str = "date") -> None:
        self.records = records
        groups: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
        for i, r in enumerate(records):
            groups[str(r[account])][str(r[day])].append(i)
        self._days: dict[str, tuple[list[str], list[list[int]]]] = {}
        for key, by_day in groups.items():
            days = sorted(by_day)
            self._days[key] = (days, [by_day[d] for d in days])

    def select(self, account: str, since: str = "", until: str = "") -> list[dict[str, Any]]:
        """The records of `account` dated since..until (ISO days, both included; '' = open)."""
        days, positions = self._days.get(str(account), ([], []))
        lo = bisect_left(days, since) if since else 0
        hi = bisect_right(days, until) if until else len(days)
        return [self.records[i] for i in sorted(chain.from_iterable(positions[lo:hi]))]
