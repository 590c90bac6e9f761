"""The action log read by report days: a follow-up or a week's budget cap reads a few days of
it, not every change since the first apply."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import sqlalchemy as sa

from adperf import warehouse


def test_read_action_log_takes_the_days_asked_and_nothing_before_the_first_apply(
    tmp_path: Path,
) -> None:
    engine = warehouse.make_engine(f"sqlite:///{tmp_path / 'w.db'}")
    try:
        empty = warehouse.read_action_log(engine, "2026-12-01", "2026-12-07")
        assert empty.empty and list(empty.columns) == [c.name for c in warehouse.action_log.c]
        warehouse.create_action_log(engine)
        rows = [
            {"date": dt.date(2026, 12, d), "platform": "tiktok", "level": "adset",
             "object_id": f"a{d}", "action": "scale", "field": "budget",
             "applied_at": dt.datetime(2026, 12, d, 9), "applied_by": "t", "status": "applied"}
            for d in (1, 3, 5, 7)
        ]  # fmt: skip
        with engine.begin() as conn:
            conn.execute(sa.insert(warehouse.action_log), rows)
        week = warehouse.read_action_log(engine, "2026-12-03", "2026-12-06")
        assert sorted(week["object_id"]) == ["a3", "a5"]
    finally:
        engine.dispose()
