"""Applying actions on TikTok (ad groups) and Apple Ads (campaigns) against their fakes, logged
in the warehouse like Facebook's and Google Ads'."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa

from adperf import platforms, warehouse
from adperf.actions import APPLIED, CHANGE, FAILED, NO_CHANGE, SKIP, Settings, run_day
from adperf.actions.apple_ads import AppleAdsCampaigns
from adperf.actions.tiktok import TikTokAdGroups
from adperf.sandbox.fake_apple_ads import FakeAppleAds
from adperf.sandbox.fake_tiktok import FakeTikTok
from adperf.sources.apple_ads import AppleAdsCredentials
from tasks.config import SANDBOX_APPLE_ADS_CLIENT, SANDBOX_APPLE_ADS_PRIVATE_KEY

DAY = "2026-11-20"
TOKEN = "tiktok-token-that-must-never-leak"
ADV = "7000000000000000001"
ORG = "4000001"
# TikTok: campaign T1 (ad groups G1, G2), campaign T2 (ad group G3). Apple: campaigns P1, P2.
T1, T2 = "1780000000000000001", "1780000000000000002"
G1, G2, G3 = "1790000000000000011", "1790000000000000012", "1790000000000000013"
P1, P2 = "900000001", "900000002"


def tiktok_objects() -> dict[str, Any]:
    def group(campaign: str, budget: str, status: str = "ENABLE") -> dict[str, Any]:
        return {
            "advertiser_id": ADV,
            "campaign_id": campaign,
            "adgroup_name": f"group of {campaign}",
            "operation_status": status,
            "budget_mode": "BUDGET_MODE_DAY",
            "budget": budget,
        }

    return {"adgroups": {G1: group(T1, "50000"), G2: group(T1, "70001"), G3: group(T2, "3000")}}


def apple_objects() -> dict[str, Any]:
    def campaign(amount: str) -> dict[str, Any]:
        return {
            "orgId": ORG,
            "name": "asa",
            "status": "ENABLED",
            "dailyBudgetAmount": {"amount": amount, "currency": "USD"},
        }

    return {"campaigns": {P1: campaign("40"), P2: campaign("25.5")}}


def public_key() -> str:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(SANDBOX_APPLE_ADS_PRIVATE_KEY.encode(), None)
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.fixture()
def fakes() -> Iterator[tuple[FakeTikTok, FakeAppleAds]]:
    tiktok = FakeTikTok(
        advertisers=[
            {"advertiser_id": ADV, "name": "tt", "currency": "KRW", "timezone": "Asia/Seoul"}
        ],
        ad_rows=pd.DataFrame(columns=["date", "account_id", "campaign_id", "campaign_name",
                                      "adset_id", "adset_name", "ad_id", "ad_name",
                                      "impressions", "clicks", "installs_reported",
                                      "purchases_reported", "purchase_value", "spend"]),
        access_token=TOKEN,
        objects=tiktok_objects(),
    )  # fmt: skip
    client_id, team_id, key_id = SANDBOX_APPLE_ADS_CLIENT
    apple = FakeAppleAds(
        orgs=[{"orgId": int(ORG), "orgName": "o", "currency": "USD", "timeZone": "Asia/Seoul"}],
        ad_rows=pd.DataFrame(columns=["date", "account_id", "campaign_id"]),
        client_id=client_id,
        team_id=team_id,
        key_id=key_id,
        public_key=public_key(),
        objects=apple_objects(),
    )
    tiktok.start()
    apple.start()
    try:
        yield tiktok, apple
    finally:
        tiktok.stop()
        apple.stop()


def clients(tiktok: FakeTikTok, apple: FakeAppleAds, token: str = TOKEN) -> dict[str, Any]:
    day = dt.date.fromisoformat(DAY)
    base = str(tiktok._server.server_address[1])  # type: ignore[union-attr]
    apple_url = f"http://127.0.0.1:{apple._server.server_address[1]}"  # type: ignore[union-attr]
    return {
        platforms.TIKTOK: TikTokAdGroups(
            base_url=f"http://127.0.0.1:{base}",
            access_token=token,
            advertiser_ids=[ADV],
            day=day,
            sleep=lambda s: None,
        ),
        platforms.APPLE_ADS: AppleAdsCampaigns(
            api_url=apple_url,
            token_url=f"{apple_url}/auth/oauth2/token",
            credentials=AppleAdsCredentials(
                *SANDBOX_APPLE_ADS_CLIENT, SANDBOX_APPLE_ADS_PRIVATE_KEY
            ),
            org_ids=[ORG],
            day=day,
            sleep=lambda s: None,
        ),
    }


def action(platform: str, level: str, object_id: str, act: str) -> dict[str, Any]:
    return {
        "date": DAY,
        "platform": platform,
        "level": level,
        "object_id": object_id,
        "object_name": f"name {object_id}",
        "action": act,
        "reason": "because",
        "roas": 1.0,
        "proas": 1.0,
        "spend_micros": 500_000_000,
        "parent_id": None,
        "proas_low": None,
        "proas_high": None,
    }


ACTIONS = [
    action("tiktok", "adset", G1, "pause"),
    action("tiktok", "campaign", T1, "scale"),  # G2 only: G1 has its own action
    action("tiktok", "ad", "1", "pause"),
    action("apple_ads", "campaign", P1, "pause"),
    action("apple_ads", "campaign", P2, "scale"),
    action("apple_ads", "adset", "42", "scale"),
]


def apply(engine: sa.Engine, fakes: Any, yes: bool, token: str = TOKEN) -> dict[str, Any]:
    made = clients(*fakes, token=token)
    try:
        changes = run_day(engine, DAY, made, Settings(), yes=yes, applied_by="tester")
    finally:
        for c in made.values():
            c.close()
    return {(c.target.platform, c.target.object_id): c for c in changes}


def log_rows(engine: sa.Engine) -> list[dict[str, Any]]:
    if not sa.inspect(engine).has_table("action_log"):
        return []
    with engine.connect() as conn:
        t = warehouse.action_log
        return [dict(r) for r in conn.execute(sa.select(t).order_by(t.c.id)).mappings()]


def test_dry_run_plans_and_refuses_by_name_and_changes_nothing(
    warehouse_engine: sa.Engine, fakes: Any
) -> None:
    tiktok, apple = fakes
    warehouse.load_day(warehouse_engine, DAY, {"actions": pd.DataFrame(ACTIONS)})
    got = apply(warehouse_engine, fakes, yes=False)
    g1, g2 = got[("tiktok", G1)], got[("tiktok", G2)]
    assert (g1.outcome, g1.before, g1.after) == (CHANGE, "ENABLED", "PAUSED")
    # KRW has no minor unit: 70,001 won x 1.2 = 84,001.2 -> 84,001.
    assert (g2.outcome, g2.field, g2.before, g2.after) == (CHANGE, "budget", "70001", "84001")
    assert ("tiktok", G3) not in got  # T2 had no action
    p1, p2 = got[("apple_ads", P1)], got[("apple_ads", P2)]
    assert (p1.before, p1.after) == ("ENABLED", "PAUSED")
    assert (p2.field, p2.before, p2.after) == ("dailyBudgetAmount", "2550", "3060")
    refused = {k: c for k, c in got.items() if c.outcome == SKIP}
    assert set(refused) == {("tiktok", "1"), ("apple_ads", "42")}
    assert "apple_ads changes campaigns only" in refused[("apple_ads", "42")].note
    assert "tiktok changes campaigns and ad groups only" in refused[("tiktok", "1")].note
    assert tiktok.adgroups()[G1]["operation_status"] == "ENABLE"
    assert apple.campaigns()[P2]["dailyBudgetAmount"]["amount"] == "25.5"
    assert log_rows(warehouse_engine) == []


def test_yes_applies_through_the_fakes_logs_and_a_second_apply_changes_nothing(
    warehouse_engine: sa.Engine, fakes: Any
) -> None:
    tiktok, apple = fakes
    warehouse.load_day(warehouse_engine, DAY, {"actions": pd.DataFrame(ACTIONS)})
    first = apply(warehouse_engine, fakes, yes=True)
    assert {k: c.outcome for k, c in first.items() if c.outcome != SKIP} == {
        ("tiktok", G1): APPLIED,
        ("tiktok", G2): APPLIED,
        ("apple_ads", P1): APPLIED,
        ("apple_ads", P2): APPLIED,
    }
    groups, campaigns = tiktok.adgroups(), apple.campaigns()
    assert groups[G1]["operation_status"] == "DISABLE" and Decimal(groups[G2]["budget"]) == 84001
    assert groups[G3] == tiktok_objects()["adgroups"][G3]
    assert campaigns[P1]["status"] == "PAUSED"
    assert campaigns[P2]["dailyBudgetAmount"] == {"amount": "30.6", "currency": "USD"}
    keys = ("platform", "object_id", "field", "value_before", "value_after", "status")
    assert {tuple(r[k] for k in keys) for r in log_rows(warehouse_engine)} == {
        ("tiktok", G1, "status", "ENABLED", "PAUSED", "applied"),
        ("tiktok", G2, "budget", "70001", "84001", "applied"),
        ("apple_ads", P1, "status", "ENABLED", "PAUSED", "applied"),
        ("apple_ads", P2, "dailyBudgetAmount", "2550", "3060", "applied"),
    }
    second = apply(warehouse_engine, fakes, yes=True)
    assert {c.outcome for c in second.values() if c.outcome != SKIP} == {NO_CHANGE}
    assert apple.campaigns()[P2]["dailyBudgetAmount"]["amount"] == "30.6"  # not 36.72
    assert len(log_rows(warehouse_engine)) == 4


def test_a_refused_token_fails_each_object_naming_the_fix_without_the_token(
    warehouse_engine: sa.Engine, fakes: Any
) -> None:
    warehouse.load_day(warehouse_engine, DAY, {"actions": pd.DataFrame(ACTIONS[:2])})
    got = apply(warehouse_engine, fakes, yes=True, token="wrong-token-also-secret")
    assert {c.outcome for c in got.values()} == {FAILED}
    for change in got.values():
        assert "ADPERF_TIKTOK_TOKEN" in change.note and "secret" not in change.note


def test_every_platform_with_an_action_client_is_registered_with_its_levels() -> None:
    assert platforms.with_actions() == ("facebook", "google_ads", "tiktok", "apple_ads")
    assert platforms.get("tiktok").load_actions() is TikTokAdGroups
    assert platforms.get("apple_ads").load_actions() is AppleAdsCampaigns
