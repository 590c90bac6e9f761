"""build_campaign_report and build_actions on hand-checked tables."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from adperf.schema import INSTALLS, SPEND
from adperf.transform.report import Rules, build_actions, build_campaign_report

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


def pltv(*rows: tuple[str, str, int]) -> pd.DataFrame:
    """pLTV rows of DAY from (platform, campaign_id, pltv_micros)."""
    return pd.DataFrame(
        [
            {
                "date": DAY,
                "platform": p,
                "campaign_id": c,
                "installs": 0,
                "payers": 0,
                "pltv_micros": m,
            }
            for p, c, m in rows
        ],
        columns=["date", "platform", "campaign_id", "installs", "payers", "pltv_micros"],
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
        pltv(("facebook", "c1", 6_000_000), ("google_ads", "g2", 1_000_000)),
    )
    zero = {"spend_micros": 0, "impressions": 0, "clicks": 0}
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


def report(*rows: tuple[str, str, int, int, float | None, float | None]) -> pd.DataFrame:
    """Campaign report rows from (platform, campaign_id, spend_micros, installs, roas, proas)."""
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
        }
        for p, c, s, n, r, q in rows
    ]
    out = pd.DataFrame(data)
    return out.astype({"roas": "Float64", "proas": "Float64"})


OLD = "2026-11-01"  # 26 days before DAY: old enough


@pytest.mark.parametrize(
    ("row", "first_spend", "action", "reason"),
    [
        (
            ("facebook", "c1", 4_200_000_000, 310, 0.9, 1.82),
            OLD,
            "scale",
            "pROAS 1.82 over scale threshold 1.30 on $4,200.00 spend, 310 installs",
        ),
        # no pROAS: ROAS is the evidence; exactly at the threshold scales
        (
            ("facebook", "c1", 150_000_000, 1_234, 1.3, None),
            OLD,
            "scale",
            "ROAS 1.30 over scale threshold 1.30 on $150.00 spend, 1,234 installs",
        ),
        # pROAS wins over a good ROAS
        (
            ("facebook", "c1", 150_000_000, 60, 2.0, 0.4),
            OLD,
            "pause",
            "pROAS 0.40 under pause threshold 0.50 on $150.00 spend, 60 installs",
        ),
        (
            ("google_ads", "g1", 100_000_000, 50, 0.49, None),
            "2026-11-20",
            "pause",
            "ROAS 0.49 under pause threshold 0.50 on $100.00 spend, 50 installs",
        ),
        (
            ("facebook", "c1", 150_000_000, 60, 0.2, 1.1),
            OLD,
            "hold",
            (
                "pROAS 1.10 at or over target 1.00, between pause 0.50 and scale 1.30 thresholds"
                " on $150.00 spend, 60 installs"
            ),
        ),
        (
            ("facebook", "c1", 150_000_000, 60, 0.5, None),
            OLD,
            "hold",
            (
                "ROAS 0.50 under target 1.00, between pause 0.50 and scale 1.30 thresholds"
                " on $150.00 spend, 60 installs"
            ),
        ),
        # each minimum alone holds, whatever the ROAS
        (
            ("facebook", "c1", 12_000_000, 310, 9.0, 9.0),
            OLD,
            "hold",
            "only $12.00 spend (< $100.00 minimum)",
        ),
        (
            ("facebook", "c1", 4_200_000_000, 30, 0.1, 0.1),
            OLD,
            "hold",
            "only 30 installs (< 50 minimum)",
        ),
        (
            ("facebook", "c1", 4_200_000_000, 310, 9.0, 9.0),
            "2026-11-24",
            "hold",
            "only 3 days since first spend (< 7 minimum)",
        ),
        (
            ("facebook", "c1", 4_200_000_000, 310, 9.0, 9.0),
            None,
            "hold",
            "only 0 days since first spend (< 7 minimum)",
        ),
        # all three short: all three said
        (
            ("facebook", "c1", 0, 0, None, None),
            None,
            "hold",
            (
                "only $0.00 spend (< $100.00 minimum); only 0 installs (< 50 minimum);"
                " only 0 days since first spend (< 7 minimum)"
            ),
        ),
    ],
)
def test_actions_each_branch(
    row: tuple[str, str, int, int, float | None, float | None],
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
        }
    ]


def test_actions_skip_organic_and_order_by_platform_then_id() -> None:
    got = build_actions(
        DAY,
        report(
            ("google_ads", "g1", 0, 0, None, None),
            ("organic", "organic", 0, 500, None, None),
            ("facebook", "c2", 0, 0, None, None),
            ("facebook", "c1", 0, 0, None, None),
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
        DAY, report(("facebook", "c1", 2_500_000_000, 1, 1.9, None)), {}, rules, currency="EUR"
    )
    assert got["action"].tolist() == ["hold"]
    assert got["reason"].tolist() == [
        (
            "ROAS 1.90 at or over target 1.00, between pause 0.50 and scale 2.00 thresholds"
            " on €2,500.00 spend, 1 installs"
        )
    ]
