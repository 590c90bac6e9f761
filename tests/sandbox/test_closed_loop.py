"""The sandbox's closed loop: the fakes' budgets and statuses drive the next days' delivery."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pandas as pd

from adperf.sandbox import loop
from adperf.sandbox.ad_objects import JsonState, objects_path, sandbox_objects
from adperf.sandbox.world import build_world, ensure_world, load_meta

END = dt.date(2026, 3, 10)


def _truth(root: Path) -> pd.DataFrame:
    return pd.read_csv(
        root / "truth" / "campaign_value_daily.csv", dtype={"campaign_id": str, "date": str}
    )


def _edit(root: Path, change: Any) -> dict[str, Any]:
    meta = load_meta(root)
    base, _ = sandbox_objects(meta)
    JsonState(base, objects_path(root, meta, "facebook")).update(change)
    return base


def test_a_pause_and_a_budget_change_act_from_the_next_day_and_never_on_the_past(
    tmp_path: Path,
) -> None:
    root = tmp_path / "world"
    ensure_world(root, end=END, profile="tiny", seed=7, days=8)
    before = _truth(root)
    base, _ = sandbox_objects(load_meta(root))
    by_campaign: dict[str, list[str]] = {}
    for adset_id, a in base["adsets"].items():
        by_campaign.setdefault(a["campaign_id"], []).append(adset_id)
    paused, scaled = sorted(by_campaign)[:2]

    def change(doc: dict[str, Any]) -> None:
        for adset_id in by_campaign[paused]:
            doc["adsets"][adset_id]["status"] = "PAUSED"
        for adset_id in by_campaign[scaled]:
            doc["adsets"][adset_id]["daily_budget"] *= 3

    _edit(root, change)
    ensure_world(root, end=END + dt.timedelta(days=4), profile="tiny", seed=7)
    after = _truth(root)
    old = after[after["date"] <= END.isoformat()].reset_index(drop=True)
    pd.testing.assert_frame_equal(old, before)  # the past never changes
    new = after[after["date"] > END.isoformat()].set_index("campaign_id")
    assert (new.loc[paused, "spend_report"] == 0).all()
    assert (new.loc[paused, "installs"] == 0).all()
    assert (new.loc[scaled, "budget_factor"] == 3).all()
    # Three times the budget: about three times the spend, at a higher CPI (lower ROAS).
    old_spend = before[before["campaign_id"] == scaled]["spend_report"].mean()
    assert new.loc[scaled, "spend_report"].mean() > 2 * old_spend
    roas0 = before[before["campaign_id"] == scaled]["true_roas_365d"].iloc[0]
    expected = roas0 / 3**loop.CPI_ELASTICITY
    assert abs(new.loc[scaled, "true_roas_365d"].mean() / expected - 1) < 0.05
    # The days a world was built with are kept: a further extension keeps them too.
    ledger = loop.read_ledger(root)
    assert ledger[END.isoformat()] == {}
    assert set(ledger[(END + dt.timedelta(days=1)).isoformat()].values()) == {0.0, 3.0}


def test_an_untouched_world_is_the_world_without_the_loop(tmp_path: Path) -> None:
    a = build_world(tmp_path / "a", seed=7, start=END - dt.timedelta(days=5), end=END,
                    profile="tiny")  # fmt: skip
    assert "drift" not in a
    truth = _truth(tmp_path / "a")
    assert set(truth["budget_factor"]) == {1} and set(truth["fatigue"]) == {1}
    params = json.loads((tmp_path / "a" / "truth" / "params.json").read_text())
    for cid, rows in truth.groupby("campaign_id"):
        assert abs(rows["true_roas_365d"].iloc[0] / params[cid]["true_roas_365d"] - 1) < 1e-5


def test_a_drifting_world_fades_some_campaigns_and_starts_some_late(tmp_path: Path) -> None:
    root = tmp_path / "drift"
    meta = ensure_world(root, end=END + dt.timedelta(days=90), profile="tiny", seed=7,
                        days=130, drift=True)  # fmt: skip
    assert meta["drift"] is True
    truth = _truth(root)
    last = truth["date"].max()
    faded = truth[truth["date"] == last].set_index("campaign_id")["fatigue"]
    assert (faded < 0.9).any() and (faded == 1).any()
    spend = truth.pivot(index="date", columns="campaign_id", values="spend_report")
    late = [c for c in spend if spend[c].iloc[:40].sum() == 0 and spend[c].iloc[-10:].sum() > 0]
    assert late, "some campaign starts delivering mid-world"


def test_tiktok_and_apple_ads_budgets_and_pauses_drive_the_next_days_too(tmp_path: Path) -> None:
    from adperf.sandbox import fake_apple_ads, fake_tiktok

    root = tmp_path / "world"
    ensure_world(root, end=END, profile="tiny", seed=7, days=8)
    before = _truth(root)
    meta = load_meta(root)
    groups = fake_tiktok.sandbox_objects(7, "tiny")["adgroups"]
    by_campaign: dict[str, list[str]] = {}
    for group_id, g in groups.items():
        by_campaign.setdefault(g["campaign_id"], []).append(group_id)
    paused_tt, scaled_tt = sorted(by_campaign)
    apple = fake_apple_ads.sandbox_objects(7, "tiny")
    paused_asa, scaled_asa = sorted(apple["campaigns"])

    def tiktok(doc: dict[str, Any]) -> None:
        for group_id in by_campaign[paused_tt]:
            doc["adgroups"][group_id]["operation_status"] = "DISABLE"
        for group_id in by_campaign[scaled_tt]:  # as the action's POST leaves it: a float's text
            doc["adgroups"][group_id]["budget"] = str(float(groups[group_id]["budget"]) * 2)

    def apple_ads(doc: dict[str, Any]) -> None:
        doc["campaigns"][paused_asa]["status"] = "PAUSED"
        amount = doc["campaigns"][scaled_asa]["dailyBudgetAmount"]["amount"]
        doc["campaigns"][scaled_asa]["dailyBudgetAmount"]["amount"] = f"{float(amount) * 1.5:.2f}"

    JsonState({"adgroups": groups}, objects_path(root, meta, "tiktok")).update(tiktok)
    JsonState(apple, objects_path(root, meta, "apple_ads")).update(apple_ads)
    ensure_world(root, end=END + dt.timedelta(days=3), profile="tiny", seed=7)
    after = _truth(root)
    old = after[after["date"] <= END.isoformat()].reset_index(drop=True)
    # The past never changes (its factors were all 1: read back as integers).
    pd.testing.assert_frame_equal(old, before, check_dtype=False)
    new = after[after["date"] > END.isoformat()].set_index("campaign_id")
    for paused in (paused_tt, paused_asa):
        assert (new.loc[paused, "spend_report"] == 0).all()
        assert (new.loc[paused, "installs"] == 0).all()
    assert (new.loc[scaled_tt, "budget_factor"].round(6) == 2).all()
    start = float(apple["campaigns"][scaled_asa]["dailyBudgetAmount"]["amount"])
    expected = float(f"{start * 1.5:.2f}") / start  # the budget is in cents
    assert (new.loc[scaled_asa, "budget_factor"].round(5) == round(expected, 5)).all()
    # The other platforms' campaigns are untouched.
    others = new[~new.index.isin([paused_tt, scaled_tt, paused_asa, scaled_asa])]
    assert set(others["budget_factor"]) == {1}
