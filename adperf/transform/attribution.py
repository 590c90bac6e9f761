"""Install attribution of payments: which campaign/adset/ad acquired each paying user.

Pure functions: DataFrames in, DataFrames out; the report day is an argument.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from adperf import platforms
from adperf.errors import ReconciliationError
from adperf.schema import ATTRIBUTION
from adperf.vocabulary import INSTALL_BUCKETS, ORGANIC, OTHER, RESTRICTED, UNATTRIBUTED

__all__ = ["ORGANIC", "PAID_PLATFORMS", "RESTRICTED", "UNATTRIBUTED"]

#: Install platforms whose installs were bought: their payers are credited to an ad.
PAID_PLATFORMS: tuple[str, ...] = (*platforms.NAMES, OTHER)

USER_MAP_COLUMNS: list[str] = [
    "user_pid",
    "install_date",
    "platform",
    "campaign_id",
    "campaign_name",
    "adset_id",
    "ad_id",
]
AD_KEY: list[str] = ["platform", "campaign_id", "campaign_name", "adset_id", "ad_id"]
ATTRIBUTION_COLUMNS: list[str] = ATTRIBUTION.columns  # declared in adperf.schema


def require_day(df: pd.DataFrame, day: str, what: str) -> None:
    """Raise ValueError if `df` (one day's rows, column `date`) holds rows of another day."""
    # A caller passing a window where one day is expected would double count silently.
    other = sorted(set(df["date"].dropna().unique()) - {day})
    if other or df["date"].isna().any():
        raise ValueError(
            f"{what} for {day}: expected rows of {day} only, got dates {other[:5]}"
            + (" and null dates" if df["date"].isna().any() else "")
            + f". Fix: pass only the {day} partition"
        )


def build_user_map(installs: pd.DataFrame, extra: tuple[str, ...] = ()) -> pd.DataFrame:
    """One row per matched user (non-null user_pid): the user's first install in `installs`,
    with `extra` columns of that install (e.g. country) after the user map's own."""
    pids = installs["user_pid"]
    valid = pids.notna().to_numpy()
    # Most users installed once: only the others need the tie-breaking sort below, and rows are
    # picked by position and copied once (sorting a year of installs on six keys, then again,
    # was ~20 s of a cold `large` run: three tasks build this map).
    again = pids.duplicated(keep=False).to_numpy() & valid
    keys = installs.iloc[np.flatnonzero(again)][_FIRST_INSTALL_KEYS]
    # Ties at the same install_time go to the paid install (an MMP may report both an organic
    # and an attributed row for one user); then campaign_id, adset_id, ad_id for determinism.
    keys = keys.assign(_organic=keys["platform"].eq(ORGANIC), _row=np.flatnonzero(again))
    firsts = keys.sort_values(
        ["user_pid", "install_time", "_organic", "campaign_id", "adset_id", "ad_id"],
        kind="mergesort",
        na_position="last",
    ).drop_duplicates("user_pid", keep="first")
    rows = np.concatenate([np.flatnonzero(valid & ~again), firsts["_row"].to_numpy()])
    rows = rows[pids.iloc[rows].argsort(kind="stable").to_numpy()]
    out = installs.rename(columns={"date": "install_date"})[[*USER_MAP_COLUMNS, *extra]]
    return out.iloc[rows].reset_index(drop=True)


_FIRST_INSTALL_KEYS = ["user_pid", "install_time", "platform", "campaign_id", "adset_id", "ad_id"]


def build_attribution(day: str, payments: pd.DataFrame, user_map: pd.DataFrame) -> pd.DataFrame:
    """Payers, purchases and revenue of `day`'s payments per acquiring ad, and per bucket no
    campaign owns: organic, restricted (a network withheld the user-level data), unattributed."""
    require_day(payments, day, "payments")
    known = {*PAID_PLATFORMS, *INSTALL_BUCKETS}
    unknown = sorted(set(user_map["platform"].dropna().unique()) - known)
    if unknown:
        raise ValueError(
            f"user map for {day}: unknown install platforms {unknown}; expected one of "
            f"{sorted(known)}. Fix: map them in the installs extract"
        )
    if user_map["user_pid"].duplicated().any():
        raise ValueError(f"user map for {day}: user_pid is not unique. Fix: use build_user_map")

    umap = user_map[["user_pid", *AD_KEY]].copy()
    umap["campaign_name"] = _latest_campaign_names(user_map)
    paid = umap["platform"].isin(PAID_PLATFORMS)
    # Organic and restricted users have no ad: one row per bucket, named like its key.
    bucket = umap.loc[~paid, "platform"]
    umap.loc[~paid, "campaign_id"] = bucket
    umap.loc[~paid, "campaign_name"] = bucket
    umap.loc[~paid, ["adset_id", "ad_id"]] = None

    joined = payments[["user_pid", "kind", "amount_micros"]].merge(
        umap, on="user_pid", how="left", validate="many_to_one"
    )
    missing = joined["platform"].isna()
    joined.loc[missing, ["platform", "campaign_id", "campaign_name"]] = UNATTRIBUTED
    joined["_purchase"] = joined["kind"].eq("purchase").astype("int64")
    joined["amount_micros"] = joined["amount_micros"].astype("int64")

    # dropna=False: organic and unattributed rows have null adset/ad ids and must not vanish.
    grouped = joined.groupby(AD_KEY, dropna=False, sort=False).agg(
        payers=("user_pid", "nunique"),
        purchases=("_purchase", "sum"),
        revenue_micros=("amount_micros", "sum"),
    )
    out = grouped.reset_index()
    out.insert(0, "date", day)
    out = out.astype({"payers": "int64", "purchases": "int64", "revenue_micros": "int64"})
    out = out.sort_values(
        ["platform", "campaign_id", "adset_id", "ad_id"], kind="mergesort", na_position="first"
    )
    return out[ATTRIBUTION_COLUMNS].reset_index(drop=True)


def _latest_campaign_names(user_map: pd.DataFrame) -> pd.Series:
    """Per user_map row, its campaign's name at the campaign's latest install date."""
    # A renamed campaign would otherwise split one ad into two rows, one per name.
    named = user_map.loc[user_map["campaign_name"].notna()]
    latest = (
        named.sort_values(["install_date", "campaign_name"], kind="mergesort")
        .drop_duplicates(["platform", "campaign_id"], keep="last")
        .set_index(["platform", "campaign_id"])["campaign_name"]
    )
    keys = pd.MultiIndex.from_frame(user_map[["platform", "campaign_id"]])
    names = latest.reindex(keys)
    return pd.Series(names.to_numpy(), index=user_map.index, dtype=user_map["campaign_name"].dtype)


def build_reconciliation(
    day: str, payments: pd.DataFrame, attribution: pd.DataFrame
) -> dict[str, int]:
    """The day's payment total against attributed + organic + unattributed + restricted
    revenue, exact."""
    require_day(payments, day, "payments")
    require_day(attribution, day, "attribution")
    revenue = attribution["revenue_micros"].astype("int64")
    platform = attribution["platform"]
    totals = {
        "total_payments_micros": int(payments["amount_micros"].astype("int64").sum()),
        "attributed_micros": int(revenue[platform.isin(PAID_PLATFORMS)].sum()),
        "organic_micros": int(revenue[platform.eq(ORGANIC)].sum()),
        "unattributed_micros": int(revenue[platform.eq(UNATTRIBUTED)].sum()),
        "restricted_micros": int(revenue[platform.eq(RESTRICTED)].sum()),
    }
    parts = sum(v for k, v in totals.items() if k != "total_payments_micros")
    stray = int(revenue[~platform.isin([*PAID_PLATFORMS, ORGANIC, UNATTRIBUTED, RESTRICTED])].sum())
    if parts != totals["total_payments_micros"]:
        diff = totals["total_payments_micros"] - parts
        raise ReconciliationError(
            f"revenue reconciliation for {day}: payments total {totals['total_payments_micros']} "
            f"micros != attributed {totals['attributed_micros']} + organic "
            f"{totals['organic_micros']} + unattributed {totals['unattributed_micros']} + "
            f"restricted {totals['restricted_micros']} = {parts} "
            f"micros (difference {diff} micros"
            + (f"; {stray} micros on unknown platforms" if stray else "")
            + f"). Fix: rebuild attribution for {day} from the same payments partition"
        )
    return totals
