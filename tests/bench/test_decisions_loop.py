"""A short closed loop on a tiny world with planted campaigns: the real pipeline decides,
`actions apply` acts through the fakes, and the world answers the next day."""

from __future__ import annotations

import configparser
import datetime as dt
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from adperf.sandbox.ad_objects import objects_path, sandbox_objects
from adperf.sandbox.entities import build_entities
from adperf.sandbox.profiles import PlantedCampaign, get_profile
from adperf.sandbox.world import ensure_world
from bench.decisions import LOOP_START, prepare
from bench.decisions_table import REPO

# The pipeline, a few days on a fresh world: minutes (more on a loaded machine).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]

PROFILE, SEED, DAYS = "tiny-planted", 7, 3
HISTORY_DAYS = 365
LOSER, WINNER, AT_THRESHOLD = get_profile(PROFILE).planted  # see adperf/sandbox/profiles.py


def _campaign_id(plant: PlantedCampaign) -> str:
    return build_entities(SEED, get_profile(PROFILE)).campaigns[plant.index].campaign_id


def _loop(folder: Path) -> dict[str, float]:
    """The adperf policy's loop on the planted world, with scale_roas set to the threshold
    campaign's exact truth; returns the campaigns' true 365-day ROAS."""
    prepare(folder, PROFILE, SEED, "adperf", DAYS)
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(folder / "luigi.cfg")
    cfg.set("sandbox", "drift", "false")  # the planted truths hold every day
    # A year of payments before the loop: on the profile's 40 days BG/NBD's 365-day tail reads
    # 2-3x high (docs/model.md section 2), and every campaign would look like a winner; the test
    # is about the rule, on the evidence a real team has.
    cfg.set("sandbox", "days", str(HISTORY_DAYS))
    # The world before the loop, built here to read the truth the rule is set on.
    ensure_world(
        folder / "sandbox",
        end=LOOP_START - dt.timedelta(days=1),
        profile=PROFILE,
        seed=SEED,
        days=HISTORY_DAYS,
        report_timezone=cfg.get("adperf", "report_timezone"),
        drift=False,
    )
    params = json.loads((folder / "sandbox" / "truth" / "params.json").read_text())
    roas = {k: float(v["true_roas_365d"]) for k, v in params.items() if k != "organic"}
    threshold = roas[_campaign_id(AT_THRESHOLD)]
    cfg.set("rules", "scale_roas", repr(threshold))
    cfg.set("rules", "pause_roas", "0.5")
    # The rule's stated risk: an object truly at scale_roas reads P(ROAS > scale_roas) of
    # about 0.5 give or take its noise, so it is scaled with probability up to 1 - confidence
    # per decision. At the shipped 0.6 one of the threshold campaign's two adsets was scaled on
    # the first day (measured 2026-12-07: pROAS 1.64 [0.51-3.05] on 137 installs, P(above)
    # 0.64; the campaign itself held: P(above) 0.25, 0.17, 0.06); at 0.8 that risk is a fifth.
    cfg.set("rules", "confidence", "0.8")
    with (folder / "luigi.cfg").open("w") as f:
        cfg.write(f)
    env = {**os.environ, "LUIGI_CONFIG_PATH": str(folder / "luigi.cfg")}
    subprocess.run(
        [sys.executable, "-m", "bench.decisions", "--one", str(folder)],
        cwd=REPO,
        env=env,
        check=True,
    )
    return roas


def test_closed_loop_pauses_the_loser_scales_the_winner_and_leaves_the_threshold(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "adperf"
    roas = _loop(folder)
    loser, winner, at_threshold = map(_campaign_id, (LOSER, WINNER, AT_THRESHOLD))
    world = folder / "sandbox"
    params = json.loads((world / "truth" / "params.json").read_text())
    assert params[loser]["platform"] == "google_ads"
    assert {params[winner]["platform"], params[at_threshold]["platform"]} == {"facebook"}
    assert roas[loser] < 0.5 / 2  # a clear loser: under half of pause_roas
    assert roas[winner] > 2 * roas[at_threshold]  # a clear winner

    decisions = pd.read_csv(folder / "decisions.csv", dtype=str)
    said = decisions.groupby("campaign_id")["action"].agg(set)
    assert "pause" in said[loser]
    assert "scale" in said[winner]
    assert said[at_threshold] <= {"hold"}
    # The threshold campaign is held on its probability, not for lack of evidence.
    with sqlite3.connect(folder / "warehouse.db") as conn:
        spent = conn.execute(
            "SELECT MIN(spend) FROM actions WHERE level = 'campaign' AND object_id = ?",
            (at_threshold,),
        ).fetchone()[0]
    assert spent >= 100  # [rules] min_spend

    # The fakes hold the change, and the world's next days answer it.
    meta = json.loads((world / "world.json").read_text())
    base, _ = sandbox_objects(meta)
    adsets = json.loads(objects_path(world, meta, "facebook").read_text())["adsets"]
    google = json.loads(objects_path(world, meta, "google_ads").read_text())
    assert google["campaigns"][loser]["status"] == "PAUSED"
    assert all(
        a["daily_budget"] > base["adsets"][k]["daily_budget"]
        for k, a in adsets.items()
        if a["campaign_id"] == winner
    )
    # The threshold campaign is neither scaled nor paused, nor any of its adsets. An adset may
    # be scaled back ([rules] target_roas): measured 2026-12-07, one of its two adsets was on
    # day 3, on pROAS 0.74 [0.28-1.28] (P(ROAS < 1.00) = 0.86 >= 0.80) -- tiny's LTV model
    # reads this campaign at 0.95-1.21 against its truth of 1.30, and that adset lower.
    assert all(
        a["daily_budget"] <= base["adsets"][k]["daily_budget"] and a["status"] == "ACTIVE"
        for k, a in adsets.items()
        if a["campaign_id"] == at_threshold
    )
    truth = pd.read_csv(world / "truth" / "campaign_value_daily.csv", dtype={"campaign_id": str})
    last = (LOOP_START + dt.timedelta(days=DAYS - 1)).isoformat()
    row = truth[(truth["date"] == last) & (truth["campaign_id"] == loser)].iloc[0]
    paused_on = decisions[(decisions["campaign_id"] == loser) & (decisions["action"] == "pause")]
    if paused_on["date"].min() < last:  # paused before the last day: it no longer delivers
        assert row["spend_report"] == 0 and row["budget_factor"] == 0
