"""The rendered report: chart data, PNG, HTML, content hash, quality notes, the report folder."""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from adperf.sinks.chart import build_chart_data, chained_curve, render_chart
from adperf.sinks.render import (
    build_quality_notes,
    render_report,
)
from adperf.sinks.summary import build_totals, change

DAY = "2026-11-27"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _days(n: int) -> list[str]:
    last = dt.date.fromisoformat(DAY)
    return [(last - dt.timedelta(days=k)).isoformat() for k in range(n - 1, -1, -1)]


def _campaigns(day: str, scale: float = 1.0) -> pd.DataFrame:
    """Three paid campaigns (one Korean name) and organic, on `day`."""
    rows = [
        ("facebook", "120200000000000001", "KR_iOS_purchase", 500.0, 100, 400.0),
        ("facebook", "120200000000000002", "봄 세일 <VIP>", 300.0, 60, 90.0),
        ("google_ads", "20000000001", "Search KR", 200.0, 40, 260.0),
        ("organic", "organic", "organic", 0.0, 80, 150.0),
    ]
    return pd.DataFrame(
        [
            {
                "date": day,
                "platform": p,
                "campaign_id": c,
                "campaign_name": n,
                "spend": s * scale,
                "impressions": 1000,
                "clicks": 10,
                "installs": i,
                "cpi": s * scale / i if s else None,
                "payers": 3,
                "revenue": r,
                "roas": r / (s * scale) if s else None,
                "assisted_revenue": 0.0,
                "pltv": r * 2,
                "proas": 2 * r / (s * scale) if s else None,
            }  # fmt: skip
            for p, c, n, s, i, r in rows
        ]
    )


def _cohorts(as_of: str) -> pd.DataFrame:
    """cohort_roas rows as of `as_of`: ages 0, 3, 7, 14, 30, ROAS growing with age."""
    out = []
    for age, factor in ((0, 0.2), (3, 0.5), (7, 0.8), (14, 1.0), (30, 1.3)):
        cohort = (dt.date.fromisoformat(as_of) - dt.timedelta(days=age)).isoformat()
        for p, c, spend in (("facebook", "120200000000000001", 500.0),
                            ("facebook", "120200000000000002", 300.0),
                            ("google_ads", "20000000001", 200.0),
                            ("organic", "organic", 0.0)):  # fmt: skip
            out.append(
                {
                    "cohort_date": cohort,
                    "platform": p,
                    "campaign_id": c,
                    "age_days": age,
                    "users": 10,
                    "installs": 10,
                    "payers": 1,
                    "revenue": spend * factor + 5,
                    "spend": spend,
                    "roas": None,
                    "as_of": as_of,
                }  # fmt: skip
            )
    return pd.DataFrame(out)


@pytest.fixture(scope="module")
def history() -> tuple[pd.DataFrame, pd.DataFrame]:
    days = _days(31)[:-1]  # the 30 days before DAY
    campaigns = pd.concat([_campaigns(d, 1.0 + k / 30) for k, d in enumerate(days)])
    cohorts = pd.concat([_cohorts(d) for d in days])
    return campaigns.reset_index(drop=True), cohorts.reset_index(drop=True)


def _render(history: tuple[pd.DataFrame, pd.DataFrame], **kw: object):  # type: ignore[no-untyped-def]
    args = dict(
        day=DAY,
        currency="USD",
        campaigns=_campaigns(DAY, 2.0),
        actions=pd.DataFrame(
            [
                {
                    "date": DAY,
                    "platform": "facebook",
                    "level": "campaign",
                    "object_id": "120200000000000002",
                    "object_name": "봄 세일 <VIP>",
                    "action": "pause",
                    "reason": "pROAS 0.30 under 0.50 <b>",
                    "roas": 0.15,
                    "proas": 0.3,
                    "spend": 600.0,
                }
            ]  # fmt: skip
        ),
        cohorts=_cohorts(DAY),
        reconciliation={
            "total_payments": 1000.0,
            "attributed": 750.0,
            "organic": 150.0,
            "unattributed": 100.0,
        },  # fmt: skip
        notes=["Facebook spend for 2026-11-20 restated +12.40 USD"],
        history_campaigns=history[0],
        history_cohorts=history[1],
        target_roas=1.0,
    )
    args.update(kw)
    return render_report(**args)  # type: ignore[arg-type]


def test_changes_against_the_day_before_and_a_week_before(history) -> None:  # type: ignore[no-untyped-def]
    report = _render(history)
    fields = {f["text"].split("\n")[0]: f["text"] for f in report.message["blocks"][1]["fields"]}
    # Spend 2000 on DAY; history spend scale on DAY-1 is 1 + 29/30, on DAY-7 is 1 + 23/30.
    spend_d1, spend_d7 = 1000 * (1 + 29 / 30), 1000 * (1 + 23 / 30)
    assert fields["*Spend*"] == (
        f"*Spend*\n2,000.00 USD\n+{round((2000 / spend_d1 - 1) * 100)}% d/d · "
        f"+{round((2000 / spend_d7 - 1) * 100)}% w/w"
    )
    # Cohort ROAS is the same every day in the fixture: no change, in points.
    assert fields["*ROAS D0*"].endswith("±0 pp d/d · ±0 pp w/w")


def test_missing_history_days_show_na(history) -> None:  # type: ignore[no-untyped-def]
    campaigns, cohorts = history
    gap = campaigns[campaigns["date"] != "2026-11-26"]
    report = _render(history, history_campaigns=gap)
    spend = report.message["blocks"][1]["fields"][0]["text"]
    assert spend.endswith("n/a d/d · +13% w/w")


def test_content_hash_is_stable_and_follows_the_numbers(history) -> None:  # type: ignore[no-untyped-def]
    first, again = _render(history), _render(history)
    assert first.content_hash == again.content_hash
    restated = _render(history, campaigns=_campaigns(DAY, 2.01))
    assert restated.content_hash != first.content_hash
    # The chart's data counts too: a restated history day changes the picture.
    campaigns, cohorts = history
    changed = campaigns.assign(spend=campaigns["spend"].where(campaigns["date"] != _days(30)[0], 1))
    assert _render(history, history_campaigns=changed).content_hash != first.content_hash


def test_chart_data_pools_cohorts_and_ranks_by_spend(history) -> None:  # type: ignore[no-untyped-def]
    campaigns, cohorts = history
    data = build_chart_data(
        DAY,
        pd.concat([campaigns, _campaigns(DAY, 2.0)]),
        pd.concat([cohorts, _cohorts(DAY)]),
        top=2,
    )
    assert sorted(data.daily["date"].unique())[0] == _days(30)[0]  # 30 days, DAY included
    assert set(data.daily["platform"]) == {"facebook", "google_ads"}  # organic is not charted
    day = data.daily[(data.daily["date"] == DAY) & (data.daily["platform"] == "facebook")].iloc[0]
    assert day["spend"] == pytest.approx(1600.0)
    assert day["roas_d0"] == pytest.approx((100 + 5 + 60 + 5) / 800)  # pooled, not averaged
    # Top 2 by 30-day spend: the two biggest facebook campaigns; google's is in "others".
    assert list(data.curves["campaign_id"].unique()) == [
        "120200000000000001",
        "120200000000000002",
        "others",
    ]
    others = data.curves[data.curves["campaign_id"] == "others"]
    assert set(others["label"]) == {"others (1 more)"}
    assert others["roas"].tolist() == pytest.approx([0.225, 0.525, 0.825, 1.025, 1.325])
    curve = data.curves[data.curves["campaign_id"] == "120200000000000001"]
    assert list(curve["age_days"]) == [0, 3, 7, 14, 30]
    assert curve["roas"].tolist() == pytest.approx([0.21, 0.51, 0.81, 1.01, 1.31])


def _triangle(as_of: str) -> pd.DataFrame:
    """cohort_roas as of `as_of`: every cohort of the 30 days to it at every age it reached;
    cohort k days old has ROAS (k + 1) % 10 / 10 + age / 100, so each cell is told apart."""
    out = []
    for back in range(31):
        cohort = (dt.date.fromisoformat(as_of) - dt.timedelta(days=back)).isoformat()
        for age in (a for a in (0, 3, 7, 14, 30) if a <= back):
            for p, c, spend in (("facebook", "120200000000000001", 500.0),
                                ("google_ads", "20000000001", 200.0)):  # fmt: skip
                roas = (back + 1) % 10 / 10 + age / 100
                out.append(
                    {"cohort_date": cohort, "platform": p, "campaign_id": c, "age_days": age,
                     "revenue": spend * roas, "spend": spend, "as_of": as_of}
                )  # fmt: skip
    return pd.DataFrame(out)


def test_one_days_triangle_draws_every_curve_and_install_day() -> None:
    triangle = _triangle(DAY)
    data = build_chart_data(DAY, _campaigns(DAY), triangle)
    fb = data.daily[data.daily["platform"] == "facebook"].set_index("date")
    # ROAS by install day: D0 of each of the 30 days, D7 of each cohort 7 days old or more.
    assert fb["roas_d0"].notna().sum() == 30
    assert fb["roas_d7"].notna().sum() == 30 - 7
    assert fb.loc[_days(30)[0], "roas_d7"] == pytest.approx(30 % 10 / 10 + 0.07)
    assert fb.loc[DAY, "roas_d0"] == pytest.approx(0.1)
    # D0 pools all 31 cohorts; each later age adds the gain of the cohorts that reached it
    # (here age / 100 for each), so the curve keeps D0's level instead of jumping to whichever
    # single cohort is 30 days old: (30 + 1) % 10 / 10 = 0.1 + 0.30 if D30 were pooled alone.
    curve = data.curves[data.curves["campaign_id"] == "120200000000000001"]
    assert list(curve["age_days"]) == [0, 3, 7, 14, 30]
    d0 = sum((b + 1) % 10 / 10 for b in range(31)) / 31
    assert curve["roas"].tolist() == pytest.approx([d0 + age / 100 for age in curve["age_days"]])
    # The diagonal alone (what a first run had) draws one install day per age.
    diagonal = triangle[
        pd.to_datetime(triangle["cohort_date"]) + pd.to_timedelta(triangle["age_days"], "D")
        == pd.Timestamp(DAY)
    ]
    few = build_chart_data(DAY, _campaigns(DAY), diagonal)
    assert few.daily["roas_d0"].notna().sum() < data.daily["roas_d0"].notna().sum()
    # Warehouse rows of earlier days for the same cells are superseded, not added.
    stale = triangle.assign(as_of=_days(2)[0], revenue=triangle["revenue"] * 5)
    again = build_chart_data(DAY, _campaigns(DAY), pd.concat([stale, triangle]))
    pd.testing.assert_frame_equal(again.curves, data.curves)


def test_a_chained_curve_never_falls_when_old_cohorts_were_weaker() -> None:
    """Cumulative revenue per cohort never falls, so neither does the curve, whatever cohorts
    stand behind each age: 10 young strong cohorts (D0, D3) and one old weak one (to D30)."""
    cells = [
        {"cohort_date": f"2026-12-{d:02d}", "age_days": a, "revenue": r, "spend": 100.0}
        for d in range(1, 11)
        for a, r in ((0, 50.0), (3, 90.0))
    ]
    cells += [
        {"cohort_date": "2026-11-01", "age_days": a, "revenue": r, "spend": 100.0}
        for a, r in ((0, 5.0), (3, 6.0), (7, 8.0), (14, 9.0), (30, 10.0))
    ]
    curve = chained_curve(pd.DataFrame(cells))
    assert curve["age_days"].tolist() == [0, 3, 7, 14, 30]
    # D0: 505 / 1,100; D3: + (10 x 40 + 1) / 1,100; then the old cohort's gains per its 100.
    d3 = (505 + 401) / 1100
    assert curve["roas"].tolist() == pytest.approx(
        [505 / 1100, d3, d3 + 0.02, d3 + 0.03, d3 + 0.04]
    )
    assert curve["roas"].is_monotonic_increasing
    # Pooling each age's own cohorts would fall from 82% at D3 to 8% at D7.


def test_png_is_a_png_and_deterministic(history, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    report = _render(history)
    assert report.png.startswith(PNG_MAGIC) and len(report.png) > 20_000
    assert _render(history).png == report.png
    (tmp_path / "chart.png").write_bytes(report.png)


def test_chart_without_any_history_still_renders() -> None:
    empty = pd.DataFrame(columns=["date", "platform", "campaign_id", "campaign_name", "spend"])
    cohorts = pd.DataFrame(
        columns=["cohort_date", "platform", "campaign_id", "age_days", "revenue", "spend", "as_of"]
    )
    data = build_chart_data(DAY, empty, cohorts)
    assert data.daily.empty and data.curves.empty
    assert render_chart(data, "USD").startswith(PNG_MAGIC)


def test_html_is_self_contained_and_escaped(history) -> None:  # type: ignore[no-untyped-def]
    report = _render(history)
    page = report.html
    embedded = re.search(r'src="data:image/png;base64,([^"]+)"', page)
    assert embedded and base64.b64decode(embedded.group(1)) == report.png
    assert "http://" not in page and "https://" not in page  # nothing to fetch
    assert "봄 세일 &lt;VIP&gt;" in page and "<VIP>" not in page
    assert "under 0.50 &lt;b&gt;" in page
    assert "2,000.00 USD" in page and "restated +12.40 USD" in page
    assert "Unattributed revenue: 10.0% of payments" in page
    assert page.count("<tr>") >= 7 + 1 + 4  # totals, one action, four campaigns


def test_quality_notes() -> None:
    restated = pd.DataFrame(
        [
            {
                "date": "2026-11-20",
                "platform": "facebook",
                "previous": 100.0,
                "latest": 112.4,
                "delta": 12.4,
            },
            {
                "date": "2026-11-21",
                "platform": "google_ads",
                "previous": 50.0,
                "latest": 50.0,
                "delta": 0.0,
            },
            {
                "date": "2026-11-19",
                "platform": "google_ads",
                "previous": 80.0,
                "latest": 70.0,
                "delta": -10.0,
            },
        ]  # fmt: skip
    )
    notes = build_quality_notes(
        currency="USD",
        payments_meta={"rows": 10, "quarantined": 3},
        events_meta={"rows": 5, "bad": 1200},
        restatements=restated,
        ltv_model=pd.DataFrame([{"converged": False, "n_customers": 40}]),
    )
    assert notes == [
        "Google Ads spend for 2026-11-19 restated −10.00 USD (80.00 USD → 70.00 USD)",
        "Facebook spend for 2026-11-20 restated +12.40 USD (100.00 USD → 112.40 USD)",
        "3 payment rows quarantined (not counted)",
        "1,200 log lines quarantined (not counted)",
        "The LTV model did not converge (40 customers): pROAS is n/a and actions rely on ROAS",
    ]
    fallback = build_quality_notes(
        currency="USD", payments_meta={}, events_meta={}, restatements=None,
        ltv_model=pd.DataFrame([{"converged": False, "fallback": True, "fitted_on": "2026-11-20"}]),
    )  # fmt: skip
    assert fallback == [
        "pROAS uses an older LTV model (fitted on 2026-11-20): today's fit did not converge"
    ]
    assert build_quality_notes(currency="USD", payments_meta={}, events_meta={},
                               restatements=None, ltv_model=None) == []  # fmt: skip


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"history_span_days": 75, "horizon_days": 365}, [
            "pLTV extrapolates 75 days of payments to 365 days: on a history this short the "
            "model's tail tends to read high (docs/model.md §2)"]),
        ({"history_span_days": 365, "horizon_days": 365}, []),
        ({"history_span_days": 200, "horizon_days": 180}, []),
        ({"bgnbd": {}}, []),  # a row written before the span was recorded
    ],
)  # fmt: skip
def test_a_model_fitted_on_less_history_than_its_horizon_is_noted(
    params: dict[str, Any], expected: list[str]
) -> None:
    model = pd.DataFrame([{"converged": True, "n_customers": 900, "params": json.dumps(params)}])
    notes = build_quality_notes(
        currency="USD", payments_meta={}, events_meta={}, restatements=None, ltv_model=model
    )
    assert notes == expected


def test_totals_and_changes() -> None:
    totals = build_totals(_campaigns(DAY), _cohorts(DAY), DAY)
    assert totals["spend"] == 1000.0 and totals["installs"] == 200.0
    assert totals["organic_installs"] == 80.0
    assert totals["roas_d0"] == pytest.approx((100 + 60 + 40 + 15) / 1000)
    assert totals["roas_d7"] == pytest.approx((400 + 240 + 160 + 15) / 1000)
    assert change(1.25, 1.0, "money") == "+25%"
    assert change(0.8, 1.0, "money") == "−20%"
    assert change(1.2, 1.0, "ratio") == "+20 pp"
    assert change(5.0, 0.0, "money") == "new"
    assert change(None, 1.0, "money") == change(1.0, None, "ratio") == "n/a"


def test_daily_spend_comes_from_ad_spend_daily_when_it_has_more_days() -> None:
    # One report day loaded, but ad_spend_daily holds the platforms' restated lookback window.
    ads = pd.DataFrame(
        [{"date": d, "platform": "facebook", "spend": 10.0} for d in _days(40)]
        + [{"date": DAY, "platform": "facebook", "spend": 5.0}]
    )
    cohorts = _cohorts(DAY)
    data = build_chart_data(DAY, _campaigns(DAY), cohorts, spend=ads)
    facebook = data.daily[data.daily["platform"] == "facebook"]
    spend = facebook.set_index("date")["spend"]
    assert len(spend.dropna()) == 30  # the window, not the 40 days given
    assert spend[DAY] == 15.0 and spend[_days(30)[0]] == 10.0
    # Fewer days than campaign_daily: the campaign rows win.
    fewer = build_chart_data(DAY, _campaigns(DAY), cohorts, spend=ads.iloc[:0])
    assert fewer.daily.set_index(["date", "platform"])["spend"][(DAY, "facebook")] == 800.0


def test_html_shows_the_restricted_line(history) -> None:  # type: ignore[no-untyped-def]
    restricted = pd.DataFrame(
        [{**_campaigns(DAY, 2.0).iloc[0].to_dict(), "platform": "restricted",
          "campaign_id": "restricted", "campaign_name": "restricted", "spend": 0.0,
          "installs": 25, "revenue": 50.0, "roas": None, "cpi": None}]
    )  # fmt: skip
    campaigns = pd.concat([_campaigns(DAY, 2.0), restricted], ignore_index=True)
    everyone = int(campaigns["installs"].sum())
    recon = {"total_payments": 1000.0, "attributed": 700.0, "organic": 150.0,
             "unattributed": 100.0, "restricted": 50.0}  # fmt: skip

    page = _render(history, campaigns=campaigns, reconciliation=recon).html

    share = f"{25 / everyone:.1%}"
    assert (
        f"25 installs ({share}) from networks that withhold user-level data (media source "
        "&#x27;restricted&#x27;): their revenue cannot be tied to a campaign (50.00 USD, 5.0% "
        "of payments)"
    ) in page
    assert "withhold user-level data" not in _render(history).html


def test_html_and_csv_show_the_actions_risk(history) -> None:  # type: ignore[no-untyped-def]
    actions = _render(history).html  # before issue 18: no probabilities, an empty cell
    assert "P(&gt; scale)" not in actions
    row = {
        "date": DAY,
        "platform": "facebook",
        "level": "campaign",
        "object_id": "120200000000000002",
        "object_name": "봄 세일 <VIP>",
        "action": "pause",
        "reason": "pROAS 0.30 under 0.50",
        "roas": 0.15,
        "proas": 0.3,
        "spend": 600.0,
        "p_above": 0.0,
        "p_below": 0.935,
    }
    report = _render(history, actions=pd.DataFrame([row]))
    assert "P(&gt; scale) 0% · P(&lt; pause) 94%" in report.html
    table = pd.read_csv(io.BytesIO(report.csv), dtype={"campaign_id": str}, encoding="utf-8-sig")
    paused = table[table["campaign_id"] == "120200000000000002"].iloc[0]
    assert (paused["action_p_above"], paused["action_p_below"]) == (0.0, 0.935)


def test_roas_d0_and_d7_of_a_day_come_from_its_cohorts_in_the_triangle() -> None:
    triangle = _triangle(DAY)
    totals = build_totals(_campaigns(DAY), triangle, DAY)
    # D7 is the cohort of 7 days ago at age 7, not the pool of every cohort that reached D7.
    assert totals["roas_d7"] == pytest.approx(8 % 10 / 10 + 0.07)
    assert totals["roas_d0"] == pytest.approx(0.1)
    # The day before's, from the same triangle (its D0 cohort is one day old in it).
    yesterday = build_totals(_campaigns(_days(2)[0]), triangle, _days(2)[0])
    assert yesterday["roas_d0"] == pytest.approx(0.2)
