"""The warehouse: the analysts' report tables, one report day replaced in one transaction.

Tables and key columns are the contract of DESIGN.md ("Report tables"). Amounts are
DECIMAL(20,6) in the report currency (exact micros from the lake); ratios are floats and NULL
where the denominator is zero. `adperf_load_marker` holds one row per loaded day, written in
the same transaction as the day's rows, so a day is either completely loaded or not at all.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from decimal import Decimal
from typing import Any

import pandas as pd
import pyarrow as pa
import sqlalchemy as sa

from adperf.errors import ConfigError, SourceError, TransientSourceError
from adperf.schema import (
    ACTION_OUTCOMES,
    ACTIONS,
    BOOL,
    CAMPAIGN_REPORT,
    COHORT_ROAS,
    COHORT_ROAS_SEGMENTS,
    F64,
    I64,
    RECONCILIATION,
    SOURCE_DISCREPANCY,
    STR,
    Dataset,
    field_hints,
)

metadata = sa.MetaData()

ID = sa.String(64)
NAME = sa.String(255)
MONEY = sa.Numeric(20, 6)


def table_of(dataset: Dataset) -> sa.Table:
    """The warehouse table of a derived dataset, from its declaration in adperf.schema: key
    columns first (in declared order), then the others; `x_micros` become DECIMAL `x`."""
    fields = sorted(dataset.schema, key=lambda f: field_hints(f).get("key") != "1")
    columns = []
    for field in fields:
        hints = field_hints(field)
        columns.append(
            sa.Column(
                field.name.removesuffix("_micros"),
                _sql_type(dataset, field, hints),
                primary_key=hints.get("key") == "1",
                nullable=field.nullable,
                index=hints.get("index") == "1" or None,
            )
        )
    return sa.Table(dataset.table or dataset.name, metadata, *columns)


def _sql_type(dataset: Dataset, field: pa.Field, hints: dict[str, str]) -> Any:
    sql = hints.get("sql")
    if field.name.endswith("_micros"):
        return MONEY
    if sql == "date":
        return sa.Date
    if field.type == I64:
        return sa.Integer if sql == "int" else sa.BigInteger
    if field.type == F64:
        return sa.Float
    if field.type == BOOL:
        return sa.Boolean
    if field.type == STR and sql is not None and sql.isdigit():
        return sa.String(int(sql))
    raise ValueError(f"{dataset.name}.{field.name}: no warehouse type for {field.type} ({hints})")


ad_spend_daily = sa.Table(
    "ad_spend_daily",
    metadata,
    sa.Column("date", sa.Date, primary_key=True),
    sa.Column("platform", sa.String(16), primary_key=True),
    sa.Column("ad_id", ID, primary_key=True),
    sa.Column("account_id", ID, nullable=False),
    sa.Column("campaign_id", ID, nullable=False),
    sa.Column("campaign_name", NAME),
    sa.Column("adset_id", ID, nullable=False),
    sa.Column("adset_name", NAME),
    sa.Column("ad_name", NAME),
    sa.Column("impressions", sa.BigInteger, nullable=False),
    sa.Column("clicks", sa.BigInteger, nullable=False),
    sa.Column("installs_reported", sa.BigInteger, nullable=False),
    sa.Column("spend", MONEY, nullable=False),
    sa.Column("spend_original", MONEY, nullable=False),
    sa.Column("currency_original", sa.String(3), nullable=False),
    # The ad account's zone: with [adperf] account_days = account (the default) the row's date is
    # the account's own day there (adperf.account_days).
    sa.Column("account_timezone", sa.String(64)),
    sa.Column("fx_rate", sa.Float),
    # The day of the pull the figure comes from: a later pull's figure is never replaced by an
    # earlier one's, whatever order days are loaded in (see load_day, spend_pull).
    sa.Column("pulled", sa.Date),
)

campaign_daily = table_of(CAMPAIGN_REPORT)


cohort_roas = table_of(COHORT_ROAS)
# The triangle sliced by the MMP's country code and device OS ('unknown' where it gave none);
# spend is the campaign cohort's shared among its segments by installs (adperf.transform.cohort).
cohort_roas_segments = table_of(COHORT_ROAS_SEGMENTS)

ltv_model = sa.Table(
    "ltv_model",
    metadata,
    sa.Column("date", sa.Date, primary_key=True),
    sa.Column("model", sa.String(32), primary_key=True),
    sa.Column("params", sa.Text, nullable=False),
    sa.Column("n_customers", sa.BigInteger, nullable=False),
    sa.Column("converged", sa.Boolean, nullable=False),
    sa.Column("log_likelihood", sa.Float),
    # The day the parameters were fitted: earlier than `date` when the fit fell back to the
    # last good model (converged is then false).
    sa.Column("model_date", sa.Date),
    # The model fitted as of date - 90 days predicting each campaign's revenue since then.
    sa.Column("backtest_mape", sa.Float),
    sa.Column("backtest_bias", sa.Float),
)

revenue_reconciliation = table_of(RECONCILIATION)

actions = table_of(ACTIONS)

# Installs the ad platform reports against those the MMP attributes, per paid campaign and day
# (the watch's cross-source check, adperf.transform.watch): gap = platform / MMP - 1, NULL
# without MMP installs; flagged when beyond [watch] max_install_gap on enough installs.
source_discrepancy = table_of(SOURCE_DISCREPANCY)

# One row per change `adperf actions apply --yes` made (or tried) on an ad platform; appended,
# never replaced (adperf/actions). `value_before`/`value_after`, not before/after: BEFORE is a
# reserved word in MySQL. Values are the API's: a status name, or an integer budget in `unit`.
action_log = sa.Table(
    "action_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("date", sa.Date, nullable=False, index=True),  # the report day of the action
    sa.Column("platform", sa.String(16), nullable=False),
    sa.Column("level", sa.String(16), nullable=False),  # of the object changed
    sa.Column("object_id", ID, nullable=False),
    sa.Column("object_name", NAME),
    sa.Column("action", sa.String(8), nullable=False),
    sa.Column("field", sa.String(32), nullable=False),
    sa.Column("value_before", sa.String(64)),
    sa.Column("value_after", sa.String(64)),
    sa.Column("unit", sa.String(32)),
    sa.Column("applied_at", sa.DateTime, nullable=False),  # UTC
    sa.Column("applied_by", sa.String(64), nullable=False),
    sa.Column("status", sa.String(8), nullable=False),  # pending, applied, failed
    sa.Column("error", sa.String(1024)),
    # The `actions` row it comes from, when that is another object (a campaign's adsets).
    sa.Column("source_level", sa.String(16)),
    sa.Column("source_id", ID),
    # 1 while a scale's row is pending or applied, NULL otherwise (a failure releases it). The
    # unique key below lets one apply at a time hold (date, platform, object_id, field), so two
    # concurrent `--yes` runs cannot both scale a budget; NULLs never collide (SQLite, MySQL and
    # PostgreSQL alike).
    sa.Column("claim", sa.SmallInteger),
    sa.Index("uq_action_log_claim", "date", "platform", "object_id", "field", "claim", unique=True),
)

# The follow-up of each applied action (adperf.transform.outcomes): one row per recommendation
# applied `[rules] follow_up_days` before `date`, replaced with the report day like the others.
action_outcomes = table_of(ACTION_OUTCOMES)

load_marker = sa.Table(
    "adperf_load_marker",
    metadata,
    sa.Column("date", sa.Date, primary_key=True),
    sa.Column("loaded_at", sa.DateTime, nullable=False),
    sa.Column("row_counts", sa.Text, nullable=False),
)

# One row per (day, load) of a task that loads some tables of a day on its own (LtvModel loads
# ltv_model before the day's report exists): its completion marker, written with its rows.
table_marker = sa.Table(
    "adperf_table_marker",
    metadata,
    sa.Column("date", sa.Date, primary_key=True),
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("loaded_at", sa.DateTime, nullable=False),
    sa.Column("row_counts", sa.Text, nullable=False),
)

# One row per task run (monitoring): appended by the luigi event handlers of tasks/ops.py.
pipeline_runs = sa.Table(
    "pipeline_runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(96), nullable=False, index=True),
    sa.Column("task_id", sa.String(200), nullable=False),
    sa.Column("family", sa.String(64), nullable=False, index=True),
    sa.Column("day", sa.Date, index=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("started_at", sa.DateTime, nullable=False),
    sa.Column("duration_s", sa.Float, nullable=False),
    sa.Column("rows_in", sa.BigInteger),
    sa.Column("rows_out", sa.BigInteger),
    sa.Column("bytes_out", sa.BigInteger),
    sa.Column("error_class", sa.String(64)),
)

# The column that holds the report day in each table: a day's rows are deleted by it.
DAY_COLUMN = {
    "ad_spend_daily": "date",
    "campaign_daily": "date",
    "cohort_roas": "as_of",
    "cohort_roas_segments": "as_of",
    "ltv_model": "date",
    "revenue_reconciliation": "date",
    "actions": "date",
    "source_discrepancy": "date",
    "action_outcomes": "date",
}
REPORT_TABLES = {name: metadata.tables[name] for name in DAY_COLUMN}
# Tables of cohort triangles: one row per cell (the table's key), as of the latest report day
# that computed it (see _replace_triangle).
TRIANGLE_TABLES = frozenset({"cohort_roas", "cohort_roas_segments"})


def make_engine(url: str) -> sa.Engine:
    """An engine for the warehouse URL: SQLite, MySQL/MariaDB (pymysql), PostgreSQL (psycopg)."""
    try:
        engine = sa.create_engine(url, pool_pre_ping=True)
    except (sa.exc.ArgumentError, ModuleNotFoundError) as exc:
        raise ConfigError(
            f"warehouse: cannot use [adperf] warehouse_url ({exc.__class__.__name__}). Fix: an "
            "SQLAlchemy URL like sqlite:///var/warehouse.db, mysql+pymysql://user@host/db or "
            "postgresql+psycopg://user@host/db (pip install 'adperf[postgres]')"
        ) from None
    return engine


def _create_if_missing(engine: sa.Engine, table: sa.Table) -> None:
    """Create `table` (and its indexes) unless it exists, tolerating a concurrent creator.

    Two worker processes' first runs can both see no table and both CREATE it; the loser's
    error is not a failure (seen as a lost `pipeline_runs` row in the shards test), so it is
    swallowed only when the table is there afterwards. The loser's error differs by server:
    "already exists" (SQLite, MariaDB: OperationalError; PostgreSQL: ProgrammingError) or, on
    PostgreSQL when both CREATEs overlap, a unique violation of its catalog's type names
    (IntegrityError on pg_type_typname_nsp_index), hence any DatabaseError.
    """
    try:
        table.create(engine, checkfirst=True)
    except sa.exc.DatabaseError:
        if not sa.inspect(engine).has_table(table.name):
            raise


def _add_column_if_missing(engine: sa.Engine, table: sa.Table, column: sa.Column[Any]) -> None:
    """ALTER TABLE ADD COLUMN, in a transaction of its own, tolerating a concurrent adder.

    Two workers upgrading the same older warehouse both see the column missing; the loser's
    "duplicate column" error is swallowed only when the column is there afterwards. Names are
    quoted by the server's own rules (`date` and `level` are keywords in some).
    """
    quote = engine.dialect.identifier_preparer
    ddl = (
        f"ALTER TABLE {quote.format_table(table)} ADD COLUMN {quote.format_column(column)} "
        f"{column.type.compile(dialect=engine.dialect)}"
    )
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(ddl))
    except sa.exc.DatabaseError:
        if column.name not in {c["name"] for c in sa.inspect(engine).get_columns(table.name)}:
            raise


def create_tables(engine: sa.Engine, meta: sa.MetaData = metadata) -> None:
    """Create the report tables and the load marker where missing; add new nullable columns.

    Report tables only ever gain nullable columns (the analysts' contract keeps old ones), so
    a warehouse written by an older adperf is brought up to date with ALTER TABLE ADD COLUMN.
    """
    for table in meta.sorted_tables:
        _create_if_missing(engine, table)
    inspector = sa.inspect(engine)
    missing = [
        (table, col)
        for table in meta.sorted_tables
        for col in table.columns
        if col.name not in {c["name"] for c in inspector.get_columns(table.name)}
    ]
    for table, col in missing:
        if not col.nullable:
            raise ConfigError(
                f"warehouse: table {table.name} lacks the required column {col.name}. "
                "Fix: new required columns need a migration; add it as nullable"
            )
    for table, col in missing:
        _add_column_if_missing(engine, table, col)


def create_action_log(engine: sa.Engine) -> None:
    """Create action_log where missing; give an older one the claim column and its unique key.

    An older action_log's scales that are still pending or applied are claimed first (the
    newest row of each object and field, so rows an unguarded race duplicated cannot block the
    key), then the key is created.
    """
    t = action_log
    _create_if_missing(engine, t)
    inspector = sa.inspect(engine)
    if "claim" not in {c["name"] for c in inspector.get_columns(t.name)}:
        _add_column_if_missing(engine, t, t.c.claim)
    index = next(i for i in t.indexes if i.name == "uq_action_log_claim")
    if index.name in {i["name"] for i in sa.inspect(engine).get_indexes(t.name)}:
        return
    key = (t.c.date, t.c.platform, t.c.object_id, t.c.field)
    newest = (
        sa.select(sa.func.max(t.c.id))
        .where(t.c.status.in_(["pending", "applied"]), t.c.field != "status")
        .group_by(*key)
    )
    try:
        with engine.begin() as conn:
            ids = [i for (i,) in conn.execute(newest)]
            conn.execute(t.update().where(t.c.claim.is_not(None)).values(claim=None))
            if ids:
                conn.execute(t.update().where(t.c.id.in_(ids)).values(claim=1))
            index.create(conn)
    except sa.exc.DatabaseError:
        # Another apply migrating at the same moment made it first.
        if index.name not in {i["name"] for i in sa.inspect(engine).get_indexes(t.name)}:
            raise


def is_loaded(engine: sa.Engine, day: str, marker: str | None = None) -> bool:
    """True when the day's completion marker (of the load named `marker`) is in the warehouse."""
    table = load_marker if marker is None else table_marker
    if not sa.inspect(engine).has_table(table.name):
        return False
    query = sa.select(table.c.date).where(table.c.date == _day(day))
    if marker is not None:
        query = query.where(table_marker.c.name == marker)
    with engine.connect() as conn:
        found = conn.execute(query).first()
    return found is not None


def load_day(
    engine: sa.Engine,
    day: str,
    frames: dict[str, pd.DataFrame],
    *,
    spend_pull: tuple[pd.DataFrame, dict[str, tuple[str, str]]] | None = None,
    marker: str | None = None,
) -> dict[str, int]:
    """Replace one report day in every given table plus its marker, in one transaction.

    `marker` names a partial load (some tables of the day, e.g. `ltv_model` by LtvModel): its
    marker is (day, marker) in adperf_table_marker, and the day's report marker is untouched.

    `spend_pull` = (ad_spend_daily rows of the pull made on `day`, {platform: (first, last)}
    days it covers): each (platform, day) of those windows is replaced by the pull's rows (none
    when it has none), restated earlier days included, unless the table already holds that
    day from a later pull. So ad_spend_daily ends with the latest figure of every day, in
    whatever order report days are loaded or re-loaded.
    """
    unknown = set(frames) - set(REPORT_TABLES)
    if unknown:
        raise ValueError(f"load_day: unknown tables {sorted(unknown)}")
    if spend_pull is not None and "ad_spend_daily" in frames:
        raise ValueError("load_day: give ad_spend_daily either as a frame or as spend_pull")
    create_tables(engine)
    counts: dict[str, int] = {}
    with engine.begin() as conn:
        if spend_pull is not None:
            counts["ad_spend_daily"] = _replace_pulled_spend(conn, day, *spend_pull)
        for name, df in frames.items():
            table = REPORT_TABLES[name]
            day_col = table.c[DAY_COLUMN[name]]
            conn.execute(table.delete().where(day_col == _day(day)))
            rows = to_rows(df, table)
            bad = [r for r in rows if r[DAY_COLUMN[name]] != _day(day)]
            if bad:
                raise ValueError(f"load_day: {name} has rows of another day than {day}")
            if name in TRIANGLE_TABLES:
                rows = _replace_triangle(conn, table, day, rows)
            if rows:
                conn.execute(table.insert(), rows)
            counts[name] = len(rows)
        done = {
            "date": _day(day),
            "loaded_at": dt.datetime.now(dt.UTC).replace(tzinfo=None),
            "row_counts": json.dumps(counts, sort_keys=True),
        }
        if marker is None:
            conn.execute(load_marker.delete().where(load_marker.c.date == _day(day)))
            conn.execute(load_marker.insert(), [done])
        else:
            mine = (table_marker.c.date == _day(day)) & (table_marker.c.name == marker)
            conn.execute(table_marker.delete().where(mine))
            conn.execute(table_marker.insert(), [{**done, "name": marker}])
    return counts


def load_day_at(
    url: str,
    day: str,
    frames: dict[str, pd.DataFrame],
    *,
    spend_pull: tuple[pd.DataFrame, dict[str, tuple[str, str]]] | None = None,
    marker: str | None = None,
) -> dict[str, int]:
    """`load_day` into the warehouse at `url`; a driver error becomes `load_failed`'s named
    error (transient when the server went away)."""
    engine = make_engine(url)
    try:
        return load_day(engine, day, frames, spend_pull=spend_pull, marker=marker)
    except sa.exc.DBAPIError as exc:
        raise load_failed(exc, engine, day) from None
    finally:
        engine.dispose()


def _replace_triangle(
    conn: sa.Connection, table: sa.Table, day: str, rows: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The rows of `day`'s triangle to insert once the cells it supersedes are deleted.

    A triangle table holds each cell (its key) once, as of the latest report day that computed
    it: a day's triangle covers every cell of its cohorts that an earlier day's did, so the
    earlier day's rows of those cohorts are deleted (diagonal rows of an older adperf too), and
    cells a later day already loaded are kept. The table ends the same in whatever order days
    are loaded or re-loaded; `day`'s own rows were deleted by the caller.
    """
    if not rows:
        return rows
    first, as_of = min(r["cohort_date"] for r in rows), _day(day)
    window = table.c.cohort_date.between(first, as_of)
    conn.execute(table.delete().where(window, table.c.as_of < as_of))
    key = [c.name for c in table.primary_key.columns]
    later = conn.execute(sa.select(*[table.c[k] for k in key]).where(window, table.c.as_of > as_of))
    newer = {tuple(r) for r in later}
    return [r for r in rows if tuple(r[k] for k in key) not in newer]


def record_pipeline_run(engine: sa.Engine, row: dict[str, Any]) -> None:
    """Append one task run to `pipeline_runs` (created where missing)."""
    try:
        with engine.begin() as conn:
            conn.execute(pipeline_runs.insert(), [row])
        return
    except sa.exc.DatabaseError:
        # Asked after a failure, not before every row (one query less per task run): an
        # insert into a table that is there failed for another reason, which is raised.
        if sa.inspect(engine).has_table(pipeline_runs.name):
            raise
    _create_if_missing(engine, pipeline_runs)
    with engine.begin() as conn:
        conn.execute(pipeline_runs.insert(), [row])


def latest_pipeline_runs(engine: sa.Engine, first: dt.date, last: dt.date) -> pd.DataFrame:
    """The last recorded run of each (family, day) with first <= day <= last."""
    if not sa.inspect(engine).has_table(pipeline_runs.name):
        return pd.DataFrame(columns=[c.name for c in pipeline_runs.columns])
    last_ids = (
        sa.select(sa.func.max(pipeline_runs.c.id))
        .where(pipeline_runs.c.day.between(first, last))
        .group_by(pipeline_runs.c.family, pipeline_runs.c.day)
    )
    with engine.connect() as conn:
        return pd.read_sql(sa.select(pipeline_runs).where(pipeline_runs.c.id.in_(last_ids)), conn)


def _replace_pulled_spend(
    conn: sa.Connection, day: str, rows: pd.DataFrame, windows: dict[str, tuple[str, str]]
) -> int:
    """Write one pull's ad_spend_daily rows over its windows; later pulls already there win."""
    t = ad_spend_daily
    pulled = _day(day)
    frame = rows.assign(pulled=pulled)
    written = 0
    outside = ~pd.Series(False, index=frame.index)
    for platform, (first, last) in windows.items():
        lo, hi = _day(first), _day(last)
        if hi != pulled:
            raise ValueError(f"load_day: the {platform} pull of {day} ends on {last}")
        mine = (frame["platform"] == platform) & frame["date"].map(
            lambda v, lo=lo, hi=hi: lo <= _day(v) <= hi
        )
        outside &= ~mine
        newer = {
            d
            for (d,) in conn.execute(
                sa.select(t.c.date)
                .where(t.c.platform == platform, t.c.date.between(lo, hi), t.c.pulled > pulled)
                .distinct()
            )
        }
        # Days a later pull already wrote keep their figure; the rest are replaced.
        keep = t.c.date.in_(sorted(newer)) if newer else sa.false()
        conn.execute(t.delete().where(t.c.platform == platform, t.c.date.between(lo, hi), ~keep))
        chosen = frame[mine & ~frame["date"].map(lambda v, newer=newer: _day(v) in newer)]
        out = to_rows(chosen, t)
        if out:
            conn.execute(t.insert(), out)
        written += len(out)
    if outside.any():
        bad = frame[outside].iloc[0]
        raise ValueError(
            f"load_day: ad_spend_daily row of {bad['platform']} on {bad['date']} is outside "
            f"the pull windows {windows}"
        )
    return written


def to_rows(df: pd.DataFrame, table: sa.Table) -> list[dict[str, Any]]:
    """Lake frame → warehouse rows: `<col>_micros` become exact decimals, NaN becomes NULL."""
    columns: dict[str, list[Any]] = {}
    for col in table.columns:
        name = col.name
        if name in df.columns:
            values = df[name].tolist()
        elif f"{name}_micros" in df.columns:
            values = [_micros_to_decimal(v) for v in df[f"{name}_micros"].tolist()]
        elif col.nullable:
            values = [None] * len(df)
        else:
            raise ValueError(f"{table.name}: frame has no column {name} (or {name}_micros)")
        if isinstance(col.type, sa.Date):
            values = [_day(v) if v is not None else None for v in values]
        columns[name] = [_clean(v) for v in values]
    names = list(columns)
    return [dict(zip(names, vals, strict=True)) for vals in zip(*columns.values(), strict=True)]


def read_table(engine: sa.Engine, name: str) -> pd.DataFrame:
    """A whole report table, for tests and the CLI."""
    with engine.connect() as conn:
        return pd.read_sql(sa.select(metadata.tables[name]), conn)


def read_days(engine: sa.Engine, name: str, first: str, last: str) -> pd.DataFrame:
    """Rows of report table `name` whose report day is in [first, last] (none if no table)."""
    table = REPORT_TABLES[name]
    return _read_between(engine, table, table.c[DAY_COLUMN[name]], first, last)


def _read_between(
    engine: sa.Engine, table: sa.Table, day_col: sa.Column[Any], first: str, last: str
) -> pd.DataFrame:
    """`table`'s rows with `day_col` in [first, last]; no rows when the table is not there."""
    if not sa.inspect(engine).has_table(table.name):
        return pd.DataFrame(columns=[c.name for c in table.columns])
    # A warehouse loaded by an older adperf lacks the newer nullable columns until its next
    # load (create_tables adds them): read what is there, the rest as NULL.
    existing = {c["name"] for c in sa.inspect(engine).get_columns(table.name)}
    with engine.connect() as conn:
        query = sa.select(*[c for c in table.columns if c.name in existing]).where(
            day_col.between(_day(first), _day(last))
        )
        frame = pd.read_sql(query, conn)
    return frame.reindex(columns=[c.name for c in table.columns])


def read_action_log(engine: sa.Engine, first: str, last: str) -> pd.DataFrame:
    """action_log rows of the report days [first, last]; none before the first apply. A
    follow-up or a week's cap needs a few days of it, not the log since the first day."""
    return _read_between(engine, action_log, action_log.c.date, first, last)


def _micros_to_decimal(v: Any) -> Decimal | None:
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
        return None
    return Decimal(int(v)).scaleb(-6)


def _clean(v: Any) -> Any:
    if v is None or v is pd.NA:
        return None
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):
        return v.item()  # numpy scalar → Python scalar (pymysql can't escape numpy types)
    return v


def _day(v: Any) -> dt.date:
    if isinstance(v, dt.datetime):
        return v.date()
    if isinstance(v, dt.date):
        return v
    return dt.date.fromisoformat(str(v)[:10])


# MySQL/MariaDB client errors of a lost server: 2003 cannot connect, 2006 gone away, 2013 lost
# during a query, 2055 lost at handshake.
_MYSQL_LOST = frozenset({2003, 2006, 2013, 2055})


def load_failed(exc: sa.exc.DBAPIError, engine: sa.Engine, day: str) -> SourceError:
    """A driver error of a day's load as a named error: no SQL text or row values in it
    (SQLAlchemy's message and PostgreSQL's DETAIL quote both), the server by host and port
    only (never the URL's password). A lost server is transient."""
    orig = exc.orig
    # pymysql: args[0] is the error number. psycopg: `sqlstate` (its args hold the message,
    # with row values in DETAIL lines: never shown). Class 08 is a connection exception,
    # 57P01-57P03 the server shutting down (https://www.postgresql.org/docs/current/errcodes-appendix.html).
    number = orig.args[0] if orig is not None and orig.args else None
    mysql_code = number if isinstance(number, int) else None
    sqlstate = getattr(orig, "sqlstate", None)
    code = mysql_code if mysql_code is not None else sqlstate
    label = f"{'MySQL error' if mysql_code is not None else 'SQLSTATE'} {code}" if code else ""
    where = f"{engine.url.host}:{engine.url.port}" if engine.url.host else engine.url.database
    lost = (
        exc.connection_invalidated
        or mysql_code in _MYSQL_LOST
        or (isinstance(sqlstate, str) and (sqlstate[:2] == "08" or sqlstate[:3] == "57P"))
    )
    if lost:
        return TransientSourceError(
            "warehouse",
            day,
            f"lost the connection to {where} during the load ({label or 'no code'}); the day's "
            "transaction was rolled back, nothing of it is loaded",
            "check that the warehouse server is up, then run the day again",
        )
    return SourceError(
        "warehouse",
        day,
        f"the load into {where} failed ({type(orig).__name__}{' ' + label if label else ''}); "
        "the day's transaction was rolled back",
        "check [adperf] warehouse_url, the server and the credentials; then run the day again",
    )
