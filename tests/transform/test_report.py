"""build_campaign_report and build_actions on hand-checked tables."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from adperf.schema import INSTALLS, SPEND
from adperf.transform.decide import Rules, build_actions
from adperf.transform.ltv import COHORT_PLTV_COLUMNS
from adperf.transform.report import build_adset_report, build_campaign_report

DAY = "2026-11-27"


def records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as dicts with every missing value as None, so expectations are plain literals."""
    return [
        {str(k): (None if pd.isna(v) else v) for k, v in row.items()}
        for row in df.astype(object).to_dict("records")
    ]


def spend(*rows: tuple[str, str, str, int, int, int]) -> pd.DataFrame:
    """SPEND rows of DAY from (platform, campaign_id, ad_id, spend_micros, impressions, clicks)."""
    data = [
        {
            "date": DAY,
            "platform": platform,
            "account_id": "acc",
            "campaign_id": campaign,
            "campaign_name": f"name-{campaign}",
            "adset_id": "s",
            "adset_name": None,
            "ad_id": ad,
            "ad_name": None,
            "impressions": impressions,
            "clicks": clicks,
            "installs_reported": 0,
            "purchases_reported": 0,
            "purchase_value_original_micros": 0,
            "spend_original_micros": micros,
            "currency_original": "USD",
            "fx_rate": 1.0,
            "spend_micros": micros,
        }
        for platform, campaign, ad, micros, impressions, clicks in rows
    ]
    return pd.DataFrame(data, columns=SPEND.columns)


def installs(*rows: tuple[str | None, str, str | None]) -> pd.DataFrame:
    """INSTALLS rows of DAY from (user_pid, platform, campaign_id)."""
    data = [
        {
            "date": DAY,
            "install_time": pd.Timestamp(f"{DAY} 10:00", tz="UTC"),
            "user_pid": user,
            "device_pid": None,
            "app_id": "app",
            "media_source": platform,
            "platform": platform,
            "campaign_id": campaign,
            "campaign_name": None if campaign is None else f"mmp-{campaign}",
            "adset_id": None,
            "adset_name": None,
            "ad_id": None,
            "ad_name": None,
            "country": None,
            "device_os": None,
        }
        for user, platform, campaign in rows
    ]
    return pd.DataFrame(data, columns=INSTALLS.columns)


def attribution(*rows: tuple[str, str, str | None, str | None, int, int]) -> pd.DataFrame:
    """build_attribution-shaped rows from (platform, campaign_id, name, ad_id, payers, revenue)."""
    data = [
        {
            "date": DAY,
            "platform": platform,
            "campaign_id": campaign,
            "campaign_name": name,
            "adset_id": None if ad is None else "s",
            "ad_id": ad,
            "payers": payers,
            "purchases": payers,
            "revenue_micros": revenue,
        }
        for platform, campaign, name, ad, payers, revenue in rows
    ]
    return pd.DataFrame(
        data,
        columns=[
            "date",
            "platform",
            "campaign_id",
            "campaign_name",
            "adset_id",
            "ad_id",
            "payers",
            "purchases",
            "revenue_micros",
        ],
    )


def contribution(*rows: tuple[str, str, int]) -> pd.DataFrame:
    """Contribution rows of DAY from (platform, campaign_id, assisted_revenue_micros)."""
    return pd.DataFrame(
        [
            {"date": DAY, "platform": p, "campaign_id": c, "assisted_revenue_micros": m}
            for p, c, m in rows
        ],
        columns=["date", "platform", "campaign_id", "assisted_revenue_micros"],
    )


def pltv(
    *rows: tuple[str, str, int], level: str = "campaign", adset: str | None = None
) -> pd.DataFrame:
    """pLTV rows of DAY from (platform, campaign_id, pltv_micros); the interval is +-20%."""
    return pd.DataFrame(
        [
            {
                "date": DAY,
                "level": level,
                "platform": p,
                "campaign_id": c,
                "adset_id": adset,
                "installs": 0,
                "users": 0,
                "payers": 0,
                "realized_micros": 0,
                "pltv_micros": m,
                "pltv_low_micros": m * 8 // 10,
                "pltv_high_micros": m * 12 // 10,
            }
            for p, c, m in rows
        ],
        columns=COHORT_PLTV_COLUMNS,
    )


def test_campaign_report_by_hand() -> None:
    got = build_campaign_report(
        DAY,
        spend(
            ("facebook", "c1", "a1", 3_000_000, 1_000, 10),
            ("facebook", "c1", "a2", 1_000_000, 500, 5),
            ("google_ads", "g2", "b1", 0, 100, 0),  # zero spend, but revenue and a pLTV
        ),
        installs(
            ("u1", "facebook", "c1"),
            ("u2", "facebook", "c1"),
            (None, "facebook", "c1"),  # unmatched install still counts as an install
            ("u7", "facebook", "c9"),  # a campaign seen only in installs
            ("u8", "organic", None),
            (None, "organic", None),
        ),
        attribution(
            ("facebook", "c1", "attr-c1", "a1", 1, 2_000_000),
            ("facebook", "c1", "attr-c1", "a2", 1, 1_000_000),
            ("google_ads", "g2", "attr-g2", "b1", 1, 400_000),
            ("organic", "organic", "organic", None, 1, 500_000),
            ("unattributed", "unattributed", "unattributed", None, 2, 700_000),
        ),
        contribution(("facebook", "c1", 250_000)),
        pd.concat(
            [
                pltv(("facebook", "c1", 6_000_000), ("google_ads", "g2", 1_000_000)),
                # adset rows are not the campaign's
                pltv(("facebook", "c1", 99_000_000), level="adset", adset="s"),
            ]
        ),
    )
    zero = {"spend_micros": 0, "impressions": 0, "clicks": 0}
    none = {"proas_low": None, "proas_high": None}
    assert records(got) == [
        {
            "date": DAY,
            "platform": "facebook",
            "campaign_id": "c1",
            "campaign_name": "name-c1",
            "spend_micros": 4_000_000,
            "impressions": 1_500,
            "clicks": 15,
            "installs": 3,
            "cpi_micros": 1_333_333,
            "payers": 2,
            "revenue_micros": 3_000_000,
            "roas": 0.75,
            "assisted_revenue_micros": 250_000,
            "pltv_micros": 6_000_000,
            "proas": 1.5,
            "proas_low": pytest.approx(1.2),
            "proas_high": pytest.approx(1.8),
        },
        {
            "date": DAY,
            "platform": "facebook",
            "campaign_id": "c9",
            "campaign_name": "mmp-c9",
            **zero,
            "installs": 1,
            "cpi_micros": 0,
            "payers": 0,
            "revenue_micros": 0,
            "roas": None,
            "assisted_revenue_micros": 0,
            "pltv_micros": None,
            "proas": None,
            **none,
        },
        {
            "date": DAY,
            "platform": "google_ads",
            "campaign_id": "g2",
            "campaign_name": "name-g2",
            "spend_micros": 0,
            "impressions": 100,
            "clicks": 0,
            "installs": 0,
            "cpi_micros": None,
            "payers": 1,
            "revenue_micros": 400_000,
            "roas": None,
            "assisted_revenue_micros": 0,
            "pltv_micros": 1_000_000,
            "proas": None,
            **none,
        },
        {
            "date": DAY,
            "platform": "organic",
            "campaign_id": "organic",
            "campaign_name": "organic",
            **zero,
            "installs": 2,
            "cpi_micros": None,  # organic installs have no cost per install
            "payers": 1,
            "revenue_micros": 500_000,
            "roas": None,
            "assisted_revenue_micros": 0,
            "pltv_micros": None,
            "proas": None,
            **none,
        },
    ]
    assert "unattributed" not in set(got["platform"]) | set(got["campaign_id"])


@pytest.mark.parametrize(
    ("spend_micros", "n_installs", "cpi_micros"),
    [
        (4_000_000, 3, 1_333_333),  # 1,333,333.33 rounds down
        (5_000_000, 3, 1_666_667),  # 1,666,666.67 rounds up
        (1_000_001, 2, 500_001),  # exactly half a micro rounds up (float/banker's would not)
        (7_000_000, 0, None),  # no installs: no CPI, not inf
    ],
)
def test_cpi_is_spend_over_installs_rounded_to_a_micro(
    spend_micros: int, n_installs: int, cpi_micros: int | None
) -> None:
    got = build_campaign_report(
        DAY,
        spend(("facebook", "c1", "a1", spend_micros, 0, 0)),
        installs(*[(f"u{i}", "facebook", "c1") for i in range(n_installs)]),
        attribution(),
        contribution(),
        pltv(),
    )
    assert records(got[["campaign_id", "cpi_micros"]]) == [
        {"campaign_id": "c1", "cpi_micros": cpi_micros}
    ]


def test_campaign_report_rejects_rows_of_another_day() -> None:
    with pytest.raises(ValueError, match="spend for 2026-11-27.*2026-11-26"):
        build_campaign_report(
            DAY,
            spend(("facebook", "c1", "a1", 1, 0, 0)).assign(date="2026-11-26"),
            installs(),
            attribution(),
            contribution(),
            pltv(),
        )


Interval = tuple[float, float] | None


def report(
    *rows: tuple[str, str, int, int, float | None, float | None, Interval],
) -> pd.DataFrame:
    """Campaign report rows from (platform, id, spend_micros, installs, roas, proas, interval)."""
    data = [
        {
            "date": DAY,
            "platform": p,
            "campaign_id": c,
            "campaign_name": f"name-{c}",
            "spend_micros": s,
            "installs": n,
            "roas": r,
            "proas": q,
            "proas_low": None if ci is None else ci[0],
            "proas_high": None if ci is None else ci[1],
        }
        for p, c, s, n, r, q, ci in rows
    ]
    out = pd.DataFrame(data)
    return out.astype(
        {"roas": "Float64", "proas": "Float64", "proas_low": "Float64", "proas_high": "Float64"}
    )


OLD = "2026-11-01"  # 26 days before DAY: old enough
VOLUME = "on $4,200.00 spend, 310 installs"
BIG = ("facebook", "c1", 4_200_000_000, 310)


@pytest.mark.parametrize(
    ("row", "first_spend", "action", "reason"),
    [
        # the whole interval over the scale threshold (the low end exactly at it counts)
        (
            (*BIG, 0.9, 1.82, (1.3, 2.1)),
            OLD,
            "scale",
            f"pROAS 1.82 [1.30–2.10] over scale threshold 1.30 {VOLUME}",
        ),
        # the point over the threshold, the interval not: hold
        (
            (*BIG, 0.9, 1.82, (1.2, 2.5)),
            OLD,
            "hold",
            f"pROAS 1.82 [1.20–2.50] at or over target 1.00, interval reaches below scale "
            f"threshold 1.30 {VOLUME}",
        ),
        # the whole interval under the pause threshold, whatever ROAS says
        (
            (*BIG, 2.0, 0.3, (0.2, 0.45)),
            OLD,
            "pause",
            f"pROAS 0.30 [0.20–0.45] under pause threshold 0.50 {VOLUME}",
        ),
        # the high end exactly at the pause threshold: not clearly under it
        (
            (*BIG, 0.1, 0.3, (0.2, 0.5)),
            OLD,
            "hold",
            f"pROAS 0.30 [0.20–0.50] under target 1.00, interval reaches above pause threshold "
            f"0.50 {VOLUME}",
        ),
        (
            (*BIG, 0.2, 1.1, (0.8, 1.4)),
            OLD,
            "hold",
            f"pROAS 1.10 [0.80–1.40] at or over target 1.00, between pause 0.50 and scale 1.30 "
            f"thresholds {VOLUME}",
        ),
        # a pROAS without an interval (an older partition): the point is the interval
        (
            ("facebook", "c1", 150_000_000, 60, 2.0, 0.4, None),
            OLD,
            "pause",
            "pROAS 0.40 [0.40–0.40] under pause threshold 0.50 on $150.00 spend, 60 installs",
        ),
        # no pROAS: ROAS so far is a lower bound -- enough to scale, never to pause
        (
            ("facebook", "c1", 150_000_000, 1_234, 1.3, None, None),
            OLD,
            "scale",
            "ROAS so far 1.30 already over scale threshold 1.30 on $150.00 spend, 1,234 installs",
        ),
        (
            ("google_ads", "g1", 100_000_000, 50, 0.2, None, None),
            "2026-11-20",
            "hold",
            "ROAS so far 0.20, no pROAS (LTV model unavailable): revenue so far alone is no "
            "reason to pause on $100.00 spend, 50 installs",
        ),
        (
            ("facebook", "c1", 150_000_000, 60, None, None, None),
            OLD,
            "hold",
            "no ROAS or pROAS to judge on $150.00 spend, 60 installs",
        ),
        # each minimum alone holds, whatever the evidence
        (
            ("facebook", "c1", 12_000_000, 310, 9.0, 9.0, (8.0, 10.0)),
            OLD,
            "hold",
            "only $12.00 spend (< $100.00 minimum)",
        ),
        (
            ("facebook", "c1", 4_200_000_000, 30, 0.1, 0.1, (0.05, 0.2)),
            OLD,
            "hold",
            "only 30 installs (< 50 minimum)",
        ),
        (
            (*BIG, 9.0, 9.0, (8.0, 10.0)),
            "2026-11-24",
            "hold",
            "only 3 days since first spend (< 7 minimum)",
        ),
        (
            (*BIG, 9.0, 9.0, (8.0, 10.0)),
            None,
            "hold",
            "only 0 days since first spend (< 7 minimum)",
        ),
        # all three short: all three said
        (
            ("facebook", "c1", 0, 0, None, None, None),
            None,
            "hold",
            (
                "only $0.00 spend (< $100.00 minimum); only 0 installs (< 50 minimum);"
                " only 0 days since first spend (< 7 minimum)"
            ),
        ),
    ],
)
def test_actions_each_branch(  # the report day's evidence alone (no window): the rule before #18
    row: tuple[str, str, int, int, float | None, float | None, Interval],
    first_spend: str | None,
    action: str,
    reason: str,
) -> None:
    dates = {} if first_spend is None else {(row[0], row[1]): first_spend}
    got = build_actions(DAY, report(row), dates, Rules())
    assert records(got) == [
        {
            "date": DAY,
            "platform": row[0],
            "level": "campaign",
            "object_id": row[1],
            "object_name": f"name-{row[1]}",
            "action": action,
            "reason": reason,
            "roas": row[4],
            "proas": row[5],
            "spend_micros": row[2],
            "parent_id": row[1],
            "proas_low": None if row[6] is None else row[6][0],
            "proas_high": None if row[6] is None else row[6][1],
            # The report day's row alone has no draws: no probabilities.
            "p_above": None,
            "p_below": None,
        }
    ]


def test_actions_skip_organic_and_restricted_and_order_by_platform_then_id() -> None:
    got = build_actions(
        DAY,
        report(
            ("google_ads", "g1", 0, 0, None, None, None),
            ("organic", "organic", 0, 500, None, None, None),
            ("restricted", "restricted", 0, 40, None, None, None),
            ("facebook", "c2", 0, 0, None, None, None),
            ("facebook", "c1", 0, 0, None, None, None),
        ),
        {},
        Rules(),
    )
    assert list(zip(got["platform"], got["object_id"], strict=True)) == [
        ("facebook", "c1"),
        ("facebook", "c2"),
        ("google_ads", "g1"),
    ]


def test_actions_reason_uses_rules_and_currency() -> None:
    rules = Rules(scale_roas=2.0, min_spend_micros=1_000_000, min_installs=1, min_age_days=0)
    got = build_actions(
        DAY,
        report(("facebook", "c1", 2_500_000_000, 1, 1.9, 1.9, (1.7, 2.1))),
        {},
        rules,
        currency="EUR",
    )
    assert got["action"].tolist() == ["hold"]
    assert got["reason"].tolist() == [
        "pROAS 1.90 [1.70–2.10] at or over target 1.00, between pause 0.50 and scale 2.00"
        " thresholds on €2,500.00 spend, 1 installs"
    ]


def test_adset_report_and_actions_use_the_adsets_own_installs_and_plv() -> None:
    spend_rows = spend(
        ("facebook", "c1", "a1", 300_000_000, 0, 0), ("facebook", "c1", "a2", 200_000_000, 0, 0)
    )
    spend_rows["adset_id"] = ["s1", "s2"]
    spend_rows["adset_name"] = ["good", "bad"]
    mmp = installs(*[(f"u{i}", "facebook", "c1") for i in range(160)], ("o", "organic", None))
    mmp["adset_id"] = ["s1"] * 100 + ["s2"] * 60 + [None]
    attributed = attribution(("facebook", "c1", "n", "a1", 3, 60_000_000))
    attributed["adset_id"] = "s1"
    values = pd.concat(
        [
            pltv(("facebook", "c1", 700_000_000)),
            pltv(("facebook", "c1", 600_000_000), level="adset", adset="s1"),
            pltv(("facebook", "c1", 40_000_000), level="adset", adset="s2"),
        ]
    )
    adsets = build_adset_report(DAY, spend_rows, mmp, attributed, values)
    assert records(adsets[["adset_id", "adset_name", "spend_micros", "installs", "roas"]]) == [
        {"adset_id": "s1", "adset_name": "good", "spend_micros": 300_000_000, "installs": 100,
         "roas": 0.2},
        {"adset_id": "s2", "adset_name": "bad", "spend_micros": 200_000_000, "installs": 60,
         "roas": 0.0},
    ]  # fmt: skip
    assert adsets["proas"].tolist() == [2.0, 0.2]
    assert adsets["proas_low"].tolist() == [pytest.approx(1.6), pytest.approx(0.16)]
    campaigns = report(("facebook", "c1", 500_000_000, 160, 0.12, 1.4, (1.12, 1.68)))
    first = {("facebook", "c1"): OLD}
    got = build_actions(
        DAY,
        campaigns,
        first,
        Rules(),
        adset_report=adsets,
        adset_first_spend_dates={("facebook", "s1"): OLD, ("facebook", "s2"): OLD},
    )
    assert got[["level", "object_id", "parent_id", "action"]].values.tolist() == [
        ["campaign", "c1", "c1", "hold"],
        ["adset", "s1", "c1", "scale"],
        ["adset", "s2", "c1", "pause"],
    ]
    assert got["reason"].iloc[1] == (
        "pROAS 2.00 [1.60–2.40] over scale threshold 1.30 on $300.00 spend, 100 installs"
    )


def test_restricted_installs_are_one_campaign_row_of_their_own_without_a_cpi() -> None:
    got = build_campaign_report(
        DAY,
        spend(("facebook", "c1", "a1", 3_000_000, 1_000, 10)),
        installs(
            ("u1", "facebook", "c1"),
            ("u2", "restricted", None),  # the MMP gives no campaign for these
            (None, "restricted", None),
            ("u3", "restricted", None),
        ),
        attribution(
            ("facebook", "c1", "attr-c1", "a1", 1, 2_000_000),
            ("restricted", "restricted", "restricted", None, 2, 900_000),
        ),
        contribution(),
        pltv(("facebook", "c1", 6_000_000), ("restricted", "restricted", 1_500_000)),
    )
    rows = {r["platform"]: r for r in records(got)}
    assert set(rows) == {"facebook", "restricted"}  # neither dropped nor 'other'
    assert rows["facebook"]["installs"] == 1 and rows["facebook"]["cpi_micros"] == 3_000_000
    restricted = rows["restricted"]
    assert (restricted["campaign_id"], restricted["campaign_name"]) == ("restricted", "restricted")
    assert restricted["installs"] == 3 and restricted["payers"] == 2
    assert restricted["revenue_micros"] == 900_000 and restricted["pltv_micros"] == 1_500_000
    assert restricted["spend_micros"] == 0 and restricted["cpi_micros"] is None
    assert restricted["roas"] is None
