"""A short closed loop on the tiny world: the real pipeline decides, `actions apply` acts through
the fakes, and the world answers the next day."""

from __future__ import annotations

import configparser
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from adperf.sandbox.ad_objects import objects_path, sandbox_objects
from bench.decisions import LOOP_START, prepare
from bench.decisions_table import REPO

# The pipeline, a few days on a fresh world: minutes (more on a loaded machine).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]


def _loop(folder: Path, days: int, rules: dict[str, str]) -> None:
    prepare(folder, "tiny", 7, "adperf", days)
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(folder / "luigi.cfg")
    for key, value in rules.items():
        cfg.set("rules", key, value)
    with (folder / "luigi.cfg").open("w") as f:
        cfg.write(f)
    env = {**os.environ, "LUIGI_CONFIG_PATH": str(folder / "luigi.cfg")}
    subprocess.run(
        [sys.executable, "-m", "bench.decisions", "--one", str(folder)],
        cwd=REPO,
        env=env,
        check=True,
    )


# Measured 2026-12-07 (tiny, seed 7, drift), after the BG/NBD fit stopped taking the
# penalizer's U-shaped drop-out: the winner (3.46) is scaled, but the Google loser (0.24) is
# never paused. Its window has 100 installs and about 4 payers: pROAS 0.59-0.66 [0.07-1.47],
# P(ROAS < 0.5) = 0.44-0.47. The campaign at the threshold (1.24) reads 0.56 [0.10-1.27],
# P(ROAS < 0.5) = 0.55 on day 1 and 0.37 [0.06-0.85], P = 0.74 on day 2: held at confidence 0.8,
# paused at the default 0.6. Tiny's data cannot tell these two apart (its BG/NBD fit has a -> 0:
# no drop-out at all on 40 days of history), so no confidence pauses the one without the other.
# Strict: once the rule passes, this marker must go.
@pytest.mark.xfail(strict=True, reason="issue 18 point 5: the rule misjudges tiny's campaigns")
def test_closed_loop_pauses_the_loser_scales_the_winner_and_leaves_the_threshold(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "adperf"
    # Tiny seed 7 (drifting) has Facebook campaigns truly worth 0.33 (a clear loser under
    # pause_roas 0.5, but it starts late: the Google one worth 0.24 is the loser that runs),
    # 3.46 (a clear winner) and 1.24: scale_roas is set right on the last one.
    _loop(folder, 3, {"scale_roas": "1.24", "pause_roas": "0.5"})
    world = folder / "sandbox"
    params = json.loads((world / "truth" / "params.json").read_text())
    paid = {k: v for k, v in params.items() if k != "organic"}
    fb = {k: v for k, v in paid.items() if v["platform"] == "facebook"}
    google_loser = min(
        (k for k, v in paid.items() if v["platform"] == "google_ads"),
        key=lambda k: paid[k]["true_roas_365d"],
    )
    by_roas = sorted(fb, key=lambda k: fb[k]["true_roas_365d"])
    winner = by_roas[-1]
    at_threshold = min(fb, key=lambda k: abs(fb[k]["true_roas_365d"] - 1.24))
    assert paid[google_loser]["true_roas_365d"] < 0.5 / 2
    assert fb[winner]["true_roas_365d"] > 2 * 1.24
    assert abs(fb[at_threshold]["true_roas_365d"] - 1.24) < 0.01

    decisions = pd.read_csv(folder / "decisions.csv", dtype=str)
    said = decisions.groupby("campaign_id")["action"].agg(set)
    assert "pause" in said[google_loser]
    assert "scale" in said[winner]
    assert said[at_threshold] <= {"hold"}
    loser = google_loser

    # The fakes hold the change, and the world's next days answer it.
    meta = json.loads((world / "world.json").read_text())
    base, _ = sandbox_objects(meta)
    now = json.loads(objects_path(world, meta, "facebook").read_text())
    adsets = {k: v for k, v in now["adsets"].items()}
    google = json.loads(objects_path(world, meta, "google_ads").read_text())
    assert google["campaigns"][loser]["status"] == "PAUSED"
    assert all(
        a["daily_budget"] > base["adsets"][k]["daily_budget"]
        for k, a in adsets.items()
        if a["campaign_id"] == winner
    )
    assert all(
        a["daily_budget"] == base["adsets"][k]["daily_budget"] and a["status"] == "ACTIVE"
        for k, a in adsets.items()
        if a["campaign_id"] == at_threshold
    )
    truth = pd.read_csv(world / "truth" / "campaign_value_daily.csv", dtype={"campaign_id": str})
    last = (LOOP_START + dt.timedelta(days=2)).isoformat()
    row = truth[(truth["date"] == last) & (truth["campaign_id"] == loser)].iloc[0]
    paused_on = decisions[(decisions["campaign_id"] == loser) & (decisions["action"] == "pause")]
    if paused_on["date"].min() < last:  # paused before the last day: it no longer delivers
        assert row["spend_report"] == 0 and row["budget_factor"] == 0
