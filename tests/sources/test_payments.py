import datetime as dt

import pytest
import sqlalchemy as sa

from adperf.errors import SourceError
from adperf.fx import FxTable
from adperf.pseudonym import pseudonymize_one
from adperf.sources.payments import fetch_payments

KEY = b"test-key"
FX = FxTable("USD", {("2026-11-27", "KRW"): __import__("decimal").Decimal("0.0007")})

# created_at is UTC; the report day 2026-11-27 in Asia/Seoul is 2026-11-26 15:00 .. 11-27 15:00 UTC.
ROWS = [
    (1, "usr_a", "9.9900", "USD", "purchase", "2026-11-26 14:59:59.999999"),  # day before
    (2, "usr_a", "9.9900", "USD", "purchase", "2026-11-26 15:00:00.000000"),  # first instant
    (3, "usr_b", "15000.0000", "KRW", "purchase", "2026-11-27 03:00:00.250000"),
    (4, "usr_a", "4.9900", "USD", "refund", "2026-11-27 10:00:00.000000"),
    (5, None, "1.0000", "USD", "purchase", "2026-11-27 11:00:00.000000"),  # quarantined
    (6, "usr_c", "0.1000", "USD", "purchase", "2026-11-27 14:59:59.999999"),  # last instant
    (7, "usr_c", "0.1000", "USD", "purchase", "2026-11-27 15:00:00.000000"),  # next day
]


def _make(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        if engine.dialect.name == "mysql":
            conn.execute(
                sa.text(
                    "CREATE TABLE payments (id BIGINT PRIMARY KEY, user_id VARCHAR(64), "
                    "amount DECIMAL(18,4), currency CHAR(3), kind ENUM('purchase','refund'), "
                    "created_at DATETIME(6))"
                )
            )
        else:
            conn.execute(
                sa.text(
                    "CREATE TABLE payments (id BIGINT PRIMARY KEY, user_id VARCHAR(64), "
                    "amount DECIMAL(18,4), currency CHAR(3), kind VARCHAR(8), "
                    "created_at DATETIME(6))"
                )
            )
        conn.execute(
            sa.text("INSERT INTO payments VALUES (:id, :u, :a, :c, :k, :t)"),
            [dict(zip(["id", "u", "a", "c", "k", "t"], r, strict=True)) for r in ROWS],
        )


def _check(engine: sa.Engine) -> None:
    _make(engine)
    day = dt.date(2026, 11, 27)
    df, counts = fetch_payments(
        engine, first=day, last=day, timezone="Asia/Seoul", hmac_key=KEY, fx=FX, chunk_rows=2
    )
    assert df["payment_id"].tolist() == ["2", "3", "4", "6"]
    assert counts == {"rows_read": 5, "quarantined": 1}
    assert df["amount_original_micros"].tolist() == [9_990_000, 15_000_000_000, -4_990_000, 100_000]
    # 15,000 KRW x 0.0007 = 10.50 USD; the refund is negative revenue on its own day
    assert df["amount_micros"].tolist() == [9_990_000, 10_500_000, -4_990_000, 100_000]
    assert df["amount_micros"].sum() == 15_600_000
    assert set(df["date"]) == {"2026-11-27"}
    assert df["user_pid"].tolist()[0] == pseudonymize_one("usr_a", KEY)
    assert not any("usr_" in str(v) for v in df.to_numpy().ravel())


def test_one_day_sqlite(tmp_path):
    _check(sa.create_engine(f"sqlite:///{tmp_path / 'p.db'}"))


@pytest.mark.mysql
def test_one_day_mariadb(mysql_engine):
    _check(mysql_engine)


def test_bad_table_is_a_named_error(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'p.db'}")
    day = dt.date(2026, 11, 27)
    with pytest.raises(SourceError, match="payments for 2026-11-27.*Fix: check"):
        fetch_payments(
            engine,
            first=day,
            last=day,
            timezone="Asia/Seoul",
            hmac_key=KEY,
            fx=FX,
            table="no_such_table",
        )
