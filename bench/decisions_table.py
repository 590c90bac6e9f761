"""`python -m bench.decisions_table`: the campaign decisions of a run, judged by the world's truth.

Runs `RangeDaily --of DailyReport` over [start, stop] on a sandbox world of its own
(`var/bench/decisions-<profile>-<seed>/`: world, lake, warehouse, outbox, its own luigi.cfg),
then prints a 3x3 table: what the report said per campaign and day (scale / hold / pause) against
what the truth says (`true_roas_365d` of truth/params.json against [rules] scale_roas and
pause_roas), the spend on true losers while not paused, and each truly good or bad campaign's
decisions. Actions are recommended, never applied: the world does not answer them.

    python -m bench.decisions_table --start 2026-11-16 --stop 2026-12-06 --profile small --seed 7

Not a test: a 21-day run on the small profile takes minutes. `--report-only` judges an
existing run again without running anything.
"""

from __future__ import annotations

import argparse
import configparser
import datetime as dt
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd

REPO = Path(__file__).resolve().parent.parent
VERDICTS = ("scale", "hold", "pause")
# What the report may say of a campaign: the verdicts and a scale back ([rules] target_roas).
SAID = ("scale", "unscale", "hold", "pause")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.decisions_table", description=__doc__)
    parser.add_argument("--start", type=dt.date.fromisoformat, required=True, help="first day")
    parser.add_argument("--stop", type=dt.date.fromisoformat, required=True, help="last day")
    parser.add_argument("--profile", default="small", help="sandbox profile (default small)")
    parser.add_argument("--seed", type=int, default=7, help="world seed (default 7)")
    parser.add_argument("--workers", type=int, default=1, help="luigi workers (default 1)")
    parser.add_argument("--out", type=Path, default=REPO / "var" / "bench", help="parent folder")
    parser.add_argument("--report-only", action="store_true", help="judge an existing run")
    args = parser.parse_args(argv)

    folder = (args.out / f"decisions-{args.profile}-{args.seed}").resolve()
    cfg = write_config(folder, args.profile, args.seed)
    if not args.report_only:
        code = run_pipeline(cfg, args.start, args.stop, args.workers)
        if code != 0:
            print(f"RangeDaily exited {code}: the table below covers the days that ran")
    result = judge(folder, args.start, args.stop)
    print(render(result, args.profile, args.seed, args.start, args.stop))
    (folder / "decisions.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    return 0


def write_config(folder: Path, profile: str, seed: int) -> Path:
    """The repository's luigi.cfg with every path under `folder` and the world's profile/seed."""
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(REPO / "luigi.cfg")
    overrides = {
        ("adperf", "data_root"): str(folder / "lake"),
        ("adperf", "warehouse_url"): f"sqlite:///{folder / 'warehouse.db'}",
        ("sandbox", "root"): str(folder / "sandbox"),
        ("sandbox", "profile"): profile,
        ("sandbox", "seed"): str(seed),
        ("slack", "outbox"): str(folder / "outbox"),
        ("scheduler", "state_path"): str(folder / "luigi-state.pickle"),
        ("task_history", "db_connection"): f"sqlite:///{folder / 'task-history.db'}",
    }
    for (section, key), value in overrides.items():
        if not cfg.has_section(section):
            cfg.add_section(section)
        cfg.set(section, key, value)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "luigi.cfg"
    with path.open("w") as f:
        cfg.write(f)
    return path


def run_pipeline(cfg: Path, start: dt.date, stop: dt.date, workers: int) -> int:
    """RangeDaily --of DailyReport over [start, stop] with `cfg`, the world built through stop."""
    env = {**os.environ, "LUIGI_CONFIG_PATH": str(cfg)}
    build = (
        "import datetime as dt; from tasks.resources import ensure_sandbox_world; "
        f"ensure_sandbox_world(dt.date.fromisoformat('{stop.isoformat()}'))"
    )
    subprocess.run([sys.executable, "-c", build], cwd=REPO, env=env, check=True)
    command = [
        sys.executable,
        "-m",
        "luigi",
        "--module",
        "tasks",
        "RangeDaily",
        "--of",
        "DailyReport",
        "--start",
        start.isoformat(),
        "--stop",
        (stop + dt.timedelta(days=1)).isoformat(),  # RangeDaily's stop is exclusive
        "--days-back",
        "3650",
        "--local-scheduler",
        # luigi's pid lock is per command line: another run of the same range (another seed,
        # another checkout, another engineer) would make this one exit 'already running'.
        "--no-lock",
        "--workers",
        str(workers),
    ]
    return subprocess.run(command, cwd=REPO, env=env, check=False).returncode


def truth_class(roas: float, scale_roas: float, pause_roas: float) -> str:
    """What a decision maker who knew the true ROAS would say."""
    if roas > scale_roas:
        return "scale"
    if roas < pause_roas:
        return "pause"
    return "hold"


def judge(folder: Path, start: dt.date, stop: dt.date) -> dict[str, Any]:
    """Campaign-level decisions of [start, stop] against the truth, as plain data."""
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(folder / "luigi.cfg")
    scale_roas = cfg.getfloat("rules", "scale_roas")
    pause_roas = cfg.getfloat("rules", "pause_roas")
    params = json.loads((folder / "sandbox" / "truth" / "params.json").read_text())
    truth = {
        str(k): float(v["true_roas_365d"])
        for k, v in params.items()
        if k != "organic" and v.get("true_roas_365d") is not None
    }
    with sqlite3.connect(folder / "warehouse.db") as conn:
        days = (start.isoformat(), stop.isoformat())
        actions = pd.read_sql(
            "SELECT date, platform, object_id, object_name, action, proas_low, proas_high "
            "FROM actions "
            "WHERE level = 'campaign' AND date BETWEEN ? AND ?",
            conn,
            params=days,
        )
        daily = pd.read_sql(
            "SELECT date, platform, campaign_id, spend FROM campaign_daily "
            "WHERE date BETWEEN ? AND ?",
            conn,
            params=days,
        )
    actions["date"] = actions["date"].astype(str).str[:10]
    daily["date"] = daily["date"].astype(str).str[:10]
    daily["spend"] = pd.to_numeric(daily["spend"]).astype("float64")
    actions = actions.merge(
        daily.rename(columns={"campaign_id": "object_id"}),
        on=["date", "platform", "object_id"],
        how="left",
    )
    actions["true_roas"] = actions["object_id"].map(truth)
    judged = actions[actions["true_roas"].notna()].copy()
    judged["truth"] = [truth_class(r, scale_roas, pause_roas) for r in judged["true_roas"]]
    table = {
        said: {
            t: int(((judged["action"] == said) & (judged["truth"] == t)).sum()) for t in VERDICTS
        }
        for said in SAID
    }
    with_interval = judged[judged["proas_low"].notna() & judged["proas_high"].notna()]
    covered = (with_interval["proas_low"] <= with_interval["true_roas"]) & (
        with_interval["true_roas"] <= with_interval["proas_high"]
    )
    losers = judged[judged["truth"] == "pause"]
    campaigns = []
    for (object_id, name), rows in judged.groupby(["object_id", "object_name"], sort=False):
        counts = rows["action"].value_counts()
        campaigns.append(
            {
                "campaign_id": object_id,
                "campaign_name": name,
                "true_roas_365d": round(float(rows["true_roas"].iloc[0]), 3),
                "truth": rows["truth"].iloc[0],
                **{v: int(counts.get(v, 0)) for v in SAID},
                "first_scale": _first(rows, "scale"),
                "first_pause": _first(rows, "pause"),
                "spend": round(float(rows["spend"].fillna(0).sum()), 2),
            }
        )
    campaigns.sort(key=lambda c: -c["true_roas_365d"])
    needed = judged[judged["truth"] != "hold"]
    return {
        "days": [start.isoformat(), stop.isoformat()],
        "days_with_actions": int(judged["date"].nunique()),
        "scale_roas": scale_roas,
        "pause_roas": pause_roas,
        "decisions": len(judged),
        "table": table,
        "needed_actions": len(needed),
        "needed_taken": int((needed["action"] == needed["truth"]).sum()),
        # A scale back of a true winner shrinks it: the wrong direction too, also counted alone.
        "wrong_direction": int(
            (
                ((judged["action"] == "scale") & (judged["truth"] == "pause"))
                | (judged["action"].isin(["pause", "unscale"]) & (judged["truth"] == "scale"))
            ).sum()
        ),
        "scale_backs_of_winners": int(
            ((judged["action"] == "unscale") & (judged["truth"] == "scale")).sum()
        ),
        "interval_covers": int(covered.sum()),
        "with_interval": len(with_interval),
        "loser_spend_not_paused": round(
            float(losers.loc[losers["action"] != "pause", "spend"].fillna(0).sum()), 2
        ),
        "loser_spend": round(float(losers["spend"].fillna(0).sum()), 2),
        "campaigns": campaigns,
    }


def _first(rows: pd.DataFrame, action: str) -> str | None:
    dates = sorted(rows.loc[rows["action"] == action, "date"])
    return dates[0] if dates else None


def render(result: dict[str, Any], profile: str, seed: int, start: dt.date, stop: dt.date) -> str:
    """The table and its notes as Markdown."""
    t = result["table"]
    lines = [
        f"decisions, profile {profile}, seed {seed}, {start} .. {stop} "
        f"({result['days_with_actions']} days, {result['decisions']} campaign decisions; "
        f"truth: true_roas_365d vs scale {result['scale_roas']} / pause {result['pause_roas']})",
        "",
        "| | truth: scale | truth: hold | truth: pause |",
        "|---|---|---|---|",
        *(
            f"| said {'scale back' if said == 'unscale' else said} | {t[said]['scale']} | "
            f"{t[said]['hold']} | {t[said]['pause']} |"
            for said in SAID
        ),
        "",
        f"needed actions taken: {result['needed_taken']} of {result['needed_actions']}; "
        f"wrong-direction actions: {result['wrong_direction']} (of them scale backs of true "
        f"winners: {result.get('scale_backs_of_winners', 0)})",
        f"90% pROAS interval covers the true ROAS in {result['interval_covers']} of "
        f"{result['with_interval']} decisions with an interval",
        f"spend on true losers (< {result['pause_roas']}) on days not paused: "
        f"{result['loser_spend_not_paused']:,.2f} USD (of {result['loser_spend']:,.2f})",
        "",
        "| campaign | true ROAS 365d | scale | scale back | hold | pause | first scale | "
        "first pause |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in result["campaigns"]:
        lines.append(
            f"| {c['campaign_name']} | {c['true_roas_365d']:.2f} | {c['scale']} | "
            f"{c.get('unscale', 0)} | {c['hold']} | {c['pause']} | {c['first_scale'] or '-'} | "
            f"{c['first_pause'] or '-'} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
