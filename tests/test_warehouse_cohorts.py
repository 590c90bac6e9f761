"""The cohort triangles in the warehouse: each cell once, as of the latest day that computed it."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest
import sqlalchemy as sa

from adperf import warehouse
from adperf.transform.cohort import build_cohort_roas, build_cohort_roas_segments
from tests.transform.test_cohort import INSTALLS_WINDOW, PAYMENTS_WINDOW, SPEND_WINDOW

DAYS = ["2026-11-24", "2026-11-25", "2026-11-26", "2026-11-27", "2026-11-28"]
KEY = ["cohort_date", "platform", "campaign_id", "age_days"]
AGES = (0, 3, 7)


def _triangle(day: str) -> pd.DataFrame:
    return build_cohort_roas(day, INSTALLS_WINDOW, PAYMENTS_WINDOW, SPEND_WINDOW, AGES)


def _segments(day: str) -> pd.DataFrame:
    return build_cohort_roas_segments(day, INSTALLS_WINDOW, PAYMENTS_WINDOW, SPEND_WINDOW, AGES)


def _load(engine: sa.Engine, day: str) -> None:
    warehouse.load_day(
        engine, day, {"cohort_roas": _triangle(day), "cohort_roas_segments": _segments(day)}
    )


def _table(engine: sa.Engine, name: str = "cohort_roas") -> pd.DataFrame:
    df = warehouse.read_table(engine, name)
    df = df.assign(
        cohort_date=df["cohort_date"].astype(str),
        as_of=df["as_of"].astype(str),
        revenue=pd.to_numeric(df["revenue"]).astype("float64"),
        spend=pd.to_numeric(df["spend"]).astype("float64"),
    )
    return df.sort_values(KEY).reset_index(drop=True)


def _latest_cells(days: list[str]) -> pd.DataFrame:
    """What the table must hold after loading `days`: each cell from the latest day with it."""
    every = pd.concat([_triangle(d) for d in days], ignore_index=True).sort_values("as_of")
    return every.drop_duplicates(KEY, keep="last").sort_values(KEY).reset_index(drop=True)


@pytest.mark.parametrize("order", [DAYS, DAYS[::-1], [DAYS[2], DAYS[0], DAYS[4], DAYS[1], DAYS[3]]])
def test_each_cell_once_from_the_latest_day_in_any_load_order(
    warehouse_engine: sa.Engine, order: list[str]
) -> None:
    for day in order:
        _load(warehouse_engine, day)
    got = _table(warehouse_engine)
    want = _latest_cells(DAYS)
    assert not got.duplicated(KEY).any()
    assert len(want) > len(DAYS)  # more than one row a day: the triangle, not the diagonal
    assert got[[*KEY, "as_of", "users", "payers"]].to_dict("records") == want[
        [*KEY, "as_of", "users", "payers"]
    ].to_dict("records")
    assert got["revenue"].tolist() == pytest.approx((want["revenue_micros"] / 1e6).tolist())
    segments = _table(warehouse_engine, "cohort_roas_segments")
    assert not segments.duplicated([*KEY, "country", "device_os"]).any()
    # The segments of each cell add up to the cell, in the warehouse too.
    summed = segments.groupby(KEY, as_index=False)[["users", "revenue"]].sum().sort_values(KEY)
    assert summed["users"].tolist() == got["users"].tolist()
    assert summed["revenue"].tolist() == pytest.approx(got["revenue"].tolist())


def test_re_loading_a_day_replaces_its_rows(warehouse_engine: sa.Engine) -> None:
    for day in DAYS:
        _load(warehouse_engine, day)
    before = _table(warehouse_engine)
    for day in (DAYS[-1], DAYS[1]):  # the latest day, then an earlier one again
        _load(warehouse_engine, day)
        pd.testing.assert_frame_equal(_table(warehouse_engine), before)


def test_a_diagonal_warehouse_of_an_older_adperf_is_superseded_not_duplicated(
    warehouse_engine: sa.Engine,
) -> None:
    # An older adperf loaded each day's diagonal (the cohort of each age reaching it that day),
    # with plain inserts (its loads deleted only the day's own rows); one cohort is older than
    # the window of the day loaded next.
    old = []
    for day in ["2026-11-20", "2026-11-23", "2026-11-24", "2026-11-27"]:
        tri = _triangle(day)
        cohort_of_age = tri["age_days"].map(
            lambda a, d=day: (dt.date.fromisoformat(d) - dt.timedelta(days=int(a))).isoformat()
        )
        old.append(tri[tri["cohort_date"] == cohort_of_age])
    outside = old[0].head(1).assign(cohort_date="2026-11-19", as_of="2026-11-19")
    old.append(outside)
    warehouse.create_tables(warehouse_engine)
    with warehouse_engine.begin() as conn:
        for frame in old:
            conn.execute(
                warehouse.cohort_roas.insert(), warehouse.to_rows(frame, warehouse.cohort_roas)
            )
    assert len(_table(warehouse_engine)) == sum(len(f) for f in old) > 5

    warehouse.load_day(warehouse_engine, "2026-11-27", {"cohort_roas": _triangle("2026-11-27")})
    got = _table(warehouse_engine)
    assert not got.duplicated(KEY).any()
    # Every cell of the day's triangle is there as of the day, the diagonal rows of its cohorts
    # are gone, and the cohort older than its window keeps its row.
    assert len(got[got["as_of"] == "2026-11-27"]) == len(_triangle("2026-11-27"))
    assert got[got["as_of"] != "2026-11-27"][["cohort_date", "as_of"]].values.tolist() == [
        ["2026-11-19", "2026-11-19"]
    ]
