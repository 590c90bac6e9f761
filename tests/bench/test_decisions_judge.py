"""bench.decisions' judging of closed loops on hand-made run folders (no pipeline run)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from bench.decisions import judge_seed, render, render_campaigns

DAYS = ["2026-09-01", "2026-09-02"]
HEADER = ["date", "platform", "campaign_id", "budget_factor", "fatigue", "spend_report",
          "installs", "value_per_install_365d_usd", "true_roas_365d"]  # fmt: skip


def loop_folder(root: Path, policy: str, rows: list[list[object]], said: list[str]) -> None:
    """One policy's finished loop: its world's truth per campaign-day, and its decisions."""
    folder = root / policy
    (folder / "sandbox" / "truth").mkdir(parents=True)
    (folder / "luigi.cfg").write_text("[rules]\nscale_roas = 1.3\npause_roas = 0.5\n")
    (folder / "done.json").write_text(
        json.dumps({"first_day": DAYS[0], "last_day": DAYS[1], "seconds": 2.0,
                    "seconds_per_day": 1.0})
    )  # fmt: skip
    params = {
        "win": {"campaign_name": "Winner", "true_roas_365d": 2.0},
        "lose": {"campaign_name": "Loser", "true_roas_365d": 0.25},
    }
    (folder / "sandbox" / "truth" / "params.json").write_text(json.dumps(params))
    pd.DataFrame(rows, columns=HEADER).to_csv(
        folder / "sandbox" / "truth" / "campaign_value_daily.csv", index=False
    )
    decisions = [line.split(",") for line in said]
    pd.DataFrame(decisions, columns=["date", "campaign_id", "action"]).to_csv(
        folder / "decisions.csv", index=False
    )


def test_profit_per_campaign_against_none(tmp_path: Path) -> None:
    # none: both campaigns as they were; value = installs x value per install.
    loop_folder(tmp_path, "none", [
        ["2026-09-01", "facebook", "win", 1, 1, 100.0, 10, 20.0, 2.0],
        ["2026-09-02", "facebook", "win", 1, 1, 100.0, 10, 20.0, 2.0],
        ["2026-09-01", "facebook", "lose", 1, 1, 100.0, 10, 2.5, 0.25],
        ["2026-09-02", "facebook", "lose", 1, 1, 100.0, 10, 2.5, 0.25],
    ], [])  # fmt: skip
    # A policy that scaled the winner on day 1 and paused the loser on day 1.
    loop_folder(tmp_path, "adperf", [
        ["2026-09-01", "facebook", "win", 1, 1, 100.0, 10, 20.0, 2.0],
        ["2026-09-02", "facebook", "win", 1.2, 1, 120.0, 11, 20.0, 1.83],
        ["2026-09-01", "facebook", "lose", 1, 1, 100.0, 10, 2.5, 0.25],
        ["2026-09-02", "facebook", "lose", 0, 1, 0.0, 0, 2.5, 0.25],
    ], ["2026-09-01,win,scale", "2026-09-01,lose,pause"])  # fmt: skip
    results = {7: judge_seed(tmp_path, ["none", "adperf"], None)}
    camps = results[7]["adperf"]["campaigns"]
    assert camps["win"]["profit"] == (200 - 100) + (220 - 120)
    assert camps["lose"]["profit"] == (25 - 100) + 0
    assert camps["win"]["budget_factor_last"] == 1.2 and camps["lose"]["budget_factor_last"] == 0
    assert camps["win"]["name"] == "Winner" and camps["win"]["true_roas_365d"] == 2.0
    text = render_campaigns(results)
    # Against none: the winner's second day earned 100 as before (+0), the pause saved 75.
    assert "| Winner | 2.00 | +0 (1.20) |" in text
    assert "| Loser | 0.25 | +75 (0.00) |" in text
    assert text.index("Winner") < text.index("Loser")  # by true ROAS, best first
    # The totals agree with the per-campaign sums.
    total = sum(c["profit"] for c in camps.values())
    assert results[7]["adperf"]["profit"] == total
    assert "| 7 | adperf |" in render(results, "small", 2)
