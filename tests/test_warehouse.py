import datetime as dt
import threading
from decimal import Decimal

import pandas as pd
import psycopg
import pymysql
import pytest
import sqlalchemy as sa

from adperf import warehouse
from adperf.errors import ConfigError


def _frames(day: str, spend_micros: int = 12_345_678) -> dict[str, pd.DataFrame]:
    campaign = pd.DataFrame(
        {
            "date": [day, day],
            "platform": ["facebook", "organic"],
            "campaign_id": ["238500000000000001", "organic"],
            "campaign_name": ["KR_Android", None],
            "spend_micros": [spend_micros, 0],
            "impressions": [1000, 0],
            "clicks": [50, 0],
            "installs": [10, 4],
            "cpi_micros": [spend_micros // 10, None],
            "payers": [2, 1],
            "revenue_micros": [20_000_000, 1_000_000],
            "roas": [20_000_000 / spend_micros, float("nan")],
            "assisted_revenue_micros": [0, 0],
            "pltv_micros": [30_000_000, None],
            "proas": [30_000_000 / spend_micros, None],
        }
    )
    recon = pd.DataFrame(
        [
            {
                "date": day,
                "total_payments_micros": 21_000_001,
                "attributed_micros": 20_000_000,
                "organic_micros": 1_000_000,
                "unattributed_micros": 1,
            }
        ]
    )
    return {"campaign_daily": campaign, "revenue_reconciliation": recon}


def _check_load_twice(engine: sa.Engine) -> None:
    day = "2026-11-27"
    warehouse.load_day(engine, day, _frames(day))
    warehouse.load_day(engine, "2026-11-26", _frames("2026-11-26", 1_000_000))
    first = warehouse.read_table(engine, "campaign_daily").sort_values(["date", "platform"])
    warehouse.load_day(engine, day, _frames(day))
    again = warehouse.read_table(engine, "campaign_daily").sort_values(["date", "platform"])
    assert len(again) == 4
    pd.testing.assert_frame_equal(first.reset_index(drop=True), again.reset_index(drop=True))
    assert warehouse.is_loaded(engine, day)
    assert not warehouse.is_loaded(engine, "2026-11-25")
    with engine.connect() as conn:
        spend = conn.execute(
            sa.select(warehouse.campaign_daily.c.spend).where(
                warehouse.campaign_daily.c.date == dt.date(2026, 11, 27),
                warehouse.campaign_daily.c.platform == "facebook",
            )
        ).scalar_one()
        roas = conn.execute(
            sa.select(warehouse.campaign_daily.c.roas).where(
                warehouse.campaign_daily.c.platform == "organic"
            )
        ).first()
        unattributed = conn.execute(
            sa.select(warehouse.revenue_reconciliation.c.unattributed).where(
                warehouse.revenue_reconciliation.c.date == dt.date(2026, 11, 27)
            )
        ).scalar_one()
    assert Decimal(spend) == Decimal("12.345678")
    assert roas[0] is None  # NaN → NULL, never inf
    assert Decimal(unattributed) == Decimal("0.000001")


def test_load_twice_same_rows(warehouse_engine):
    _check_load_twice(warehouse_engine)


def test_failed_load_keeps_previous_rows_and_no_marker(warehouse_engine):
    engine = warehouse_engine
    day = "2026-11-27"
    warehouse.load_day(engine, day, _frames(day))
    broken = _frames(day)
    broken["revenue_reconciliation"] = broken["revenue_reconciliation"].drop(
        columns=["organic_micros"]
    )
    with pytest.raises(ValueError, match="organic"):
        warehouse.load_day(
            engine,
            "2026-11-28",
            {
                **_frames("2026-11-28"),
                "revenue_reconciliation": broken["revenue_reconciliation"].assign(
                    date="2026-11-28"
                ),
            },
        )
    assert not warehouse.is_loaded(engine, "2026-11-28")
    days = set(warehouse.read_table(engine, "campaign_daily")["date"].astype(str))
    assert days == {"2026-11-27"}  # the failed day's campaign rows were rolled back


def test_rows_of_another_day_are_refused(warehouse_engine):
    engine = warehouse_engine
    with pytest.raises(ValueError, match="another day"):
        warehouse.load_day(engine, "2026-11-28", _frames("2026-11-27"))
    assert not warehouse.is_loaded(engine, "2026-11-28")


def test_older_warehouse_gains_new_nullable_columns(warehouse_engine):
    engine = warehouse_engine
    warehouse.create_tables(engine)
    newer = sa.MetaData()
    sa.Table(
        "actions",
        newer,
        *[c._copy() for c in warehouse.actions.columns],
        sa.Column("later_column", sa.Float, nullable=True),
    )
    warehouse.create_tables(engine, newer)
    cols = {c["name"] for c in sa.inspect(engine).get_columns("actions")}
    assert "later_column" in cols and "reason" in cols
    required = sa.MetaData()
    sa.Table("actions", required, sa.Column("must", sa.Integer, nullable=False))
    with pytest.raises(ConfigError, match="lacks the required column must"):
        warehouse.create_tables(engine, required)


def test_a_table_another_worker_created_meanwhile_is_not_an_error(warehouse_engine, monkeypatch):
    # Two workers' first runs race: both find no pipeline_runs, the other one creates it first,
    # ours then fails with "already exists". The run's row must still be recorded.
    engine = warehouse_engine
    real_create = sa.Table.create
    raced: list[str] = []

    def racing_create(self, bind, checkfirst=False):  # type: ignore[no-untyped-def]
        real_create(self, bind, checkfirst=True)  # the other worker wins
        raced.append(self.name)
        real_create(self, bind, checkfirst=False)  # ours: "table ... already exists"

    monkeypatch.setattr(sa.Table, "create", racing_create)
    row = {
        "run_id": "r1",
        "task_id": "Payments(date=2026-11-20)",
        "family": "Payments",
        "day": dt.date(2026, 11, 20),
        "status": "DONE",
        "started_at": dt.datetime(2026, 11, 20, 6, 30),
        "duration_s": 1.5,
    }
    warehouse.record_pipeline_run(engine, row)
    monkeypatch.undo()
    assert raced == ["pipeline_runs"]
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM pipeline_runs")).scalar() == 1


def test_workers_creating_and_upgrading_the_warehouse_at_once_all_succeed(warehouse_engine):
    """Several workers' first runs at the same moment, each its own connection: the CREATEs
    overlap for real (PostgreSQL: a unique violation in pg_type, not "already exists"), then
    the same for ALTER TABLE ADD COLUMN when a newer adperf meets an older warehouse."""
    url = warehouse_engine.url.render_as_string(hide_password=False)
    newer = sa.MetaData()
    for table in warehouse.metadata.sorted_tables:
        table.to_metadata(newer)
    newer.tables["actions"].append_column(sa.Column("later_column", sa.Float))
    for _ in range(3):
        warehouse.metadata.drop_all(warehouse_engine)
        for step in (warehouse.create_tables, warehouse.create_action_log, _upgrade(newer)):
            errors = _at_once(url, step, workers=4)
            assert errors == [], errors
    cols = {c["name"] for c in sa.inspect(warehouse_engine).get_columns("actions")}
    assert "later_column" in cols
    day = "2026-11-27"
    warehouse.load_day(warehouse_engine, day, _frames(day))
    assert warehouse.is_loaded(warehouse_engine, day)


def _upgrade(meta: sa.MetaData):  # type: ignore[no-untyped-def]
    return lambda engine: warehouse.create_tables(engine, meta)


def _at_once(url: str, step, workers: int) -> list[BaseException]:  # type: ignore[no-untyped-def]
    """Run step(engine) in `workers` threads released together, each on its own engine."""
    engines = [warehouse.make_engine(url) for _ in range(workers)]
    start = threading.Barrier(workers)
    errors: list[BaseException] = []

    def work(engine: sa.Engine) -> None:
        start.wait()
        try:
            step(engine)
        except BaseException as exc:  # collected: the test asserts there are none
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for engine in engines:
        engine.dispose()
    return errors


def test_a_named_partial_load_has_its_own_marker_and_leaves_the_day_unloaded(warehouse_engine):
    """LtvModel loads ltv_model before the day's report: its marker is not the day's."""
    engine = warehouse_engine
    day = "2026-11-27"
    row = {"date": day, "model": "bgnbd_gammagamma", "params": "{}", "n_customers": 3}
    model = pd.DataFrame([{**row, "converged": True, "log_likelihood": -1.5}])
    warehouse.load_day(engine, day, {"ltv_model": model}, marker="ltv_model")
    assert warehouse.is_loaded(engine, day, "ltv_model")
    assert not warehouse.is_loaded(engine, day)  # the report day is not loaded
    assert not warehouse.is_loaded(engine, day, "other")
    assert not warehouse.is_loaded(engine, "2026-11-26", "ltv_model")
    # The report's load replaces the row (now with a backtest) and leaves the marker.
    later = model.assign(backtest_mape=0.25)
    warehouse.load_day(engine, day, {"ltv_model": later, **_frames(day)})
    got = warehouse.read_table(engine, "ltv_model")
    assert len(got) == 1 and got.iloc[0]["backtest_mape"] == 0.25
    assert warehouse.is_loaded(engine, day) and warehouse.is_loaded(engine, day, "ltv_model")


def test_a_warehouse_created_before_restricted_loads_and_keeps_its_old_days(warehouse_engine):
    """revenue_reconciliation as an older adperf created it (no `restricted`): the next load
    adds the column, the old day keeps NULL (not a made-up 0), the new day has its amount."""
    engine = warehouse_engine
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TABLE revenue_reconciliation (date DATE PRIMARY KEY, "
                "total_payments NUMERIC(20, 6) NOT NULL, attributed NUMERIC(20, 6) NOT NULL, "
                "organic NUMERIC(20, 6) NOT NULL, unattributed NUMERIC(20, 6) NOT NULL)"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO revenue_reconciliation VALUES ('2026-11-26', 3.000000, 2.000000, "
                "1.000000, 0.000000)"
            )
        )
    frames = _frames("2026-11-27")
    frames["revenue_reconciliation"] = frames["revenue_reconciliation"].assign(
        total_payments_micros=23_500_001, restricted_micros=2_500_000
    )

    warehouse.load_day(engine, "2026-11-27", frames)

    cols = {c["name"] for c in sa.inspect(engine).get_columns("revenue_reconciliation")}
    assert "restricted" in cols
    rec = warehouse.read_table(engine, "revenue_reconciliation").set_index("date")
    assert pd.isna(rec.loc[dt.date(2026, 11, 26), "restricted"])
    new = rec.loc[dt.date(2026, 11, 27)]
    assert Decimal(str(new["restricted"])) == Decimal("2.5")
    parts = sum(
        Decimal(str(new[c])) for c in ("attributed", "organic", "unattributed", "restricted")
    )
    assert parts == Decimal(str(new["total_payments"])) == Decimal("23.500001")


@pytest.mark.parametrize(
    ("orig", "transient", "label"),
    [
        (
            pymysql.err.OperationalError(2013, "Lost connection to MySQL server"),
            True,
            "MySQL error 2013",
        ),
        (
            pymysql.err.IntegrityError(1062, "Duplicate entry 'usr_42' for key 'PRIMARY'"),
            False,
            "MySQL error 1062",
        ),
        (
            psycopg.errors.UniqueViolation(
                "duplicate key\nDETAIL:  Key (id)=(usr_42) already exists."
            ),
            False,
            "SQLSTATE 23505",
        ),
        (
            psycopg.errors.ConnectionFailure("server closed the connection unexpectedly"),
            True,
            "SQLSTATE 08006",
        ),
        (
            psycopg.errors.AdminShutdown("terminating connection due to administrator command"),
            True,
            "SQLSTATE 57P01",
        ),
    ],
)
def test_a_load_error_names_its_code_never_the_rows(
    orig: Exception, transient: bool, label: str
) -> None:
    from adperf.errors import TransientSourceError

    exc = sa.exc.DBAPIError("INSERT INTO t VALUES (%s)", ("usr_42",), orig)
    engine = sa.create_engine("postgresql+psycopg://u:s3cret@db.internal:5432/w")
    err = warehouse.load_failed(exc, engine, "2026-11-27")
    text = str(err)
    assert isinstance(err, TransientSourceError) is transient
    assert label in text and "db.internal:5432" in text
    assert "usr_42" not in text and "INSERT" not in text and "s3cret" not in text
