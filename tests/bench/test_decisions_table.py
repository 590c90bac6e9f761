"""bench.decisions_table's judging on a hand-made run folder (no pipeline run)."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from pathlib import Path

from bench.decisions_table import judge, render, write_config

DAYS = ["2026-11-16", "2026-11-17"]
# campaign -> (true ROAS 365d, decision per day, spend per day)
CAMPAIGNS = {
    "win": (2.95, ["hold", "scale"], 100.0),
    "fade": (1.5, ["unscale", "hold"], 80.0),
    "mid": (1.0, ["pause", "hold"], 50.0),
    "lose": (0.24, ["hold", "pause"], 300.0),
}


def test_judge_counts_decisions_against_the_truth(tmp_path: Path) -> None:
    folder = tmp_path / "decisions-small-7"
    write_config(folder, "small", 7)
    (folder / "sandbox" / "truth").mkdir(parents=True)
    params = {c: {"true_roas_365d": t} for c, (t, _, _) in CAMPAIGNS.items()}
    params["organic"] = {"true_roas_365d": None}
    (folder / "sandbox" / "truth" / "params.json").write_text(json.dumps(params))
    with sqlite3.connect(folder / "warehouse.db") as conn:
        conn.execute(
            "CREATE TABLE actions (date TEXT, platform TEXT, level TEXT, object_id TEXT, "
            "object_name TEXT, action TEXT, proas_low REAL, proas_high REAL)"
        )
        conn.execute("CREATE TABLE campaign_daily (date TEXT, platform TEXT, campaign_id TEXT, "
                     "spend REAL)")  # fmt: skip
        for c, (truth, said, spend) in CAMPAIGNS.items():
            for day, action in zip(DAYS, said, strict=True):
                interval = (truth - 0.1, truth + 0.1) if c != "mid" else (2.0, 3.0)
                conn.execute(
                    "INSERT INTO actions VALUES (?, 'facebook', 'campaign', ?, ?, ?, ?, ?)",
                    (day, c, f"name-{c}", action, *interval),
                )
                conn.execute(
                    "INSERT INTO campaign_daily VALUES (?, 'facebook', ?, ?)", (day, c, spend)
                )
            # Adset rows are not judged.
            conn.execute(
                "INSERT INTO actions VALUES (?, 'facebook', 'adset', ?, ?, 'scale', 0, 9)",
                (DAYS[0], f"s-{c}", f"adset-{c}"),
            )
    got = judge(folder, dt.date(2026, 11, 16), dt.date(2026, 11, 17))
    assert got["table"] == {
        "scale": {"scale": 1, "hold": 0, "pause": 0},
        "unscale": {"scale": 1, "hold": 0, "pause": 0},
        "hold": {"scale": 2, "hold": 1, "pause": 1},
        "pause": {"scale": 0, "hold": 1, "pause": 1},
    }
    # A scale back of a true winner (1.5 > 1.3) is in the wrong direction.
    assert (got["needed_taken"], got["needed_actions"], got["wrong_direction"]) == (2, 6, 1)
    assert got["scale_backs_of_winners"] == 1
    assert (got["interval_covers"], got["with_interval"]) == (6, 8)
    # The loser's spend on the day it was not paused only.
    assert (got["loser_spend_not_paused"], got["loser_spend"]) == (300.0, 600.0)
    win = next(c for c in got["campaigns"] if c["campaign_id"] == "win")
    assert (win["scale"], win["first_scale"]) == (1, "2026-11-17")
    text = render(got, "small", 7, dt.date(2026, 11, 16), dt.date(2026, 11, 17))
    assert "| said hold | 2 | 1 | 1 |" in text
    assert "| said scale back | 1 | 0 | 0 |" in text
    assert "wrong-direction actions: 1 (of them scale backs of true winners: 1)" in text
