"""`adperf actions apply` end to end on a tiny sandbox world, each run its own process (so the
fakes' state must persist in their file, as for a user running the command twice)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa

from adperf import warehouse
from adperf.sandbox.ad_objects import objects_path, sandbox_objects
from adperf.sandbox.world import load_meta
from tests.tasks.conftest import END, tiny_world  # noqa: F401 - the session's tiny world

REPO = Path(__file__).resolve().parents[2]
DAY = END.isoformat()


def _row(platform: str, level: str, object_id: str, act: str) -> dict[str, Any]:
    return {
        "date": DAY,
        "platform": platform,
        "level": level,
        "object_id": object_id,
        "object_name": None,
        "action": act,
        "reason": "test",
        "roas": 2.0,
        "proas": 2.0,
        "spend_micros": 300_000_000,
        "parent_id": None,
        "proas_low": None,
        "proas_high": None,
    }


def test_cli_dry_run_then_apply_then_nothing_left(
    tmp_path: Path,
    tiny_world: Path,  # noqa: F811
) -> None:
    world = tmp_path / "world"
    shutil.copytree(tiny_world, world)
    meta = load_meta(world)
    fb, google = sandbox_objects(meta)
    adset_id, adset = sorted(fb["adsets"].items())[0]
    campaign_id, campaign = sorted(google["campaigns"].items())[0]
    budget = google["budgets"][campaign["budget_id"]]["amount_micros"]
    url = f"sqlite:///{tmp_path}/w.db"
    engine = warehouse.make_engine(url)
    rows = [
        _row("facebook", "adset", adset_id, "pause"),
        _row("google_ads", "campaign", campaign_id, "scale"),
    ]
    warehouse.load_day(engine, DAY, {"actions": pd.DataFrame(rows)})

    cfg = tmp_path / "luigi.cfg"
    cfg.write_text(
        f"[adperf]\nsandbox = true\ndata_root = {tmp_path}/lake\nwarehouse_url = {url}\n"
        f"[sandbox]\nroot = {world}\nprofile = tiny\n"
        "[actions]\nscale_factor = 1.2\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADPERF_")}
    env["LUIGI_CONFIG_PATH"] = str(cfg)

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "tasks.cli", "actions", "apply", "--date", DAY, *extra]
        return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)

    dry = run()
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert "dry run" in dry.stdout
    assert f"{adset['name']} ({adset_id})" in dry.stdout
    assert "status ACTIVE -> PAUSED" in dry.stdout
    after = (budget * 12 + 50_000) // 100_000 * 10_000  # x 1.2, to the nearest cent
    assert f"budget {budget / 1e6:,.2f} USD -> {after / 1e6:,.2f} USD" in dry.stdout
    assert "2 will change" in dry.stdout

    applied = run("--yes", "--by", "marketer@example")
    assert applied.returncode == 0, applied.stderr[-3000:]
    assert "2 applied" in applied.stdout
    # The progress on stderr (a pipe here: plain lines, no redrawn line).
    lines = applied.stderr.splitlines()
    assert f"actions apply {DAY}: started" in lines and "2 changes to run" in lines, lines
    assert lines[-1].startswith(f"actions apply {DAY}: 2/2 changes done in "), lines
    fb_state = pd.read_json(objects_path(world, meta, "facebook"), typ="series")
    assert fb_state["adsets"][adset_id]["status"] == "PAUSED"
    g_state = pd.read_json(objects_path(world, meta, "google_ads"), typ="series")
    assert g_state["budgets"][campaign["budget_id"]]["amount_micros"] == after

    again = run("--yes")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "2 no change" in again.stdout
    g_state = pd.read_json(objects_path(world, meta, "google_ads"), typ="series")
    assert g_state["budgets"][campaign["budget_id"]]["amount_micros"] == after
    with engine.connect() as conn:
        log = conn.execute(sa.select(warehouse.action_log)).mappings().all()
    assert sorted((r["platform"], r["status"], r["applied_by"]) for r in log) == [
        ("facebook", "applied", "marketer@example"),
        ("google_ads", "applied", "marketer@example"),
    ]

    # A campaign the sandbox has not: named, with the fix, and a non-zero exit.
    rows.append(_row("google_ads", "campaign", "42", "pause"))
    warehouse.load_day(engine, DAY, {"actions": pd.DataFrame(rows)})
    failed = run("--yes", "--platform", "google_ads")
    assert failed.returncode == 1
    assert "started" not in failed.stderr  # nothing to apply: no progress line
    assert f"google_ads for {DAY}: campaign 42 is in none of the customers" in failed.stderr
    assert "Fix:" in failed.stderr
    engine.dispose()


def test_cli_without_the_days_report_says_what_to_run(
    tmp_path: Path,
    tiny_world: Path,  # noqa: F811
) -> None:
    cfg = tmp_path / "luigi.cfg"
    cfg.write_text(
        f"[adperf]\nsandbox = true\nwarehouse_url = sqlite:///{tmp_path}/w.db\n"
        f"[sandbox]\nroot = {tiny_world}\nprofile = tiny\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADPERF_")}
    env["LUIGI_CONFIG_PATH"] = str(cfg)
    cmd = [sys.executable, "-m", "tasks.cli", "actions", "apply", "--date", DAY]
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    assert f"no report for {DAY}" in out.stderr and "DailyReport --date" in out.stderr
