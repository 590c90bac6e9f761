"""`python -m bench.decisions`: decision policies compared in the sandbox's closed loop.

For each seed, one world per policy (same seed, profile and drift: the same world until the
policies act differently), run day by day for `--days` days after the profile's history:

- `none`: never act (the world as it would run by itself);
- `old`: the real pipeline with `[rules] pooled = false` (each decision on the report day's
  cohort alone, the rule before issue 18), applied with `adperf actions apply --yes`;
- `naive`: the real pipeline's outputs, decided by the bench: a campaign's D7 ROAS over the
  window's cohorts that reached D7, times the app-wide pLTV / D7 revenue ratio of those
  cohorts (what a spreadsheet does); scale over `scale_roas`, pause under `pause_roas`, with
  the same minimum spend and installs; applied to the fakes' objects with the same steps;
- `adperf`: the real pipeline (`DailyReport`) and `adperf actions apply --yes` (the CLI's own
  function, in-process);
- `oracle`: acts on the truth (each campaign's true 365-day ROAS of the day,
  truth/campaign_value_daily.csv) with the same step sizes and caps.

Judged on truth/campaign_value_daily.csv of each policy's world over the loop's days: profit
(installs x true 365-day value per install - spend), the share of the oracle's uplift over
`none`, needed actions taken, wrong-direction actions, spend on true losers while not paused,
days from a loser's reaching `min_spend` (in the loop) to its pause; and per campaign, each
policy's profit against `none` and its last budget factor (where a policy made or lost money).
Markdown tables, JSON and a chart under `var/bench/loop-<profile>/`.

    python -m bench.decisions --profile small --seeds 7,11,13 --days 90

Not a test: minutes per policy and seed.
"""

from __future__ import annotations

import argparse
import configparser
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

from bench.decisions_table import REPO, write_config

POLICIES = ("none", "old", "naive", "adperf", "oracle")
PIPELINE_POLICIES = ("old", "naive", "adperf")
LOOP_START = dt.date(2026, 9, 1)  # first day of the loop; the history ends the day before


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.decisions", description=__doc__)
    parser.add_argument("--profile", default="small", help="sandbox profile (default small)")
    parser.add_argument("--seeds", default="7", help="comma-separated world seeds")
    parser.add_argument("--days", type=int, default=90, help="days of the loop (default 90)")
    parser.add_argument("--policies", default=",".join(POLICIES), help="comma-separated")
    parser.add_argument("--parallel", type=int, default=1, help="policy loops run at once")
    parser.add_argument("--out", type=Path, default=REPO / "var" / "bench", help="parent folder")
    parser.add_argument("--report-only", action="store_true", help="judge existing loops")
    parser.add_argument(
        "--history-days",
        type=int,
        default=0,
        help="days of history the worlds start with ([sandbox] days; default the profile's)",
    )
    parser.add_argument(
        "--rule",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a [rules] setting for every policy's luigi.cfg, e.g. confidence=0.7 (repeatable)",
    )
    parser.add_argument(
        "--until",
        type=dt.date.fromisoformat,
        help="judge the loops' days to this one only (loops still running or stopped early)",
    )
    sub = argparse.ArgumentParser(add_help=False)
    sub.add_argument("--one", type=Path)
    known, _ = sub.parse_known_args(argv)
    if known.one is not None:  # a child: one policy's loop in its own process (its own luigi.cfg)
        return run_loop(known.one)
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    policies = [p for p in args.policies.split(",") if p]
    name = f"loop-{args.profile}" + (f"-h{args.history_days}" if args.history_days else "")
    base = (args.out / name).resolve()
    jobs = []
    for seed in seeds:
        for policy in policies:
            folder = base / f"seed{seed}" / policy
            rules = _rules(args.rule)
            prepare(folder, args.profile, seed, policy, args.days, rules, args.history_days)
            jobs.append(folder)
    if not args.report_only:
        run_all(jobs, args.parallel)
    results = {seed: judge_seed(base / f"seed{seed}", policies, args.until) for seed in seeds}
    days = args.days if args.until is None else (args.until - LOOP_START).days + 1
    text = render(results, args.profile, days) + "\n" + render_campaigns(results)
    print(text)
    (base / "decisions.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (base / "decisions.md").write_text(text + "\n")
    chart(results, base / "decisions.png", args.profile)
    return 0


# ---------------------------------------------------------------- the loops


def _rules(pairs: list[str]) -> dict[str, str]:
    """--rule KEY=VALUE arguments as a dict (a malformed one is an argparse-style exit)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"--rule {pair!r}: expected KEY=VALUE, e.g. confidence=0.7")
        out[key.strip()] = value.strip()
    return out


def prepare(
    folder: Path,
    profile: str,
    seed: int,
    policy: str,
    days: int,
    rules: dict[str, str] | None = None,
    history_days: int = 0,
) -> None:
    """The policy's folder: luigi.cfg (drifting world with `history_days` of history, 0: the
    profile's; the policy's rule, `rules` over the defaults) and loop.json."""
    cfg_path = write_config(folder, profile, seed)
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(cfg_path)
    cfg.set("sandbox", "drift", "true")
    if history_days:
        cfg.set("sandbox", "days", str(history_days))
    if not cfg.has_section("rules"):
        cfg.add_section("rules")
    cfg.set("rules", "pooled", "false" if policy == "old" else "true")
    for key, value in (rules or {}).items():
        cfg.set("rules", key, value)
    with cfg_path.open("w") as f:
        cfg.write(f)
    spec = {"profile": profile, "seed": seed, "policy": policy, "days": days}
    (folder / "loop.json").write_text(json.dumps(spec) + "\n")


def run_all(jobs: list[Path], parallel: int) -> None:
    """Each policy loop in a child process, `parallel` at a time."""
    running: list[tuple[Path, subprocess.Popen[bytes]]] = []
    pending = list(jobs)
    while pending or running:
        while pending and len(running) < max(parallel, 1):
            folder = pending.pop(0)
            env = {**os.environ, "LUIGI_CONFIG_PATH": str(folder / "luigi.cfg")}
            log = (folder / "loop.log").open("wb")
            cmd = [sys.executable, "-m", "bench.decisions", "--one", str(folder)]
            running.append(
                (folder, subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=log))
            )
        time.sleep(1.0)
        for item in list(running):
            if item[1].poll() is not None:
                running.remove(item)
                code = item[1].returncode
                print(f"{item[0].parent.name}/{item[0].name}: exit {code}", file=sys.stderr)


def run_loop(folder: Path) -> int:
    """One policy's loop, day by day (in a child process whose LUIGI_CONFIG_PATH is its cfg)."""
    from bench import decisions_loop

    spec = json.loads((folder / "loop.json").read_text())
    return decisions_loop.run(folder, spec, LOOP_START)


# ---------------------------------------------------------------- judging


def judge_seed(seed_dir: Path, policies: list[str], until: dt.date | None) -> dict[str, Any]:
    """Per policy: the measures of its loop, and uplift shares against none and oracle."""
    out: dict[str, Any] = {}
    for policy in policies:
        folder = seed_dir / policy
        if (folder / "done.json").exists() or until is not None:
            out[policy] = judge(folder, until)
    none, oracle = out.get("none"), out.get("oracle")
    for m in out.values():
        if none is not None and oracle is not None:
            gap = oracle["profit"] - none["profit"]
            m["uplift_share"] = (m["profit"] - none["profit"]) / gap if gap > 0 else None
    return out


def judge(folder: Path, until: dt.date | None = None) -> dict[str, Any]:
    """The measures of one policy's loop against its world's truth (to `until` if given)."""
    done = _done(folder, until)
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(folder / "luigi.cfg")
    scale_roas = cfg.getfloat("rules", "scale_roas", fallback=1.3)
    pause_roas = cfg.getfloat("rules", "pause_roas", fallback=0.5)
    min_spend = cfg.getfloat("rules", "min_spend", fallback=100.0)
    first, last = done["first_day"], done["last_day"]
    truth = pd.read_csv(
        folder / "sandbox" / "truth" / "campaign_value_daily.csv",
        dtype={"campaign_id": str, "date": str},
    )
    loop = truth[(truth["date"] >= first) & (truth["date"] <= last)].copy()
    loop["value"] = loop["installs"] * loop["value_per_install_365d_usd"]
    profit = float((loop["value"] - loop["spend_report"]).sum())
    decisions = _decisions(folder, first, last)
    # Every live campaign-day of the loop, with what the policy said of it (nothing: hold).
    dec = loop.merge(decisions, on=["date", "campaign_id"], how="left")
    dec["action"] = dec["action"].fillna("hold")
    dec = dec[dec["budget_factor"] > 0]
    dec["truth"] = [
        "scale" if r > scale_roas else "pause" if r < pause_roas else "hold"
        for r in dec["true_roas_365d"]
    ]
    needed = dec[dec["truth"].ne("hold")]
    acted = dec[dec["action"].isin(["scale", "pause"])]
    wrong = acted[
        ((acted["action"] == "scale") & (acted["truth"] == "pause"))
        | ((acted["action"] == "pause") & (acted["truth"] == "scale"))
    ]
    losers = loop[loop["true_roas_365d"] < pause_roas]
    backs = dec[dec["action"] == "unscale"]
    return {
        "campaigns": campaign_profits(folder, loop),
        "profit": round(profit, 2),
        "spend": round(float(loop["spend_report"].sum()), 2),
        "value": round(float(loop["value"].sum()), 2),
        "actions": len(acted),
        "scales": int((acted["action"] == "scale").sum()),
        "pauses": int((acted["action"] == "pause").sum()),
        "needed": len(needed),
        "needed_taken": int((needed["action"] == needed["truth"]).sum()),
        "wrong_direction": len(wrong),
        # Scale backs ([rules] target_roas), and those of campaigns truly over scale_roas.
        "scale_backs": len(backs),
        "scale_backs_of_winners": int((backs["truth"] == "scale").sum()),
        "loser_spend": round(float(losers["spend_report"].sum()), 2),
        "pause_delays": pause_delays(loop, decisions, pause_roas, min_spend, last),
        "seconds": done.get("seconds"),
        "seconds_per_day": done.get("seconds_per_day"),
    }


def campaign_profits(folder: Path, loop: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per campaign of the loop's truth: its name, base true 365-day ROAS (params.json, before
    fatigue and budget), profit over the loop's days and budget factor on its last day."""
    params = json.loads((folder / "sandbox" / "truth" / "params.json").read_text())
    out: dict[str, dict[str, Any]] = {}
    for cid, rows in loop.sort_values("date").groupby("campaign_id"):
        p = params.get(str(cid), {})
        out[str(cid)] = {
            "name": p.get("campaign_name", str(cid)),
            "true_roas_365d": p.get("true_roas_365d"),
            "profit": round(float((rows["value"] - rows["spend_report"]).sum()), 2),
            "budget_factor_last": float(rows["budget_factor"].iloc[-1]),
        }
    return out


def render_campaigns(results: dict[int, dict[str, Any]]) -> str:
    """Per seed and campaign: each policy's profit against `none` on the same campaign, and its
    budget factor on the loop's last day: where a policy made or lost money."""
    lines: list[str] = []
    for seed, by_policy in results.items():
        base = by_policy.get("none")
        policies = [p for p in by_policy if p != "none"]
        if base is None or not policies or "campaigns" not in base:
            continue
        lines += [
            "",
            f"seed {seed}, per campaign: profit against `none` (budget factor on the last day)",
            "",
            "| campaign | true ROAS (base) | " + " | ".join(policies) + " |",
            "|---|---|" + "---|" * len(policies),
        ]
        camps = base["campaigns"]
        order = sorted(camps, key=lambda c: -(camps[c]["true_roas_365d"] or 0.0))
        for cid in order:
            cells = []
            for policy in policies:
                mine = by_policy[policy].get("campaigns", {}).get(cid)
                if mine is None:
                    cells.append("-")
                    continue
                delta = mine["profit"] - camps[cid]["profit"]
                cells.append(f"{delta:+,.0f} ({mine['budget_factor_last']:.2f})")
            roas = camps[cid]["true_roas_365d"]
            shown = "-" if roas is None else f"{roas:.2f}"
            lines.append(f"| {camps[cid]['name']} | {shown} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _done(folder: Path, until: dt.date | None) -> dict[str, Any]:
    """done.json, or for a loop judged to `until`: its days and its per-day seconds so far."""
    if until is None:
        return json.loads((folder / "done.json").read_text())  # type: ignore[no-any-return]
    secs = [
        float(line.split(": ")[1].split("s,")[0])
        for line in (folder / "loop.log").read_text(errors="replace").splitlines()
        if line[:4] == "2026" and ": " in line and "s, " in line
        and line[:10] <= until.isoformat()
    ]  # fmt: skip
    warm = secs[1:] or secs
    return {
        "first_day": LOOP_START.isoformat(),
        "last_day": until.isoformat(),
        "seconds": round(sum(secs), 1),
        "seconds_per_day": round(sum(warm) / len(warm), 1) if warm else None,
    }


def _decisions(folder: Path, first: str, last: str) -> pd.DataFrame:
    """decisions.csv, or for a loop not done yet its decisions rebuilt from what it left: the
    warehouse's campaign actions (old, adperf), the bench's rule on its warehouse (naive), the
    truth (oracle); each as the loop made them, day by day."""
    path = folder / "decisions.csv"
    if path.exists():
        got = pd.read_csv(path, dtype={"campaign_id": str, "date": str})
        return got[(got["date"] >= first) & (got["date"] <= last)]
    from bench import decisions_loop as dl

    policy = folder.name
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(folder / "luigi.cfg")

    class _Rules:
        scale_roas = cfg.getfloat("rules", "scale_roas", fallback=1.3)
        pause_roas = cfg.getfloat("rules", "pause_roas", fallback=0.5)
        min_spend = cfg.getfloat("rules", "min_spend", fallback=100.0)
        min_installs = cfg.getint("rules", "min_installs", fallback=50)
        window_days = cfg.getint("rules", "window_days", fallback=14)
        target_roas = cfg.getfloat("rules", "target_roas", fallback=1.0)

    rows: list[dict[str, Any]] = []
    day = dt.date.fromisoformat(first)
    while day.isoformat() <= last:
        iso = day.isoformat()
        if policy in ("old", "adperf", "naive"):
            decided = dl._warehouse_actions(folder, iso)
            if policy == "naive":
                decided = dl._naive(folder, iso, decided, _Rules)
        elif policy == "oracle":
            decided = dl._oracle(folder / "sandbox", iso, _Rules)
        else:
            decided = {}
        rows.extend({"date": iso, "campaign_id": c, "action": a} for c, a in decided.items())
        day += dt.timedelta(days=1)
    return pd.DataFrame(rows, columns=["date", "campaign_id", "action"])


def pause_delays(
    loop: pd.DataFrame, decisions: pd.DataFrame, pause_roas: float, min_spend: float, last: str
) -> list[dict[str, Any]]:
    """Per campaign truly under pause_roas (on the day it reached min_spend in the loop): days
    from then to its first pause decision (None: never paused in the loop)."""
    out = []
    for cid, rows in loop.sort_values("date").groupby("campaign_id"):
        reached = rows[rows["spend_report"].cumsum() >= min_spend]
        if reached.empty:
            continue
        day, roas = str(reached["date"].iloc[0]), float(reached["true_roas_365d"].iloc[0])
        if roas >= pause_roas:
            continue
        paused = decisions[
            (decisions["campaign_id"] == cid)
            & (decisions["action"] == "pause")
            & (decisions["date"] >= day)
        ]
        when = None if paused.empty else str(paused["date"].min())
        days = (
            None
            if when is None
            else (dt.date.fromisoformat(when) - dt.date.fromisoformat(day)).days
        )
        out.append({"campaign_id": cid, "true_roas_365d": round(roas, 3), "reached": day,
                    "paused": when, "days": days})  # fmt: skip
    return out


def render(results: dict[int, dict[str, Any]], profile: str, days: int) -> str:
    lines = [
        f"closed-loop decisions, profile {profile}, {days} days "
        f"(profit = installs x true 365-day value - spend, USD)",
        "",
        "| seed | policy | profit | uplift captured | actions (scale/pause) | needed taken | "
        "wrong direction | scale backs (of true winners) | loser spend not paused | "
        "loser → pause days | s/day |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for seed, by_policy in results.items():
        for policy, m in by_policy.items():
            share = m.get("uplift_share")
            delays = [d["days"] for d in m["pause_delays"]]
            shown = ", ".join("never" if d is None else str(d) for d in delays) or "-"
            wrong = m["wrong_direction"]
            pct = f" ({wrong / m['actions']:.1%})" if m["actions"] else ""
            sec = m.get("seconds_per_day")
            lines.append(
                f"| {seed} | {policy} | {m['profit']:,.0f} | "
                f"{'-' if share is None else f'{share:.0%}'} | "
                f"{m['actions']} ({m['scales']}/{m['pauses']}) | "
                f"{m['needed_taken']} of {m['needed']} | {wrong}{pct} | "
                f"{m.get('scale_backs', 0)} ({m.get('scale_backs_of_winners', 0)}) | "
                f"{m['loser_spend']:,.0f} | {shown} | {'-' if sec is None else f'{sec:.1f}'} |"
            )
    return "\n".join(lines)


def chart(results: dict[int, dict[str, Any]], path: Path, profile: str) -> None:
    """Profit per policy and seed, as bars (matplotlib, if installed)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    seeds = list(results)
    policies = [p for p in POLICIES if any(p in results[s] for s in seeds)]
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / max(len(policies), 1)
    for k, policy in enumerate(policies):
        xs = [i + k * width for i in range(len(seeds))]
        ys = [results[s].get(policy, {}).get("profit", 0.0) for s in seeds]
        ax.bar(xs, ys, width, label=policy)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(seeds))], [f"seed {s}" for s in seeds])
    ax.set_ylabel("profit, USD (true 365-day value - spend)")
    ax.set_title(f"closed-loop policies, profile {profile}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
