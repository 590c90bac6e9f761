"""Planted campaigns (Profile.planted): the truth a closed-loop test needs, set on purpose."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path

import pandas as pd
import pytest

from adperf.errors import ConfigError
from adperf.sandbox.entities import build_entities
from adperf.sandbox.profiles import PlantedCampaign, Profile, get_profile
from adperf.sandbox.world import ensure_world

PROFILE = "tiny-planted"


def test_planted_campaigns_have_their_true_roas_and_volume(tmp_path: Path) -> None:
    root = tmp_path / "world"
    ensure_world(root, end=dt.date(2026, 5, 20), profile=PROFILE, seed=7, days=10)
    params = json.loads((root / "truth" / "params.json").read_text())
    daily = pd.read_csv(root / "truth" / "campaign_daily.csv", dtype={"campaign_id": str})
    installs = daily.groupby("campaign_id")["installs"].sum()
    cast = build_entities(7, get_profile(PROFILE)).campaigns
    planted = {cast[p.index].campaign_id: p for p in get_profile(PROFILE).planted}
    assert len(planted) == 3
    for cid, plant in planted.items():
        # The CPI is rounded to a cent (or a won): the truth lands within 1% of the plant.
        assert params[cid]["true_roas_365d"] == pytest.approx(plant.roas_365d, rel=0.01)
    others = [n for cid, n in installs.items() if cid not in planted]
    # 4x the budget of a campaign drawn like the others: far more installs than their median.
    assert min(installs[cid] for cid in planted) > 2 * sorted(others)[len(others) // 2]
    # The loser is the expensive one: its 10 days pass [rules] min_spend many times over.
    loser = min(planted, key=lambda c: planted[c].roas_365d)
    assert daily[daily["campaign_id"] == loser]["spend_report"].sum() > 10 * 100


def test_a_plant_outside_the_cast_is_refused() -> None:
    bad = dataclasses.replace(
        get_profile("tiny"), planted=(PlantedCampaign(index=99, roas_365d=0.1),)
    )
    with pytest.raises(ConfigError, match="plants campaign 99.*campaigns 0-5"):
        build_entities(7, bad)
    zero = dataclasses.replace(
        get_profile("tiny"), planted=(PlantedCampaign(index=1, roas_365d=0.0),)
    )
    with pytest.raises(ConfigError, match="must be positive"):
        build_entities(7, zero)


def test_the_world_and_every_platforms_base_objects_share_one_build_of_the_entities(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from adperf.sandbox import entities, fake_apple_ads, fake_tiktok
    from adperf.sandbox.ad_objects import sandbox_objects

    built: list[tuple[int, str]] = []

    def counting(seed: int, profile: Profile) -> entities.Entities:
        built.append((seed, profile.name))
        return build_entities(seed, profile)

    monkeypatch.setattr(entities, "build_entities", counting)
    entities.entities_of.cache_clear()
    try:
        seed = 424242  # a seed no other test caches the objects of
        fb, google = sandbox_objects({"seed": seed, "profile": "tiny"})
        tiktok = fake_tiktok.sandbox_objects(seed, "tiny")
        apple = fake_apple_ads.sandbox_objects(seed, "tiny")
        ent = entities.entities_of(seed, get_profile("tiny"))
    finally:
        entities.entities_of.cache_clear()

    assert built == [(seed, "tiny")]  # the Monte Carlo truths once, not once per platform
    ids = {c.campaign_id for c in ent.campaigns}
    assert set(fb["campaigns"]) | set(google["campaigns"]) | set(apple["campaigns"]) <= ids
    assert {g["campaign_id"] for g in tiktok["adgroups"].values()} <= ids
