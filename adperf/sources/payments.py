"""Payments from the product's transactional database (SQLAlchemy; MySQL/MariaDB or SQLite).

One range of report days is read in one consistent snapshot: the rows are counted, then
streamed through a server-side cursor in bounded chunks, in the same read-only transaction, and
the two must agree (accepted + quarantined = the source's row count). Raw user ids are
pseudonymized chunk by chunk and never leave this module.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pandas as pd
import pyarrow as pa
import sqlalchemy as sa

from adperf.errors import ConfigError, SourceError, TransientSourceError
from adperf.fx import FxTable, convert_micros, decimal_to_micros
from adperf.pseudonym import pseudonymize, pseudonymize_one
from adperf.schema import PAYMENTS, empty_frame
from adperf.sources.retry import NO_WAIT, Transient, log_retry, retry
from adperf.timeutil import day_bounds_utc, zone

log = logging.getLogger(__name__)

DEFAULT_QUERY = (
    "SELECT id, user_id, amount, currency, kind, created_at FROM {table} "
    "WHERE created_at >= :start AND created_at < :end ORDER BY id"
)
CHUNK_ROWS = 50_000
#: Quarantined rows kept (pseudonymized) per reason in the partition's _meta.json.
SAMPLE_PER_REASON = 5
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
# MySQL client errors for a connection lost mid-query (2006 gone away, 2013 lost during query,
# 2055 lost at a system call) or never made (2003: server down or restarting, e.g. a replica
# failing over): transient, the day is read again from scratch on retry.
# https://dev.mysql.com/doc/mysql-errors/8.0/en/client-error-reference.html
_LOST_CONNECTION = {2003, 2006, 2013, 2055}
QUARANTINE_REASONS = (
    "null_id",
    "null_user",
    "null_amount",
    "null_currency",
    "null_created_at",
    "bad_kind",
    "unknown_currency",
    "duplicate_id",
)


@dataclass
class PaymentsRead:
    """What one read saw: row counts by outcome and a pseudonymized sample of quarantined rows."""

    source_rows: int = 0
    rows_read: int = 0
    accepted: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)
    sample: list[dict[str, str | None]] = field(default_factory=list)

    def meta(self) -> dict[str, Any]:
        """Counts and sample for the partition's _meta.json."""
        return {
            "source_rows": self.source_rows,
            "rows_read": self.rows_read,
            "accepted": self.accepted,
            "quarantined": sum(self.quarantined.values()),
            **{f"quarantined_{k}": v for k, v in sorted(self.quarantined.items())},
            "quarantine_sample": self.sample,
        }


def build_query(table: str, query: str | None = None) -> sa.TextualSelect:
    """The SELECT for one range of days; `query` replaces the default (params :start, :end)."""
    return _bound(_sql(table, query)).columns(
        sa.column("id", sa.String),
        sa.column("user_id", sa.String),
        sa.column("amount", sa.Numeric(18, 4, asdecimal=True)),
        sa.column("currency", sa.String),
        sa.column("kind", sa.String),
        sa.column("created_at", sa.DateTime),
    )


def count_query(table: str, query: str | None = None) -> sa.TextClause:
    """SELECT COUNT(*) of the rows `build_query` returns (same parameters)."""
    return _bound(f"SELECT COUNT(*) FROM ({_sql(table, query)}) AS q")


def _sql(table: str, query: str | None) -> str:
    if query is not None:
        return query
    if not _IDENT.match(table):
        raise ConfigError(f"payments: [payments] table {table!r} is not a plain table name")
    return DEFAULT_QUERY.format(table=table)


def _bound(sql: str) -> sa.TextClause:
    return sa.text(sql).bindparams(
        sa.bindparam("start", type_=sa.DateTime), sa.bindparam("end", type_=sa.DateTime)
    )


def fetch_payments(
    engine: sa.Engine,
    *,
    first: dt.date,
    last: dt.date,
    timezone: str,
    hmac_key: bytes,
    fx: FxTable,
    table: str = "payments",
    query: str | None = None,
    chunk_rows: int = CHUNK_ROWS,
    max_attempts: int = 3,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Payments created in report days first..last: PAYMENTS rows and the read's meta.

    A connection lost mid-stream reads the days again from scratch (bounded), so a partial read
    is never returned. Rows with a NULL id, user id, amount, currency or time, an unknown kind
    or currency, or a repeated id are quarantined: counted, sampled, never silently dropped.
    """
    if max_attempts < 1:
        raise ValueError(f"payments: max_attempts must be >= 1, got {max_attempts}")

    def read_once() -> tuple[pd.DataFrame, dict[str, Any]]:
        read = PaymentsRead()
        chunks = list(
            iter_payments(
                engine,
                first=first,
                last=last,
                timezone=timezone,
                hmac_key=hmac_key,
                fx=fx,
                table=table,
                query=query,
                chunk_rows=chunk_rows,
                read=read,
            )
        )
        df = pd.concat(chunks, ignore_index=True) if chunks else empty_frame(PAYMENTS)
        return df[PAYMENTS.columns].reset_index(drop=True), read.meta()

    # iter_payments names a lost connection already (TransientSourceError): the days are read
    # again at once, from scratch, and the last such error is raised as it is.
    return retry(
        read_once,
        _read_again,
        catch=(TransientSourceError,),
        max_retries=max_attempts - 1,
        sleep=time.sleep,
        backoff=NO_WAIT,
        on_retry=log_retry(log, "payments", f"read {_days(first, last)}", max_attempts - 1),
    )


def _read_again(exc: Exception) -> Transient:
    """A TransientSourceError of iter_payments (a connection lost): worth another read."""
    return Transient(exc.problem if isinstance(exc, SourceError) else str(exc))


def _days(first: dt.date, last: dt.date) -> str:
    """'2026-11-27', or '2026-11-01..2026-11-30' for a range: how errors name the days read."""
    return f"{first}" + (f"..{last}" if last != first else "")


def iter_payments(
    engine: sa.Engine,
    *,
    first: dt.date,
    last: dt.date,
    timezone: str,
    hmac_key: bytes,
    fx: FxTable,
    table: str = "payments",
    query: str | None = None,
    chunk_rows: int = CHUNK_ROWS,
    read: PaymentsRead | None = None,
) -> Iterator[pd.DataFrame]:
    """PAYMENTS rows of days first..last, one chunk of at most `chunk_rows` source rows at a time.

    Memory is bounded by the chunk, not the day. Not retried: a TransientSourceError (connection
    lost) means the consumer must start over; `fetch_payments` does. `read` receives the counts.
    """
    if chunk_rows < 1:
        raise ValueError(f"payments: chunk_rows must be >= 1, got {chunk_rows}")
    start, end = day_bounds_utc(first, last, timezone)
    stmt = build_query(table, query)
    where = _days(first, last)
    read = read if read is not None else PaymentsRead()
    tz = zone(timezone)
    known = {currency for _, currency in fx.rates} | {fx.report_currency}
    params = {"start": start, "end": end}
    try:
        with engine.connect() as conn:
            _begin_snapshot(conn)
            read.source_rows = int(conn.execute(count_query(table, query), params).scalar_one())
            # stream_results: a server-side (unbuffered) cursor on MySQL, so the driver holds
            # one chunk, not the day. https://docs.sqlalchemy.org/en/20/core/connections.html#engine-stream-results
            result = conn.execution_options(stream_results=True, max_row_buffer=chunk_rows).execute(
                stmt, params
            )
            previous: Any = None
            for part in result.partitions(chunk_rows):
                read.rows_read += len(part)
                good, previous = _screen(part, previous, known, read, hmac_key, where)
                read.accepted += len(good)
                if good:
                    yield _convert(_frame(good, tz, hmac_key), fx)
            conn.rollback()  # read only: end the snapshot
    except sa.exc.DBAPIError as exc:
        raise _classify(exc, where) from None
    quarantined = sum(read.quarantined.values())
    if read.rows_read != read.source_rows or read.accepted + quarantined != read.rows_read:
        raise SourceError(
            "payments",
            where,
            f"read {read.rows_read} rows ({read.accepted} accepted + {quarantined} quarantined) "
            f"but the snapshot counted {read.source_rows}",
            "make [payments] query deterministic (no LIMIT, no volatile functions) and check "
            "that the database supports consistent snapshots (InnoDB)",
        )


def _begin_snapshot(conn: sa.Connection) -> None:
    """Start a read-only transaction whose reads all see one snapshot of the database."""
    if conn.dialect.name in ("mysql", "mariadb"):
        # WITH CONSISTENT SNAPSHOT only holds under REPEATABLE READ; the server's default may
        # be READ COMMITTED. https://dev.mysql.com/doc/refman/8.0/en/commit.html
        conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        conn.exec_driver_sql("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
    elif conn.dialect.name == "sqlite":
        # pysqlite opens no transaction for SELECTs; without one each SELECT sees its own state.
        conn.exec_driver_sql("BEGIN")


def _screen(
    rows: Sequence[Any],
    previous: Any,
    known: set[str],
    read: PaymentsRead,
    hmac_key: bytes,
    where: str,
) -> tuple[list[Any], Any]:
    """The acceptable rows of a chunk; the others are counted and sampled by reason."""
    good = []
    for row in rows:
        reason = _problem(row, known)
        if reason is None and previous is not None:
            if row.id == previous:
                reason = "duplicate_id"
            elif _before(row.id, previous):
                raise SourceError(
                    "payments",
                    where,
                    "the query's rows are not ordered by id, so repeated ids cannot be found",
                    "end [payments] query with ORDER BY id",
                )
        if reason is None:
            good.append(row)
            previous = row.id
            continue
        read.quarantined[reason] = read.quarantined.get(reason, 0) + 1
        if read.quarantined[reason] <= SAMPLE_PER_REASON:
            read.sample.append(_sample(row, reason, hmac_key))
    return good, previous


def _before(a: Any, b: Any) -> bool:
    try:
        return bool(a < b)
    except TypeError:
        return False


def _problem(row: Any, known: set[str]) -> str | None:
    if row.id is None:
        return "null_id"
    if row.user_id in (None, ""):
        return "null_user"
    if row.amount is None:
        return "null_amount"
    if row.currency in (None, ""):
        return "null_currency"
    if row.created_at is None:
        return "null_created_at"
    if row.kind not in ("purchase", "refund"):
        return "bad_kind"
    # Amounts are positive by contract (a refund is its own row with `kind = refund`): a
    # negative amount would silently flip a purchase into a refund, so it is bad input.
    if row.amount < 0:
        return "negative_amount"
    # An ISO code the FX table has never heard of is bad input (quarantined); a known currency
    # without the day's rate is a gap in the rates file and fails the day (MissingFxRate).
    if str(row.currency).strip().upper() not in known:
        return "unknown_currency"
    return None


def _sample(row: Any, reason: str, hmac_key: bytes) -> dict[str, str | None]:
    """A quarantined row for inspection: the user id pseudonymized, everything else as read."""

    def text(value: Any) -> str | None:
        return None if value is None else str(value)

    return {
        "reason": reason,
        "payment_id": text(row.id),
        "user_pid": pseudonymize_one(str(row.user_id), hmac_key)
        if row.user_id not in (None, "")
        else None,
        "amount": text(row.amount),
        "currency": text(row.currency),
        "kind": text(row.kind),
        "created_at": row.created_at.isoformat() if row.created_at is not None else None,
    }


def _frame(rows: list[Any], tz: Any, hmac_key: bytes) -> pd.DataFrame:
    created = pd.to_datetime([r.created_at for r in rows]).tz_localize("UTC").as_unit("us")
    amounts = [
        decimal_to_micros(Decimal(r.amount)) * (-1 if r.kind == "refund" else 1) for r in rows
    ]
    return pd.DataFrame(
        {
            "payment_id": [str(r.id) for r in rows],
            "user_pid": pseudonymize(pa.array([str(r.user_id) for r in rows]), hmac_key).to_numpy(
                zero_copy_only=False
            ),
            "amount_original_micros": pd.array(amounts, dtype="int64"),
            "currency_original": [str(r.currency).strip().upper() for r in rows],
            "kind": [r.kind for r in rows],
            "created_at": created,
            "date": created.tz_convert(tz).strftime("%Y-%m-%d"),
        }
    )


def _convert(df: pd.DataFrame, fx: FxTable) -> pd.DataFrame:
    rates, converted = convert_micros(
        df["amount_original_micros"], df["currency_original"], df["date"], fx
    )
    df["fx_rate"] = rates
    df["amount_micros"] = converted
    return df[PAYMENTS.columns]


def _classify(exc: sa.exc.DBAPIError, day: str) -> SourceError:
    """A driver error as a named error: transient (connection lost) or permanent."""
    code = _mysql_code(exc)
    if code in _LOST_CONNECTION or exc.connection_invalidated:
        return TransientSourceError(
            "payments",
            day,
            f"connection lost or refused (MySQL error {code})",
            "check the database's health; the day is read again from scratch on retry",
        )
    if isinstance(exc, sa.exc.ProgrammingError):
        return SourceError(
            "payments",
            day,
            f"the query failed ({exc.orig.__class__.__name__})",
            "check [payments] table / [payments] query (columns id, user_id, amount, "
            "currency, kind, created_at; parameters :start and :end)",
        )
    if isinstance(exc, sa.exc.OperationalError) and "no such table" in str(exc.orig):
        # SQLite reports a missing table as an OperationalError.
        return SourceError(
            "payments",
            day,
            "the query failed (no such table)",
            "check [payments] table / [payments] query",
        )
    return SourceError(
        "payments",
        day,
        f"database error {code or ''} {exc.orig.__class__.__name__}",
        "check [payments] url (or ADPERF_PAYMENTS_URL), the server and the credentials",
    )


def _mysql_code(exc: sa.exc.DBAPIError) -> int | None:
    args = getattr(exc.orig, "args", ())
    if args and isinstance(args[0], int):
        return args[0]
    return None
