"""The dashboard's data (top-N folding, latest cells, actions), its page and its atomic write."""

from __future__ import annotations

import datetime as dt
import json
import re

import pandas as pd
import pytest

from adperf.sinks.dashboard import (
    OTHERS,
    build_dashboard_data,
    build_dashboard_html,
    dashboard_link,
)
from adperf.sinks.slack import MAX_BLOCKS, with_dashboard_link

DAY = "2026-11-27"


def _day(back: int) -> str:
    return (dt.date.fromisoformat(DAY) - dt.timedelta(days=back)).isoformat()


def segment_rows(n_campaigns: int, days: int = 40, as_of: str = DAY) -> pd.DataFrame:
    """cohort_roas_segments rows: campaign k spends 100 + k a day, split between KR/iOS (60%)
    and JP/Android (40%); revenue 10% of spend at D0, 50% at D7, 90% at D30."""
    rows = []
    for k in range(n_campaigns):
        platform = "facebook" if k % 2 == 0 else "google_ads"
        for back in range(days):
            for age, share in ((0, 0.1), (3, 0.3), (7, 0.5), (30, 0.9)):
                if age > back:
                    continue
                for country, os_, part in (("KR", "ios", 0.6), ("JP", "android", 0.4)):
                    spend = (100.0 + k) * part
                    rows.append(
                        {
                            "cohort_date": _day(back),
                            "platform": platform,
                            "campaign_id": f"c{k:03d}",
                            "country": country,
                            "device_os": os_,
                            "age_days": age,
                            "users": 10,
                            "installs": 10 * part,
                            "payers": 1,
                            "revenue": spend * share,
                            "spend": spend,
                            "roas": share,
                            "as_of": as_of,
                        }  # fmt: skip
                    )
    return pd.DataFrame(rows)


def campaign_rows(n_campaigns: int, names: dict[int, str] | None = None) -> pd.DataFrame:
    names = names or {}
    return pd.DataFrame(
        [
            {
                "date": DAY,
                "platform": "facebook" if k % 2 == 0 else "google_ads",
                "campaign_id": f"c{k:03d}",
                "campaign_name": names.get(k, f"Campaign {k}"),
                "spend": 100.0 + k,
                "pltv": 2 * (100.0 + k),
                "proas": 2.0,
                "proas_low": 1.5,
                "proas_high": 2.5,
            }  # fmt: skip
            for k in range(n_campaigns)
        ]
    )


def action_rows() -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "date": DAY,
                "platform": "google_ads",
                "level": "campaign",
                "object_id": "c299",
                "object_name": "Campaign 299",
                "action": "scale",
                "reason": "pROAS 3.1 ≥ 1.3",
                "roas": 0.5,
                "proas": 3.1,
                "proas_low": 2.0,
                "proas_high": 4.0,
                "spend": 399.0,
                "parent_id": None,
                "p_above": 0.97,
                "p_below": 0.0,
            },
            {
                "date": DAY,
                "platform": "facebook",
                "level": "adset",
                "object_id": "a1",
                "object_name": "<b>adset</b>",
                "action": "pause",
                "reason": "P(ROAS < 0.5) = 0.9",
                "roas": 0.1,
                "proas": 0.3,
                "proas_low": 0.1,
                "proas_high": 0.6,
                "spend": 50.0,
                "parent_id": "c000",
                "p_above": 0.0,
                "p_below": 0.9,
            },
            {
                "date": DAY,
                "platform": "facebook",
                "level": "campaign",
                "object_id": "c002",
                "object_name": "Campaign 2",
                "action": "hold",
                "reason": "not enough evidence",
                "roas": 0.3,
                "proas": 1.0,
                "proas_low": 0.5,
                "proas_high": 1.5,
                "spend": 102.0,
                "parent_id": None,
                "p_above": 0.3,
                "p_below": 0.2,
            },
        ]  # fmt: skip
    )


def _data(n: int = 300, **kwargs: object) -> dict[str, object]:
    args: dict[str, object] = {
        "day": DAY,
        "currency": "USD",
        "segments": segment_rows(n),
        "campaigns": campaign_rows(n, {299: "봄 세일 <VIP>"}),
        "actions": action_rows(),
        "notes": ["5 log lines quarantined (not counted)"],
        "target_roas": 1.0,
    }
    return build_dashboard_data(**{**args, **kwargs})  # type: ignore[arg-type]


def test_300_campaigns_fold_into_the_top_n_and_others_keeping_every_cent() -> None:
    data = _data(300, top=15)
    keys = [c["key"] for c in data["campaigns"]]  # type: ignore[attr-defined]
    # The biggest spenders (campaign k spends 100 + k) first, then one "others".
    assert keys[:3] == ["google_ads:c299", "facebook:c298", "google_ads:c297"]
    assert keys[-1] == OTHERS and len(keys) == 16
    assert data["campaigns"][0]["label"] == "봄 세일 <VIP> (google_ads)"  # type: ignore[index]
    assert data["campaigns"][-1]["label"] == "others (285 more campaigns)"  # type: ignore[index]
    cells = pd.DataFrame(data["cells"])
    assert set(cells["k"]) == set(keys)
    segments = segment_rows(300)
    at0 = segments[segments["age_days"] == 0]
    # Folding loses nothing: the spend of every day's D0 cells, to the cent.
    assert cells[cells["a"] == 0]["s"].sum() == pytest.approx(at0["spend"].sum(), abs=0.01)
    kr_ios = cells[(cells["a"] == 0) & (cells["g"] == "KR") & (cells["o"] == "ios")]
    assert kr_ios["i"].sum() == pytest.approx(300 * 40 * 6)
    assert data["countries"] == ["JP", "KR"] and data["oses"] == ["android", "ios"]


def test_older_cohorts_keep_only_the_trend_ages_and_later_days_are_ignored() -> None:
    cells = pd.DataFrame(_data(4)["cells"])
    old = cells[cells["d"] < _day(30)]
    assert set(old["a"]) == {0, 7}
    assert set(cells[cells["d"] >= _day(30)]["a"]) == {0, 3, 7, 30}
    # A row of a later report day (a backfill rendering an old day) is not the as-of-DAY cell.
    later = segment_rows(4, days=3, as_of=_day(-1)).assign(revenue=1e9)
    mixed = pd.DataFrame(_data(4, segments=pd.concat([segment_rows(4), later]))["cells"])
    assert mixed["r"].max() < 1e6


def test_the_latest_row_of_a_cell_counts_once() -> None:
    older = segment_rows(2, days=5, as_of=_day(1)).assign(revenue=0.0)
    cells = pd.DataFrame(_data(2, segments=pd.concat([older, segment_rows(2, days=5)]))["cells"])
    again = pd.DataFrame(_data(2, segments=segment_rows(2, days=5))["cells"])
    pd.testing.assert_frame_equal(cells, again)


def test_actions_keep_reasons_and_odds_and_belong_to_their_campaign() -> None:
    data = _data(300, top=15)
    actions = data["actions"]
    assert [a["action"] for a in actions] == ["scale", "pause"]  # type: ignore[attr-defined]
    scale, pause = actions  # type: ignore[misc]
    assert scale["key"] == "google_ads:c299" and scale["p_above"] == 0.97
    assert scale["reason"] == "pROAS 3.1 ≥ 1.3" and scale["proas_low"] == 2.0
    # An adset belongs to its campaign's key (c000 is past the top 15: "others").
    assert pause["key"] == OTHERS and pause["p_below"] == 0.9
    assert data["held"] == 1


def test_proas_history_sums_to_spend_weighted_interval() -> None:
    proas = pd.DataFrame(_data(300, top=15)["proas"])
    assert proas["s"].sum() == pytest.approx(sum(100 + k for k in range(300)))
    assert (proas["v"] / proas["s"]).tolist() == pytest.approx([2.0] * len(proas))
    assert (proas["lo"] / proas["s"]).tolist() == pytest.approx([1.5] * len(proas))


def test_the_page_is_self_contained_and_carries_the_data() -> None:
    data = _data(30)
    page = build_dashboard_html(data)
    # Nothing loaded from elsewhere: outside the inline scripts (Plotly's bundle holds URLs in
    # strings it never fetches; the browser test checks that), no link but the report page.
    markup = re.sub(r"<script[^>]*>.*?</script>", "<script></script>", page, flags=re.S)
    assert re.findall(r"""\b(?:src|href)=["']?([^"' >]+)""", markup) == ["report.html"]
    assert "Plotly" in page and page.count("<script") == 3
    embedded = re.search(
        r'<script type="application/json" id="adperf-data">(.*?)</script>', page, re.S
    )
    assert embedded and json.loads(embedded.group(1)) == data
    assert "P(ROAS \\u003c 0.5)" in embedded.group(1)  # "<" escaped inside the script element


def test_a_name_with_a_closing_script_tag_stays_data() -> None:
    data = _data(3, campaigns=campaign_rows(3, {2: "</script><script>alert(1)</script>"}))
    page = build_dashboard_html(data)
    assert "</script><script>alert(1)" not in page
    embedded = re.search(
        r'<script type="application/json" id="adperf-data">(.*?)</script>', page, re.S
    )
    assert embedded and json.loads(embedded.group(1))["campaigns"][0]["label"].startswith(
        "</script>"
    )


def test_links_point_at_the_static_host_or_the_path_under_the_data_root() -> None:
    assert dashboard_link("https://reports.example.com/adperf/", DAY) == (
        f"https://reports.example.com/adperf/date={DAY}/dashboard.html"
    )
    # Not an absolute path: the message must not change with the machine that ran the day.
    assert dashboard_link(None, DAY) == f"reports/date={DAY}/dashboard.html"
    message = {"text": "t", "blocks": [{"type": "header"}, {"type": "section"}, {"type": "x"}]}
    linked = with_dashboard_link(message, "https://h/a&b/dashboard.html")
    assert linked["blocks"][3]["elements"][0]["text"] == (
        ":bar_chart: <https://h/a&amp;b/dashboard.html|Dashboard>: trends, cohort heatmap, filters"
    )
    path = with_dashboard_link(message, "reports/date=1/dashboard.html")
    assert path["blocks"][3]["elements"][0]["text"] == (
        ":bar_chart: Dashboard (trends, cohort heatmap, filters): `reports/date=1/dashboard.html`"
        " in the data root"
    )
    full = {"text": "t", "blocks": [{"type": "section"}] * MAX_BLOCKS}
    assert len(with_dashboard_link(full, "x")["blocks"]) == MAX_BLOCKS


def test_a_script_asset_that_would_end_its_element_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from adperf.sinks import dashboard

    real = dashboard._asset_text
    page = build_dashboard_html(_data(3))
    assert build_dashboard_html(_data(3)) == page  # the checked assets, kept per process

    def broken(package: str, name: str) -> str:
        return "let x = 1; // </SCRIPT>" if name == "dashboard.js" else real(package, name)

    monkeypatch.setattr(dashboard, "_asset_text", broken)
    dashboard._inline_script.cache_clear()
    try:
        with pytest.raises(ValueError, match="dashboard.js contains '</script'"):
            build_dashboard_html(_data(3))
    finally:
        dashboard._inline_script.cache_clear()
