"""The day's dashboard: one self-contained HTML page (Plotly inline, data inline, no network).

`build_dashboard_data` is pure (warehouse/lake rows in, a JSON-able dict out): the cohort cells
by campaign, country and OS, the pROAS history, the actions and the notes, with campaigns past
the top N by spend (and countries past the top few) folded into "others" so that neither the
page's size nor its labels grow with 300 campaigns. `build_dashboard_html` wraps that data with
Plotly's offline bundle (from the `plotly` package) and the page's script (`dashboard.js`);
filters re-aggregate the cells in the browser. The Dashboard task adds the page to the day's
report folder (adperf.files).
"""

from __future__ import annotations

import datetime as dt
import functools
import html
import json
import math
from importlib import resources
from typing import Any

import pandas as pd

from adperf.sinks.summary import ZERO_DECIMAL_CURRENCIES
from adperf.vocabulary import INSTALL_BUCKETS

DASHBOARD_FILE = "dashboard.html"
TOP_CAMPAIGNS = 15
TOP_COUNTRIES = 12
HEATMAP_DAYS = 30  # cohorts of the last 30 days at every age they reached (D0 … D30)
TREND_AGES = (0, 7)  # older cohorts: only the ages the trend lines read
OTHERS = "others"
OTHER_COUNTRIES = "other"

_CELL_KEY = ["cohort_date", "platform", "campaign_id", "country", "device_os", "age_days"]


def build_dashboard_data(
    *,
    day: str,
    currency: str,
    segments: pd.DataFrame,
    campaigns: pd.DataFrame,
    actions: pd.DataFrame,
    notes: list[str],
    target_roas: float | None = None,
    top: int = TOP_CAMPAIGNS,
    top_countries: int = TOP_COUNTRIES,
) -> dict[str, Any]:
    """The page's data as of `day`: every figure the browser draws, pre-folded to top-N.

    `segments`: cohort_roas_segments rows (warehouse history and the day's triangle; each cell's
    latest row as of `day` counts); `campaigns`: campaign_daily rows up to `day` (names, pLTV and
    the pROAS interval); `actions`: the day's actions rows. Amounts in the report currency.
    """
    cells = _cells(segments, day)
    names = _names(campaigns)
    ranked = _rank_campaigns(cells, day)
    kept = ranked.head(top)
    keys = {(p, c): f"{p}:{c}" for p, c in zip(kept["platform"], kept["campaign_id"], strict=True)}
    countries = _top_values(cells, "country", top_countries)
    cells = cells.assign(
        key=_keys_of(cells, keys),
        country=cells["country"].where(cells["country"].isin(countries), OTHER_COUNTRIES),
    )
    folded = cells.groupby(
        ["cohort_date", "age_days", "platform", "key", "country", "device_os"], as_index=False
    )[["installs", "revenue", "spend"]].sum()
    campaign_list = [
        {"key": keys[(p, c)], "platform": p, "label": _label(names.get((p, c)), c, p)}
        for p, c in zip(kept["platform"], kept["campaign_id"], strict=True)
    ]
    n_others = len(ranked) - len(kept)
    if n_others:
        campaign_list.append(
            {"key": OTHERS, "platform": "", "label": f"others ({n_others:,} more campaigns)"}
        )
    return {
        "day": day,
        "currency": currency,
        "decimals": 0 if currency.upper() in ZERO_DECIMAL_CURRENCIES else 2,
        "target_roas": target_roas,
        "platforms": sorted(set(cells["platform"])),
        "campaigns": campaign_list,
        "countries": sorted(set(folded["country"]) - {OTHER_COUNTRIES})
        + ([OTHER_COUNTRIES] if (folded["country"] == OTHER_COUNTRIES).any() else []),
        "oses": sorted(set(folded["device_os"])),
        "heatmap_first": (dt.date.fromisoformat(day) - dt.timedelta(days=HEATMAP_DAYS)).isoformat(),
        "cells": _columns(
            folded,
            {
                "d": "cohort_date",
                "a": "age_days",
                "p": "platform",
                "k": "key",
                "g": "country",
                "o": "device_os",
                "i": "installs",
                "r": "revenue",
                "s": "spend",
            },
        ),
        "proas": _proas(campaigns, keys, day),
        "actions": _actions(actions, keys),
        "held": int((actions["action"] == "hold").sum()) if len(actions) else 0,
        "notes": list(notes),
    }


def build_dashboard_html(data: dict[str, Any]) -> str:
    """The page: Plotly's offline bundle, the data and the page script, all inline."""
    plotly_js = _inline_script("plotly", "package_data/plotly.min.js")
    script = _inline_script("adperf.sinks", "dashboard.js")
    style = _asset_text("adperf.sinks", "dashboard.css")
    day = html.escape(str(data["day"]))
    # JSON inside <script>: "</" and "<!--" would be read as HTML, so "<" is escaped.
    payload = json.dumps(data, ensure_ascii=False, allow_nan=False).replace("<", "\\u003c")
    return "\n".join(
        [
            "<!doctype html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>adperf dashboard — {day}</title>",
            f"<style>{style}</style>",
            "</head><body>",
            f"<header><h1>adperf — {day}</h1>",
            '<p class="muted">Interactive dashboard (works offline). '
            '<a href="report.html">The day\'s report</a> · filters apply to every chart.</p>',
            '<form id="filters"></form><div id="kpis"></div></header>',
            '<main id="charts"></main>',
            '<section><h2>Recommended actions</h2><div id="actions"></div></section>',
            '<section><h2>Data quality</h2><ul id="notes"></ul></section>',
            f'<script type="application/json" id="adperf-data">{payload}</script>',
            f"<script>{plotly_js}</script>",
            f"<script>{script}</script>",
            "</body></html>",
        ]
    )


def dashboard_link(base_url: str | None, day: str) -> str:
    """Where people open the day's dashboard: under `base_url` (a static host serving
    `<data_root>/reports/`) when one is set, else its path under the data root.

    Never the absolute path: the message is the same wherever the pipeline ran (a re-run on
    another worker must not make it "changed"), and a path of the cron host is no link anyway.
    """
    path = f"date={day}/{DASHBOARD_FILE}"
    return f"{base_url.rstrip('/')}/{path}" if base_url else f"reports/{path}"


# ---------------------------------------------------------------- steps


def _cells(segments: pd.DataFrame, day: str) -> pd.DataFrame:
    """Paid cohort cells (each once, latest as of `day`): the heatmap window at every age,
    older cohorts at the trend ages only."""
    columns = [*_CELL_KEY, "installs", "revenue", "spend"]
    if not len(segments):
        return pd.DataFrame(columns=columns).astype({"age_days": "int64"})
    rows = segments.assign(
        cohort_date=segments["cohort_date"].astype(str),
        as_of=segments["as_of"].astype(str),
        age_days=segments["age_days"].astype("int64"),
        platform=segments["platform"].astype(str),
        campaign_id=segments["campaign_id"].astype(str),
        country=segments["country"].fillna("unknown").astype(str),
        device_os=segments["device_os"].fillna("unknown").astype(str),
    )
    rows = rows[(rows["as_of"] <= day) & (rows["cohort_date"] <= day)]
    rows = rows[~rows["platform"].isin(INSTALL_BUCKETS)]
    rows = rows.sort_values("as_of", kind="mergesort").drop_duplicates(_CELL_KEY, keep="last")
    first = (dt.date.fromisoformat(day) - dt.timedelta(days=HEATMAP_DAYS)).isoformat()
    rows = rows[(rows["cohort_date"] >= first) | rows["age_days"].isin(TREND_AGES)]
    out = rows[columns].copy()
    for col in ("installs", "revenue", "spend"):
        out[col] = pd.to_numeric(out[col], errors="coerce").fillna(0.0).astype("float64")
    return out.reset_index(drop=True)


def _rank_campaigns(cells: pd.DataFrame, day: str) -> pd.DataFrame:
    """Campaigns by spend of their cohorts of the last 30 days (then of all days), largest
    first; ties by platform and id so the order is stable."""
    first = (dt.date.fromisoformat(day) - dt.timedelta(days=HEATMAP_DAYS - 1)).isoformat()
    at0 = cells[cells["age_days"] == 0]
    recent = at0[at0["cohort_date"] >= first].groupby(["platform", "campaign_id"])["spend"].sum()
    overall = at0.groupby(["platform", "campaign_id"])["spend"].sum()
    ranked = pd.DataFrame({"recent": recent, "overall": overall}).fillna(0.0).reset_index()
    if not len(ranked):
        return pd.DataFrame(columns=["platform", "campaign_id"])
    return ranked.sort_values(
        ["recent", "overall", "platform", "campaign_id"],
        ascending=[False, False, True, True],
        kind="stable",
    ).reset_index(drop=True)


def _top_values(cells: pd.DataFrame, column: str, n: int) -> set[str]:
    counts = cells[cells["age_days"] == 0].groupby(column)["installs"].sum()
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return {str(k) for k, _ in ordered[:n]}


def _names(campaigns: pd.DataFrame) -> dict[tuple[str, str], str]:
    """The latest name of each campaign (names change; the id stays)."""
    if not len(campaigns) or "campaign_name" not in campaigns.columns:
        return {}
    rows = campaigns.assign(date=campaigns["date"].astype(str)).sort_values(
        "date", kind="mergesort"
    )
    rows = rows[rows["campaign_name"].notna() & (rows["campaign_name"].astype(str) != "")]
    return {
        (str(p), str(c)): str(n)
        for p, c, n in rows[["platform", "campaign_id", "campaign_name"]].itertuples(index=False)
    }


def _keys_of(rows: pd.DataFrame, keys: dict[tuple[str, str], str]) -> list[str]:
    """Each row's campaign key: its own for the top campaigns, "others" for the rest."""
    pairs = rows[["platform", "campaign_id"]].astype(str).itertuples(index=False)
    return [keys.get((p, c), OTHERS) for p, c in pairs]


def _label(name: str | None, campaign_id: str, platform: str) -> str:
    # Names are kept in their own script (Korean, Japanese, …): the page's fonts draw them.
    text = name or f"id {campaign_id}"
    return f"{text[:40]}{'…' if len(text) > 40 else ''} ({platform})"


def _proas(
    campaigns: pd.DataFrame, keys: dict[tuple[str, str], str], day: str
) -> dict[str, list[Any]]:
    """Per day and campaign key: spend, pLTV, and the pROAS interval bounds times spend (so
    that sums over campaigns give spend-weighted bounds)."""
    names = ["date", "platform", "campaign_id", "spend", "pltv", "proas_low", "proas_high"]
    rows = campaigns.reindex(columns=names)
    rows = rows.assign(date=rows["date"].astype(str), platform=rows["platform"].astype(str))
    rows = rows[~rows["platform"].isin(INSTALL_BUCKETS) & (rows["date"] <= day)]
    for col in names[3:]:
        rows[col] = pd.to_numeric(rows[col], errors="coerce").astype("float64")
    rows = rows[rows["pltv"].notna() & (rows["spend"] > 0)]
    rows = rows.assign(
        key=_keys_of(rows, keys),
        lo=(rows["proas_low"] * rows["spend"]).fillna(rows["pltv"]),
        hi=(rows["proas_high"] * rows["spend"]).fillna(rows["pltv"]),
    )
    folded = rows.groupby(["date", "platform", "key"], as_index=False)[
        ["spend", "pltv", "lo", "hi"]
    ].sum()
    return _columns(
        folded,
        {
            "d": "date",
            "p": "platform",
            "k": "key",
            "s": "spend",
            "v": "pltv",
            "lo": "lo",
            "hi": "hi",
        },
    )


def _actions(actions: pd.DataFrame, keys: dict[tuple[str, str], str]) -> list[dict[str, Any]]:
    """The day's scale/pause/expand actions (holds are counted, not listed), largest spend
    first, each with the campaign key it belongs to (for the filters)."""
    if not len(actions):
        return []
    chosen = actions[actions["action"] != "hold"].copy()
    for col in ("p_above", "p_below", "proas_low", "proas_high", "parent_id", "object_name"):
        if col not in chosen.columns:
            chosen[col] = None
    chosen["spend"] = pd.to_numeric(chosen["spend"], errors="coerce")
    chosen = chosen.sort_values(["spend"], ascending=False, kind="stable")
    out = []
    for r in chosen.to_dict("records"):
        campaign = r["object_id"] if r["level"] == "campaign" else r.get("parent_id")
        out.append(
            {
                "action": str(r["action"]),
                "platform": str(r["platform"]),
                "level": str(r["level"]),
                "object": str(_present(r.get("object_name")) or r["object_id"]),
                "key": keys.get((str(r["platform"]), str(campaign)), OTHERS),
                "spend": _number(r.get("spend")),
                "roas": _number(r.get("roas")),
                "proas": _number(r.get("proas")),
                "proas_low": _number(r.get("proas_low")),
                "proas_high": _number(r.get("proas_high")),
                "p_above": _number(r.get("p_above")),
                "p_below": _number(r.get("p_below")),
                "reason": str(_present(r.get("reason")) or ""),
            }
        )
    return out


def _columns(df: pd.DataFrame, names: dict[str, str]) -> dict[str, list[Any]]:
    """A frame as short-named columns of JSON values (numbers rounded to cents)."""
    out: dict[str, list[Any]] = {}
    for short, col in names.items():
        values = df[col].tolist() if len(df) else []
        if pd.api.types.is_float_dtype(df[col]):
            out[short] = [_number(v) for v in values]
        elif pd.api.types.is_integer_dtype(df[col]):
            out[short] = [int(v) for v in values]
        else:
            out[short] = [str(v) for v in values]
    return out


def _number(value: Any) -> float | None:
    if value is None or value is pd.NA:
        return None
    number = float(value)
    return None if math.isnan(number) or math.isinf(number) else round(number, 4)


def _present(value: Any) -> Any:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def _asset_text(package: str, name: str) -> str:
    return resources.files(package).joinpath(name).read_text(encoding="utf-8")


@functools.cache
def _inline_script(package: str, name: str) -> str:
    """A script asset's text, checked once per process: Plotly's bundle is 4.8 MB, read and
    lower-cased for the check on every day's page otherwise (installed files do not change
    under a run)."""
    text = _asset_text(package, name)
    # Inline, a "</script" would end the element early (HTML's script data state).
    if "</script" in text.lower():
        raise ValueError(
            f"{name.rsplit('/', 1)[-1]} contains '</script': it cannot be inlined as is"
        )
    return text
