"""Payments from the product's transactional database (SQLAlchemy; MySQL/MariaDB or SQLite)."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from typing import Any

import pandas as pd
import pyarrow as pa
import sqlalchemy as sa

from adperf.errors import ConfigError, SourceError, TransientSourceError
from adperf.fx import FxTable, convert_micros
from adperf.pseudonym import pseudonymize
from adperf.schema import MICROS, PAYMENTS
from adperf.timeutil import day_bounds_utc, zone

DEFAULT_QUERY = (
    "SELECT id, user_id, amount, currency, kind, created_at FROM {table} "
    "WHERE created_at >= :start AND created_at < :end ORDER BY id"
)
CHUNK_ROWS = 50_000
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
# MySQL client errors for a connection lost mid-query: the day is read again from scratch.
_LOST_CONNECTION = {2006, 2013, 2055}


def build_query(table: str, query: str | None = None) -> sa.TextualSelect:
    """The SELECT for one range of days; `query` replaces the default (params :start, :end)."""
    if query is None:
        if not _IDENT.match(table):
            raise ConfigError(f"payments: [payments] table {table!r} is not a plain table name")
        query = DEFAULT_QUERY.format(table=table)
    return (
        sa.text(query)
        .bindparams(
            sa.bindparam("start", type_=sa.DateTime), sa.bindparam("end", type_=sa.DateTime)
        )
        .columns(
            sa.column("id", sa.String),
            sa.column("user_id", sa.String),
            sa.column("amount", sa.Numeric(18, 4, asdecimal=True)),
            sa.column("currency", sa.String),
            sa.column("kind", sa.String),
            sa.column("created_at", sa.DateTime),
        )
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
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Payments created in report days first..last: PAYMENTS rows and counts (read, quarantined).

    Rows are streamed with a server-side cursor in chunks; user ids are pseudonymized per chunk,
    so raw ids never leave this function. A row with a NULL user id, amount or currency, or an
    unknown kind, is quarantined (counted), never silently dropped.
    """
    start, end = day_bounds_utc(first, last, timezone)
    stmt = build_query(table, query)
    where = f"payments for {first}" + (f"..{last}" if last != first else "")
    for attempt in range(1, max_attempts + 1):
        try:
            chunks, counts = _read(engine, stmt, start, end, timezone, hmac_key, chunk_rows)
            break
        except sa.exc.OperationalError as exc:
            code = _mysql_code(exc)
            if code in _LOST_CONNECTION and attempt < max_attempts:
                continue
            if code in _LOST_CONNECTION or exc.connection_invalidated:
                raise TransientSourceError(
                    "payments",
                    where,
                    f"connection lost mid-read (MySQL error {code})",
                    "check the database's health; the day is read again from scratch on retry",
                ) from None
            raise SourceError(
                "payments",
                where,
                f"database error {code or ''} {exc.orig.__class__.__name__}",
                "check [payments] url (or ADPERF_PAYMENTS_URL), the server and the credentials",
            ) from None
        except sa.exc.ProgrammingError as exc:
            raise SourceError(
                "payments",
                where,
                f"the query failed ({exc.orig.__class__.__name__})",
                "check [payments] table / [payments] query (columns id, user_id, amount, "
                "currency, kind, created_at; parameters :start and :end)",
            ) from None
    df = (
        pd.concat(chunks, ignore_index=True)
        if chunks
        else pd.DataFrame(
            columns=[
                "payment_id",
                "user_pid",
                "amount_original_micros",
                "currency_original",
                "kind",
                "created_at",
                "date",
            ]
        )
    )
    rates, converted = convert_micros(
        df["amount_original_micros"], df["currency_original"], df["date"], fx
    )
    df["fx_rate"] = rates
    df["amount_micros"] = converted
    return df[PAYMENTS.columns].reset_index(drop=True), counts


def _read(
    engine: sa.Engine,
    stmt: sa.TextualSelect,
    start: dt.datetime,
    end: dt.datetime,
    timezone: str,
    hmac_key: bytes,
    chunk_rows: int,
) -> tuple[list[pd.DataFrame], dict[str, int]]:
    chunks: list[pd.DataFrame] = []
    counts = {"rows_read": 0, "quarantined": 0}
    tz = zone(timezone)
    with engine.connect() as conn:
        # stream_results: a server-side (unbuffered) cursor on MySQL, so memory stays bounded.
        result = conn.execution_options(stream_results=True, max_row_buffer=chunk_rows).execute(
            stmt, {"start": start, "end": end}
        )
        for part in result.partitions(chunk_rows):
            counts["rows_read"] += len(part)
            good = [r for r in part if _valid(r)]
            counts["quarantined"] += len(part) - len(good)
            if good:
                chunks.append(_frame(good, tz, hmac_key))
    return chunks, counts


def _valid(row: Any) -> bool:
    return (
        row.user_id not in (None, "")
        and row.amount is not None
        and row.currency not in (None, "")
        and row.kind in ("purchase", "refund")
        and row.created_at is not None
    )


def _frame(rows: list[Any], tz: Any, hmac_key: bytes) -> pd.DataFrame:
    created = pd.to_datetime([r.created_at for r in rows]).tz_localize("UTC").as_unit("us")
    sign = [(-1 if r.kind == "refund" else 1) for r in rows]
    amounts = [int(Decimal(r.amount) * MICROS) * s for r, s in zip(rows, sign, strict=True)]
    return pd.DataFrame(
        {
            "payment_id": [str(r.id) for r in rows],
            "user_pid": pseudonymize(pa.array([str(r.user_id) for r in rows]), hmac_key).to_numpy(
                zero_copy_only=False
            ),
            "amount_original_micros": pd.array(amounts, dtype="int64"),
            "currency_original": [str(r.currency).upper() for r in rows],
            "kind": [r.kind for r in rows],
            "created_at": created,
            "date": created.tz_convert(tz).strftime("%Y-%m-%d"),
        }
    )


def _mysql_code(exc: sa.exc.DBAPIError) -> int | None:
    args = getattr(exc.orig, "args", ())
    if args and isinstance(args[0], int):
        return args[0]
    return None
