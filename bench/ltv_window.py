"""`python -m bench.ltv_window`: each campaign's pooled window pROAS against the world's truth.

The decision rule acts on each campaign's pooled window (`pltv_window`: the install cohorts of
the last `[rules] window_days` days, valued as of the report day). This bench takes a closed
loop's folder (`python -m bench.decisions`), and for each day asked:

- values the window again with the code on PYTHONPATH, on the loop's own lake (its payments,
  installs and that day's `ltv_model` row), so two versions of the LTV code compare on the same
  data;
- compares each campaign's pROAS (pLTV / window spend, spend from the world's truth) with its
  true window ROAS: the truth's installs x true 365-day value per install over the same days
  and spend (truth/campaign_value_daily.csv), for campaigns with at least `--min-spend` USD
  in the window.

    python -m bench.ltv_window --loop var/bench/base7/loop-small/seed7/adperf \\
        --days 2026-09-01,2026-09-15,2026-09-30

Prints per day the mean and sd over campaigns of log(pROAS / true ROAS), and with `--verbose`
every campaign's. Not a test: a few seconds a day.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

WINDOW_DAYS = 14


def true_window(truth: pd.DataFrame, day: str, window_days: int) -> pd.DataFrame:
    """Per campaign: true value and spend of the installs of the `window_days` days to `day`."""
    end = dt.date.fromisoformat(day)
    first = (end - dt.timedelta(days=window_days - 1)).isoformat()
    rows = truth[(truth["date"] >= first) & (truth["date"] <= day)]
    value = rows["installs"] * rows["value_per_install_365d_usd"]
    out = (
        rows.assign(value=value)
        .groupby("campaign_id")[["value", "spend_report"]]
        .sum()
        .rename(columns={"spend_report": "spend"})
    )
    return out


def compare(
    window: pd.DataFrame, true: pd.DataFrame, names: dict[str, str], min_spend: float
) -> pd.DataFrame:
    """Per campaign with `min_spend` of window spend: true ROAS, pROAS and their ratio."""
    camp = window[window["level"] == "campaign"].set_index("campaign_id")
    keep = true[(true["spend"] >= min_spend) & true.index.isin(camp.index)]
    pltv = camp.loc[keep.index, "pltv_micros"].astype("float64") / 1e6
    out = pd.DataFrame(
        {
            "campaign": [names.get(str(c), str(c)) for c in keep.index],
            "true_roas": keep["value"] / keep["spend"],
            "proas": pltv.to_numpy() / keep["spend"].to_numpy(),
        },
        index=keep.index,
    )
    out["ratio"] = out["proas"] / out["true_roas"]
    return out.sort_values("true_roas")


def summary(table: pd.DataFrame) -> dict[str, float]:
    """Mean and sd over campaigns of log(pROAS / true ROAS)."""
    logs = np.log(table["ratio"][table["ratio"] > 0].to_numpy())
    return {
        "campaigns": float(len(logs)),
        "mean_log_ratio": float(logs.mean()) if len(logs) else float("nan"),
        "sd_log_ratio": float(logs.std(ddof=1)) if len(logs) > 1 else float("nan"),
    }


def _window_again(day: str) -> pd.DataFrame:
    """pltv_window of `day` computed again on the loop's lake with the code on PYTHONPATH."""
    from adperf import lake
    from adperf.transform.ltv import build_pltv_window
    from tasks import config
    from tasks.transform import InstallHistory, PaymentHistory

    date = dt.date.fromisoformat(day)
    payments, installs = PaymentHistory(date=date).read(), InstallHistory(date=date).read()
    row = lake.read_partition(config.data_root(), "ltv_model", "date", day)
    window, _ = build_pltv_window(
        day, row.iloc[0].to_dict(), payments, installs, window_days=WINDOW_DAYS
    )
    return window


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ltv_window", description=__doc__)
    parser.add_argument("--loop", type=Path, required=True, help="one policy's loop folder")
    parser.add_argument("--days", required=True, help="comma-separated report days")
    parser.add_argument("--min-spend", type=float, default=100.0, help="USD in the window")
    parser.add_argument("--verbose", action="store_true", help="every campaign's numbers")
    args = parser.parse_args(argv)
    loop = args.loop.resolve()
    # The loop's own configuration: its lake, its warehouse, its sandbox.
    os.environ["LUIGI_CONFIG_PATH"] = str(loop / "luigi.cfg")
    truth = pd.read_csv(
        loop / "sandbox" / "truth" / "campaign_value_daily.csv",
        dtype={"campaign_id": str, "date": str},
    )
    params = json.loads((loop / "sandbox" / "truth" / "params.json").read_text())
    names = {c: str(p.get("campaign_name", c)) for c, p in params.items()}
    results: dict[str, Any] = {}
    for day in args.days.split(","):
        table = compare(
            _window_again(day), true_window(truth, day, WINDOW_DAYS), names, args.min_spend
        )
        results[day] = {**summary(table), "campaigns_table": table.to_dict("records")}
        s = results[day]
        print(
            f"{day}: {s['campaigns']:.0f} campaigns, log(pROAS / true ROAS) mean "
            f"{s['mean_log_ratio']:+.3f}, sd {s['sd_log_ratio']:.3f}"
        )
        if args.verbose:
            print(table.round(2).to_string(index=False))
    out = loop / "ltv_window.json"
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
