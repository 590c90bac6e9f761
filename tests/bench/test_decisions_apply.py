"""The bench's own policies (naive, oracle) change every platform's objects as `actions apply`
would, and the world reads them back as budget factors."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np

from adperf.actions import Settings
from adperf.sandbox import loop
from adperf.sandbox.entities import build_entities
from adperf.sandbox.profiles import get_profile
from adperf.sandbox.world import ensure_world, load_meta
from bench.decisions_loop import _apply


def test_scale_pause_and_scale_back_reach_every_platform_of_the_world(tmp_path: Path) -> None:
    root = tmp_path / "world"
    ensure_world(root, end=dt.date(2026, 3, 10), profile="tiny", seed=7, days=3)
    meta = load_meta(root)
    ent = build_entities(7, get_profile("tiny"))
    by_platform: dict[str, list[str]] = {}
    for c in ent.campaigns:
        by_platform.setdefault(c.platform, []).append(c.campaign_id)
    decided = {}
    for ids in by_platform.values():
        decided[ids[0]] = "scale"
        decided[ids[1]] = "pause"
    settings = Settings(scale_factor=1.2, max_budget_increase=0.5)
    _apply(root, meta, decided, settings)
    factors = loop.current_factors(root, meta, ent)
    for ad in ent.ads:
        action = decided.get(ent.campaigns[ad.campaign_index].campaign_id)
        if action == "pause":
            assert factors[ad.index] == 0.0
        elif action == "scale":  # to the cent (or the won) of the budget
            assert abs(factors[ad.index] - 1.2) < 1e-3
        else:
            assert factors[ad.index] == 1.0
    assert set(by_platform) == {"facebook", "google_ads", "tiktok", "apple_ads"}
    # A second day's scale compounds; a paused campaign stays paused.
    _apply(root, meta, decided, settings)
    again = loop.current_factors(root, meta, ent)
    scaled = [
        a.index
        for a in ent.ads
        if decided.get(ent.campaigns[a.campaign_index].campaign_id) == "scale"
    ]
    assert np.allclose(again[scaled], 1.44, atol=2e-3)
    # A scale back divides the budget by the factor, on every platform.
    _apply(root, meta, {c: "unscale" for c, a in decided.items() if a == "scale"}, settings)
    back = loop.current_factors(root, meta, ent)
    assert np.allclose(back[scaled], 1.2, atol=2e-3)
    assert (
        back[[a.index for a in ent.ads if a.index not in scaled]]
        == again[[a.index for a in ent.ads if a.index not in scaled]]
    ).all()
