import datetime as dt
import json
import tracemalloc
import uuid
from decimal import Decimal

import pytest
import sqlalchemy as sa

import adperf.sources.payments as payments_mod
from adperf.errors import MissingFxRate, SourceError, TransientSourceError
from adperf.fx import FxTable
from adperf.pseudonym import pseudonymize_one
from adperf.sources.payments import build_query, fetch_payments, iter_payments

KEY = b"test-key"
DAY = dt.date(2026, 11, 27)
FX = FxTable(
    "USD",
    {
        ("2026-11-27", "KRW"): Decimal("0.0007"),
        ("2026-11-26", "JPY"): Decimal("0.0066"),  # JPY is known, but has no rate on the 27th
    },
)

# created_at is UTC; the report day 2026-11-27 in Asia/Seoul is 2026-11-26 15:00 .. 11-27 15:00 UTC.
ROWS = [
    (1, "usr_a", "9.9900", "USD", "purchase", "2026-11-26 14:59:59.999999"),  # day before
    (2, "usr_a", "9.9900", "USD", "purchase", "2026-11-26 15:00:00.000000"),  # first instant
    (3, "usr_b", "15000.0000", "krw", "purchase", "2026-11-27 03:00:00.250000"),
    (3, "usr_b", "15000.0000", "krw", "purchase", "2026-11-27 03:00:00.250000"),  # id repeated
    (4, "usr_a", "4.9900", "USD", "refund", "2026-11-27 10:00:00.000000"),
    (5, None, "1.0000", "USD", "purchase", "2026-11-27 11:00:00.000000"),  # no user
    (6, "usr_c", "0.1000", "USD", "purchase", "2026-11-27 14:59:59.999999"),  # last instant
    (7, "usr_c", "0.1000", "USD", "purchase", "2026-11-27 15:00:00.000000"),  # next day
    (8, "usr_d", None, "USD", "purchase", "2026-11-27 01:00:00.000000"),  # no amount
    (9, "usr_d", "2.0000", None, "purchase", "2026-11-27 01:00:00.000000"),  # no currency
    (10, "usr_e", "3.0000", "XQZ", "purchase", "2026-11-27 01:00:00.000000"),  # unknown ISO code
    (11, "usr_e", "3.0000", "USD", "gift", "2026-11-27 01:00:00.000000"),  # unknown kind
]
DDL = (
    # No primary key: a replica or view without constraints can repeat an id.
    "CREATE TABLE {name} (id BIGINT, user_id VARCHAR(64), amount DECIMAL(18,4), "
    "currency CHAR(3), kind VARCHAR(8), created_at DATETIME(6))"
)


def _make(engine: sa.Engine, rows=ROWS, name: str = "payments") -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(DDL.format(name=name)))
        conn.execute(
            sa.text(f"INSERT INTO {name} VALUES (:id, :u, :a, :c, :k, :t)"),
            [dict(zip(["id", "u", "a", "c", "k", "t"], r, strict=True)) for r in rows],
        )


def _fetch(engine: sa.Engine, **kw):
    kw = {"first": DAY, "last": DAY, "timezone": "Asia/Seoul", "hmac_key": KEY, "fx": FX} | kw
    return fetch_payments(engine, **kw)


def _check(engine: sa.Engine) -> None:
    _make(engine)
    df, meta = _fetch(engine, chunk_rows=2)
    assert df["payment_id"].tolist() == ["2", "3", "4", "6"]
    assert meta["source_rows"] == meta["rows_read"] == 10
    assert meta["accepted"] == 4 and meta["quarantined"] == 6
    assert {k: v for k, v in meta.items() if k.startswith("quarantined_")} == {
        "quarantined_bad_kind": 1,
        "quarantined_duplicate_id": 1,
        "quarantined_null_amount": 1,
        "quarantined_null_currency": 1,
        "quarantined_null_user": 1,
        "quarantined_unknown_currency": 1,
    }
    assert df["amount_original_micros"].tolist() == [9_990_000, 15_000_000_000, -4_990_000, 100_000]
    # 15,000 KRW x 0.0007 = 10.50 USD; the refund is negative revenue on its own day
    assert df["amount_micros"].tolist() == [9_990_000, 10_500_000, -4_990_000, 100_000]
    assert df["currency_original"].tolist() == ["USD", "KRW", "USD", "USD"]
    assert df["amount_micros"].sum() == 15_600_000
    assert set(df["date"]) == {"2026-11-27"}
    assert df["user_pid"].tolist()[0] == pseudonymize_one("usr_a", KEY)
    assert not any("usr_" in str(v) for v in df.to_numpy().ravel())
    # The sample keeps the quarantined rows for inspection, the user pseudonymized.
    sample = {s["reason"]: s for s in meta["quarantine_sample"]}
    assert sample["duplicate_id"]["payment_id"] == "3"
    assert sample["duplicate_id"]["user_pid"] == pseudonymize_one("usr_b", KEY)
    assert sample["null_user"]["user_pid"] is None
    assert sample["unknown_currency"]["currency"] == "XQZ"
    assert "usr_" not in json.dumps(meta)


def test_one_day_sqlite(tmp_path):
    _check(sa.create_engine(f"sqlite:///{tmp_path / 'p.db'}"))


@pytest.mark.mysql
def test_one_day_mariadb(mysql_engine):
    _check(mysql_engine)


def test_known_currency_without_the_days_rate_fails_the_day(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'p.db'}")
    _make(engine, [(1, "usr_a", "100", "JPY", "purchase", "2026-11-27 01:00:00")])
    with pytest.raises(MissingFxRate, match="no rate for JPY on 2026-11-27"):
        _fetch(engine)


def test_an_empty_day_is_empty_not_an_error(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'p.db'}")
    _make(engine, ROWS[:1])
    df, meta = _fetch(engine)
    assert len(df) == 0 and meta["source_rows"] == 0 and meta["quarantined"] == 0


def test_a_query_not_ordered_by_id_is_refused(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'p.db'}")
    _make(engine)
    query = (
        "SELECT id, user_id, amount, currency, kind, created_at FROM payments "
        "WHERE created_at >= :start AND created_at < :end ORDER BY id DESC"
    )
    with pytest.raises(SourceError, match="not ordered by id.*Fix: end \\[payments\\] query"):
        _fetch(engine, query=query)


def test_bad_table_is_a_named_error(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'p.db'}")
    with pytest.raises(SourceError, match="payments for 2026-11-27.*Fix: check"):
        _fetch(engine, table="no_such_table")


# ------------------------------------------------------------ MariaDB at scale: one module DB

N_SMALL = 2_000  # rows on DAY
N_LARGE = 20_000  # rows on DAY and the next day together: 10x


BIG_FX = FxTable(
    "USD", {(d, "KRW"): Decimal("0.0007") for d in ("2026-11-27", "2026-11-28", "2026-11-29")}
)


def _created(i: int) -> dt.datetime:
    """N_SMALL rows spread over DAY, the others over the next day (UTC; DAY starts 15:00)."""
    base = dt.datetime(2026, 11, 26, 15, 0)
    if i < N_SMALL:
        return base + dt.timedelta(seconds=i * 86_400 / N_SMALL)
    return base + dt.timedelta(days=1, seconds=(i - N_SMALL) * 86_400 / (N_LARGE - N_SMALL))


@pytest.fixture(scope="module")
def big_engine(mysql_server_url):
    """A database of its own with N_LARGE payments (the per-test fixture drops tables)."""
    name = f"adperf_pay_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(mysql_server_url)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    engine = sa.create_engine(sa.make_url(mysql_server_url).set(database=name))
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.text(DDL.format(name="payments").replace("BIGINT", "BIGINT PRIMARY KEY"))
            )
            conn.execute(sa.text("CREATE INDEX by_time ON payments (created_at)"))
        kinds = ("refund", "purchase")
        _insert(
            engine,
            [
                (i, f"usr_{i % 3000:060d}", "1.2500", "KRW" if i % 2 else "USD", kinds[i % 50 != 0],
                 _created(i))
                for i in range(N_LARGE)
            ],
        )  # fmt: skip
        yield engine
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
        admin.dispose()


def _insert(engine: sa.Engine, rows) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO payments VALUES (:id, :u, :a, :c, :k, :t)"),
            [dict(zip(["id", "u", "a", "c", "k", "t"], r, strict=True)) for r in rows],
        )


def _peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.mysql
def test_memory_stays_flat_for_ten_times_the_rows(big_engine):
    last_for = {N_SMALL: DAY, N_LARGE: DAY + dt.timedelta(days=1)}
    seen: dict[int, int] = {}

    def stream(n: int) -> None:
        for chunk in iter_payments(
            big_engine, first=DAY, last=last_for[n], timezone="Asia/Seoul", hmac_key=KEY,
            fx=BIG_FX, chunk_rows=500,
        ):  # fmt: skip
            seen[n] = seen.get(n, 0) + len(chunk)

    def buffered(n: int) -> None:
        # The control: a client-side (buffered) read holds every row at once.
        start, end = payments_mod.day_bounds_utc(DAY, last_for[n], "Asia/Seoul")
        with big_engine.connect() as conn:
            conn.execute(build_query("payments"), {"start": start, "end": end}).fetchall()

    streamed = {n: _peak_bytes(lambda n=n: stream(n)) for n in (N_SMALL, N_LARGE)}
    control = {n: _peak_bytes(lambda n=n: buffered(n)) for n in (N_SMALL, N_LARGE)}
    print(f"peak bytes streamed {streamed}, buffered {control}")
    assert seen == {N_SMALL: N_SMALL, N_LARGE: N_LARGE}
    assert control[N_LARGE] > 5 * control[N_SMALL]  # the measurement sees a growing read
    assert streamed[N_LARGE] < 1.5 * streamed[N_SMALL], streamed
    assert streamed[N_LARGE] < control[N_LARGE] / 5


def _connection_ids(engine: sa.Engine) -> list[int]:
    """The MySQL thread id of each connection that starts a payments read, in order."""
    ids: list[int] = []

    @sa.event.listens_for(engine, "before_cursor_execute")
    def record(conn, cursor, statement, parameters, context, executemany):  # noqa: ARG001
        if statement.startswith("SELECT COUNT(*)"):
            ids.append(conn.connection.dbapi_connection.thread_id())

    return ids


def _kill_after_first_chunk(monkeypatch, engine: sa.Engine, ids: list[int], times: int) -> None:
    """Kill the reading connection from a second connection once its first chunk is in."""
    real = payments_mod._frame
    killed: list[int] = []

    def frame(rows, tz, key):
        if len(killed) < times and ids and ids[-1] not in killed:
            killed.append(ids[-1])
            with engine.connect() as other:
                other.exec_driver_sql(f"KILL CONNECTION {ids[-1]}")
        return real(rows, tz, key)

    monkeypatch.setattr(payments_mod, "_frame", frame)


# pymysql's result object complains when collected after its connection was killed.
KILL_NOISE = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.mark.mysql
@KILL_NOISE
def test_connection_killed_mid_stream_rereads_the_day_from_scratch(big_engine, monkeypatch):
    day2 = DAY + dt.timedelta(days=1)
    clean, clean_meta = _fetch(big_engine, first=day2, last=day2, fx=BIG_FX)
    ids = _connection_ids(big_engine)
    _kill_after_first_chunk(monkeypatch, big_engine, ids, times=1)
    df, meta = _fetch(big_engine, first=day2, last=day2, fx=BIG_FX, chunk_rows=1_000)
    assert len(ids) == 2  # read twice: the killed read was thrown away whole
    assert len(df) == len(clean) == N_LARGE - N_SMALL
    assert df.equals(clean) and meta == clean_meta


@pytest.mark.mysql
@KILL_NOISE
def test_connection_killed_on_every_attempt_fails_without_rows(big_engine, monkeypatch):
    day2 = DAY + dt.timedelta(days=1)
    ids = _connection_ids(big_engine)
    _kill_after_first_chunk(monkeypatch, big_engine, ids, times=3)
    with pytest.raises(TransientSourceError, match="payments for 2026-11-28: connection lost"):
        _fetch(big_engine, first=day2, last=day2, fx=BIG_FX, chunk_rows=1_000)
    assert len(ids) == 3


@pytest.mark.mysql
@pytest.mark.parametrize("snapshot", [True, False])
def test_one_consistent_snapshot_for_count_and_rows(big_engine, monkeypatch, snapshot):
    """A row committed between the count and the read is in neither (READ COMMITTED server)."""
    engine = sa.create_engine(big_engine.url, isolation_level="READ COMMITTED")
    if not snapshot:  # the control: without the snapshot the read sees the new row
        monkeypatch.setattr(payments_mod, "_begin_snapshot", lambda conn: None)
    new_id = N_LARGE + (1 if snapshot else 2)

    @sa.event.listens_for(engine, "before_cursor_execute")
    def insert_between(conn, cursor, statement, parameters, context, executemany):  # noqa: ARG001
        if statement.startswith("SELECT id, user_id"):
            _insert(big_engine, [(new_id, "usr_new", "1", "USD", "purchase", "2026-11-27 00:00")])

    try:
        if snapshot:
            df, meta = _fetch(engine, fx=BIG_FX)
            assert meta["source_rows"] == meta["rows_read"] == N_SMALL
            assert str(new_id) not in set(df["payment_id"])
        else:
            with pytest.raises(SourceError, match=f"but the snapshot counted {N_SMALL}"):
                _fetch(engine, fx=BIG_FX)
    finally:
        engine.dispose()
        with big_engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM payments WHERE id = :i"), {"i": new_id})
