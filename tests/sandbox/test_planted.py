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
from adperf.sandbox.profiles import PlantedCampaign, get_profile
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
