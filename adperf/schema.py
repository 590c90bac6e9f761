"""Every lake dataset's columns and types, declared once and checked when written.

Conventions (all datasets):
- ids are strings (ad platform ids have 18 digits; read as numbers they corrupt);
- money is int64 *micros* (1 unit = 1_000_000) so sums are exact; `*_micros` columns in the
  report currency unless the name says `_original_` (then in `currency_original`);
- `date` is the report day as 'YYYY-MM-DD' (a day in `report_timezone`);
- timestamps are UTC, microseconds;
- user ids appear only as `*_pid` pseudonyms (adperf.pseudonym), never raw.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import pyarrow as pa

from adperf.errors import SchemaError

STR = pa.string()
I64 = pa.int64()
F64 = pa.float64()
BOOL = pa.bool_()
TS = pa.timestamp("us", tz="UTC")

MICROS = 1_000_000


@dataclass(frozen=True)
class Dataset:
    """A lake dataset: its name (folder), its columns and which may be null."""

    name: str
    schema: pa.Schema
    doc: str
    table: str | None = None  # its warehouse table, when it is not named like the dataset

    @property
    def columns(self) -> list[str]:
        return list(self.schema.names)


def _schema(*fields: tuple[str, pa.DataType, bool]) -> pa.Schema:
    return pa.schema([pa.field(n, t, nullable=nullable) for n, t, nullable in fields])


_AD_FIELDS: tuple[tuple[str, pa.DataType, bool], ...] = (
    ("date", STR, False),
    ("platform", STR, False),
    ("account_id", STR, False),
    ("campaign_id", STR, False),
    ("campaign_name", STR, True),
    ("adset_id", STR, False),
    ("adset_name", STR, True),
    ("ad_id", STR, False),
    ("ad_name", STR, True),
    ("impressions", I64, False),
    ("clicks", I64, False),
    ("installs_reported", I64, False),
    ("purchases_reported", I64, False),
    ("purchase_value_original_micros", I64, False),
    ("spend_original_micros", I64, False),
    ("currency_original", STR, False),
    # The ad account's IANA zone: its days are its own unless `[adperf] account_days = report`
    # re-cut them. Null in pulls made before it was recorded.
    ("account_timezone", STR, True),
)

AD_SPEND = Dataset(
    "ad_spend",
    _schema(*_AD_FIELDS),
    "one platform's ad-level delivery for one day, in the ad account's currency",
)

SPEND = Dataset(
    "spend",
    _schema(*_AD_FIELDS, ("fx_rate", F64, False), ("spend_micros", I64, False)),
    "all platforms' ad-level spend for one day, converted to the report currency",
)

INSTALLS = Dataset(
    "installs",
    _schema(
        ("date", STR, False),
        ("install_time", TS, False),
        ("user_pid", STR, True),  # pseudonym of the MMP's Customer User ID (null: unmatched)
        ("device_pid", STR, True),  # pseudonym of the MMP's device id (AppsFlyer ID)
        ("app_id", STR, False),
        ("media_source", STR, False),  # as the MMP names it ('Facebook Ads', 'organic', ...)
        # a registered platform | organic | restricted | other (adperf.vocabulary)
        ("platform", STR, False),
        ("campaign_id", STR, True),
        ("campaign_name", STR, True),
        ("adset_id", STR, True),
        ("adset_name", STR, True),
        ("ad_id", STR, True),
        ("ad_name", STR, True),
        ("country", STR, True),
        ("device_os", STR, True),
    ),
    "installs of one day (attributed and organic) from the MMP's raw installs reports",
)

PAYMENTS = Dataset(
    "payments",
    _schema(
        ("date", STR, False),
        ("payment_id", STR, False),
        ("user_pid", STR, False),
        ("created_at", TS, False),
        ("kind", STR, False),  # purchase | refund
        ("amount_original_micros", I64, False),  # signed: refunds are negative
        ("currency_original", STR, False),
        ("fx_rate", F64, False),
        ("amount_micros", I64, False),  # signed, report currency
    ),
    "payments created in one report day, refunds negative, converted to the report currency",
)

EVENTS = Dataset(
    "events",
    _schema(
        ("date", STR, False),
        ("ts", TS, False),
        ("event", STR, False),
        ("user_pid", STR, False),
        ("peer_pid", STR, True),
        ("premium", BOOL, True),
    ),
    "server log events of one report day, ids pseudonymized, only the fields adperf uses",
)

# -- derived datasets (transform outputs) ------------------------------------------------------
# Their fields also say how the warehouse keeps them (adperf.warehouse derives its tables from
# them): `key` fields make the table's primary key; `sql` is "date" (a 'YYYY-MM-DD' string kept
# as DATE), "int" (INTEGER, not BIGINT) or a VARCHAR length; `*_micros` become DECIMAL amounts
# named without the suffix; `index` asks for an index.


def derived(
    name: str,
    dtype: pa.DataType,
    nullable: bool = False,
    *,
    key: bool = False,
    sql: str | int | None = None,
    index: bool = False,
) -> pa.Field:
    """A field of a derived dataset, with how the warehouse keeps it."""
    meta = {"key": "1"} if key else {}
    if sql is not None:
        meta["sql"] = str(sql)
    if index:
        meta["index"] = "1"
    return pa.field(name, dtype, nullable=nullable and not key, metadata=meta or None)


def field_hints(field: pa.Field) -> dict[str, str]:
    """The warehouse hints of a derived dataset's field (see `derived`)."""
    return {k.decode(): v.decode() for k, v in (field.metadata or {}).items()}


PLATFORM_SQL = 16  # VARCHAR length of `platform` (a registry name, organic, ...)
ID_SQL = 64  # VARCHAR length of an id
NAME_SQL = 255  # VARCHAR length of a name

_COHORT_KEY = (
    derived("cohort_date", STR, key=True, sql="date"),
    derived("platform", STR, key=True, sql=PLATFORM_SQL),
    derived("campaign_id", STR, key=True, sql=ID_SQL),
)
_COHORT_CELL = (
    derived("age_days", I64, key=True, sql="int"),
    derived("users", I64),
    derived("installs", I64),
    derived("payers", I64),
    derived("revenue_micros", I64),
    derived("spend_micros", I64),
    derived("roas", F64, nullable=True),  # null where the cohort had no spend
    derived("as_of", STR, sql="date", index=True),  # the report day of the triangle
)

COHORT_ROAS = Dataset(
    "cohort_roas",
    pa.schema([*_COHORT_KEY, derived("campaign_name", STR, True, sql=NAME_SQL), *_COHORT_CELL]),
    "the cohort triangle as of a report day: per cohort day, campaign and age reached",
)

COHORT_ROAS_SEGMENTS = Dataset(
    "cohort_roas_segments",
    pa.schema(
        [
            *_COHORT_KEY,
            derived("country", STR, key=True, sql=16),  # the MMP's code, or 'unknown'
            derived("device_os", STR, key=True, sql=32),
            *_COHORT_CELL,
        ]
    ),
    "the cohort triangle by the MMP's country and device OS (spend shared by installs)",
)

# A report day's campaign: the key of the per-campaign tables, and its name.
_CAMPAIGN_DAY = (
    derived("date", STR, key=True, sql="date"),
    derived("platform", STR, key=True, sql=PLATFORM_SQL),
    derived("campaign_id", STR, key=True, sql=ID_SQL),
    derived("campaign_name", STR, True, sql=NAME_SQL),
)

CAMPAIGN_REPORT = Dataset(
    "campaign_report",
    pa.schema(
        [
            *_CAMPAIGN_DAY,
            derived("spend_micros", I64),
            derived("impressions", I64),
            derived("clicks", I64),
            derived("installs", I64),
            derived("cpi_micros", I64, True),  # null without installs
            derived("payers", I64),
            derived("revenue_micros", I64),
            derived("roas", F64, True),  # null without spend
            derived("assisted_revenue_micros", I64),
            derived("pltv_micros", I64, True),
            derived("proas", F64, True),
            # The 90% interval of pROAS (bootstrap over the cohort's users and the LTV parameters).
            derived("proas_low", F64, True),
            derived("proas_high", F64, True),
        ]
    ),
    "one report day per campaign: delivery, installs, revenue, ROAS, pLTV and pROAS",
    table="campaign_daily",
)

ACTIONS = Dataset(
    "actions",
    pa.schema(
        [
            derived("date", STR, key=True, sql="date"),
            derived("platform", STR, key=True, sql=PLATFORM_SQL),
            derived("level", STR, key=True, sql=16),
            derived("object_id", STR, key=True, sql=ID_SQL),
            derived("object_name", STR, True, sql=NAME_SQL),
            derived("action", STR, sql=8),  # scale, pause, hold, expand, ...
            derived("reason", STR, sql=512),
            derived("roas", F64, True),
            derived("proas", F64, True),
            derived("spend_micros", I64),
            # An adset's campaign_id (the campaign's own id at campaign level).
            derived("parent_id", STR, True, sql=ID_SQL),
            derived("proas_low", F64, True),
            derived("proas_high", F64, True),
            # P(true ROAS > [rules] scale_roas) and P(< pause_roas) under the draws of the
            # window's pooled evidence; null when there were none.
            derived("p_above", F64, True),
            derived("p_below", F64, True),
        ]
    ),
    "one report day's recommendations per campaign or adset, with their evidence",
)

RECONCILIATION = Dataset(
    "reconciliation",
    pa.schema(
        [
            derived("date", STR, key=True, sql="date"),
            derived("total_payments_micros", I64),
            derived("attributed_micros", I64),
            derived("organic_micros", I64),
            derived("unattributed_micros", I64),
            # Revenue of installs whose network withholds user-level data (media source
            # 'restricted'). Nullable in the warehouse: NULL on days loaded before it was kept.
            derived("restricted_micros", I64, True),
        ]
    ),
    "one payment day's revenue split by how its payers were acquired; the parts add up",
    table="revenue_reconciliation",
)

# Lake only (no warehouse table): the campaign report and the reconciliation are made of it.
ATTRIBUTION = Dataset(
    "attribution",
    pa.schema(
        [
            derived("date", STR),
            derived("platform", STR),  # a registered platform | organic | unattributed | ...
            derived("campaign_id", STR, True),  # a bucket's own name for organic, unattributed
            derived("campaign_name", STR, True),
            derived("adset_id", STR, True),  # null for the buckets
            derived("ad_id", STR, True),
            derived("payers", I64),
            derived("purchases", I64),
            derived("revenue_micros", I64),  # net of refunds
        ]
    ),
    "one payment day's revenue per acquiring ad (or bucket: organic, unattributed, restricted)",
)

# Lake only: the cohort pLTV the campaign report and the actions are made of (adperf.transform.ltv).
_PLTV_KEY = (
    derived("date", STR),  # the cohort's install day (pltv); the report day (pltv_window, draws)
    derived("level", STR),  # 'campaign' or 'adset'
    derived("platform", STR),
    derived("campaign_id", STR),
    derived("adset_id", STR, True),  # null at campaign level
)
_PLTV_VALUE = (
    derived("installs", I64),  # all installs, with or without a user id
    derived("users", I64),  # installs with a user id (the users valued)
    derived("payers", I64),
    derived("realized_micros", I64),
    derived("pltv_micros", I64),
    # The 90% interval (bootstrap over the users and the LTV parameters; the point without one).
    derived("pltv_low_micros", I64),
    derived("pltv_high_micros", I64),
)

PLTV = Dataset(
    "pltv",
    pa.schema([*_PLTV_KEY, *_PLTV_VALUE]),
    "one install cohort's predicted lifetime value per campaign and adset, with its interval",
)

PLTV_WINDOW = Dataset(
    "pltv_window",
    pa.schema(
        [
            *_PLTV_KEY,
            derived("window_days", I64),  # [rules] window_days: the install days pooled
            derived("cohorts", I64),  # install days of the window with users of the segment
            *_PLTV_VALUE,
        ]
    ),
    "the install cohorts of the decision window pooled per campaign and adset",
)

PLTV_DRAWS = Dataset(
    "pltv_draws",
    pa.schema([*_PLTV_KEY, derived("draw", I64), derived("pltv_micros", I64)]),
    "the bootstrap draws of each pooled window's pLTV (the decision rule's probabilities)",
)

# Installs the ad platform reports against those the MMP attributes, per paid campaign and day
# (the watch's cross-source check, adperf.transform.watch).
SOURCE_DISCREPANCY = Dataset(
    "source_discrepancy",
    pa.schema(
        [
            *_CAMPAIGN_DAY,
            derived("installs_platform", I64),
            derived("installs_mmp", I64),
            derived("difference", I64),
            derived("gap", F64, True),  # platform / MMP - 1; null without MMP installs
            derived("flagged", BOOL),  # beyond [watch] max_install_gap on enough installs
        ]
    ),
    "one report day's platform-reported against MMP-attributed installs per paid campaign",
)

# The follow-up of each applied action (adperf.transform.outcomes).
ACTION_OUTCOMES = Dataset(
    "action_outcomes",
    pa.schema(
        [
            derived("date", STR, key=True, sql="date"),  # the report day of the follow-up
            derived("action_date", STR, key=True, sql="date"),  # the report day of the action
            derived("platform", STR, key=True, sql=PLATFORM_SQL),
            derived("level", STR, key=True, sql=16),
            derived("object_id", STR, key=True, sql=ID_SQL),
            derived("action", STR, key=True, sql=8),
            derived("object_name", STR, True, sql=NAME_SQL),
            derived("change", STR, sql=64),  # '+20%' for a budget, 'PAUSED', 'copy 1234…'
            derived("objects_changed", I64, sql="int"),  # objects changed (a campaign's adsets)
            derived("days", I64, sql="int"),
            derived("spend_before_micros", I64),
            derived("spend_since_micros", I64),
            derived("installs_before", I64),
            derived("installs_since", I64),
            derived("cpi_before_micros", I64, True),
            derived("cpi_since_micros", I64, True),
            derived("proas_before", F64, True),
            derived("proas_since", F64, True),
            derived("proas_expected", F64, True),  # the decision's pooled pROAS
            # Days of `days` whose cohorts had a pLTV (their report was run).
            derived("valued_days_before", I64, True, sql="int"),
            derived("valued_days_since", I64, True, sql="int"),
            derived("threshold", F64),  # the rule's threshold the decision crossed
            derived("verdict", STR, sql=16),  # above, below, stopped, still spending, no data
            derived("line", STR, sql=512),
        ]
    ),
    "one report day's follow-ups of the actions applied `[rules] follow_up_days` before it",
)

DERIVED = {
    d.name: d
    for d in (
        CAMPAIGN_REPORT,
        COHORT_ROAS,
        COHORT_ROAS_SEGMENTS,
        ACTIONS,
        RECONCILIATION,
        SOURCE_DISCREPANCY,
        ACTION_OUTCOMES,
    )
}
ALL = {d.name: d for d in (AD_SPEND, SPEND, INSTALLS, PAYMENTS, EVENTS, *DERIVED.values())}


def to_table(df: pd.DataFrame, dataset: Dataset, *, allow_empty: bool = False) -> pa.Table:
    """Check `df` against the dataset's schema and return it as an Arrow table in that schema.

    Extra columns are an error (a typo would otherwise vanish silently), as are missing columns,
    nulls in non-nullable columns and values that do not cast exactly.
    """
    missing = [c for c in dataset.columns if c not in df.columns]
    extra = [c for c in df.columns if c not in dataset.columns]
    if missing or extra:
        raise SchemaError(
            f"dataset {dataset.name}: missing columns {missing}, unexpected columns {extra}"
        )
    if len(df) == 0 and not allow_empty:
        raise SchemaError(f"dataset {dataset.name}: no rows (pass allow_empty=True if expected)")
    arrays = []
    for field in dataset.schema:
        col = df[field.name]
        try:
            arr = pa.array(col, from_pandas=True)
            if arr.type != field.type:
                arr = arr.cast(field.type, safe=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
            raise SchemaError(
                f"dataset {dataset.name}: column {field.name} is not {field.type}: {exc}"
            ) from exc
        if not field.nullable and arr.null_count:
            raise SchemaError(
                f"dataset {dataset.name}: column {field.name} has {arr.null_count} nulls"
            )
        arrays.append(arr)
    return pa.Table.from_arrays(arrays, schema=dataset.schema)


def empty_frame(dataset: Dataset) -> pd.DataFrame:
    """An empty DataFrame with the dataset's columns and dtypes."""
    frame: pd.DataFrame = dataset.schema.empty_table().to_pandas()
    return frame
