"""`python -m bench.ltv_history`: how much payment history the LTV fit needs for its tail.

The model's 365-day value of a payer is mostly BG/NBD's extrapolation when the payments cover
only weeks. This bench measures that extrapolation alone, with no pipeline around it: for each
seed it draws an app of `--segments` campaigns whose payers follow the sandbox's own repeat
process (`adperf.sandbox.process.sample_repeat_times`, parameters drawn as the sandbox's
entities draw them), gives `--customers` payers first purchases spread evenly over the last
N days, keeps what a payments table would show (one purchase day per calendar day), fits
`fit_ltv` on that RFM as the pipeline does, and compares the fitted expected purchases of a new
payer by `--horizon` days with the app's true mean. Also with one segment (`--segments 1`): a
correctly specified BG/NBD.

    python -m bench.ltv_history --seeds 1,2,3,4,5 --history 55,75,105,180,365

Prints one row per history length: the fitted / true ratio per seed and their median; writes
var/bench/ltv_history.json. Not a test: a minute or two.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np
import pandas as pd

from adperf.sandbox.entities import _payer_truth
from adperf.sandbox.process import sample_repeat_times
from adperf.transform.ltv import fit_ltv
from adperf.transform.ltv.fit import LtvModel
from adperf.transform.ltv.predict import _bgnbd_expected


def _new_payer_purchases(bgnbd: dict[str, float], horizon: float) -> float:
    """BG/NBD's expected repeat purchases of a payer by `horizon` days after the first."""
    model = LtvModel(bgnbd, None, 0, 0, True, 0.0, 0.0)
    return float(_bgnbd_expected(horizon, 0.0, 0.0, 0.0, model))


def simulated_rfm(
    rng: np.random.Generator, params: pd.DataFrame, customers: int, days: int
) -> pd.DataFrame:
    """RFM (daily units, as the pipeline's) of `customers` payers of the segments in `params`
    (columns r, alpha, a, b) whose first purchases fall evenly over `days` days."""
    segment = rng.integers(0, len(params), customers)
    first = rng.uniform(0.0, float(days), customers)
    owner, times = sample_repeat_times(
        rng,
        first,
        np.full(customers, float(days)),
        *(params[k].to_numpy()[segment] for k in ("r", "alpha", "a", "b")),
    )
    first_day = np.floor(first)
    repeats = pd.DataFrame({"user": owner, "day": np.floor(times)}).drop_duplicates()
    repeats = repeats[repeats["day"] > first_day[repeats["user"].to_numpy()]]
    frequency = np.bincount(repeats["user"], minlength=customers)
    last = first_day.copy()
    latest = repeats.groupby("user")["day"].max()
    last[latest.index.to_numpy()] = latest.to_numpy()
    return pd.DataFrame(
        {
            "frequency": frequency,
            "recency": last - first_day,
            "T": float(days) - 1.0 - first_day,
            # Gamma-Gamma needs some spend; the bench reads BG/NBD only.
            "monetary_value": np.where(frequency > 0, 10.0, 0.0),
        }
    )


def run(
    seeds: list[int], history: list[int], segments: int, customers: int, horizon: float
) -> dict[str, dict[str, float]]:
    """{history days: {seed: fitted / true expected purchases by the horizon}}."""
    out: dict[str, dict[str, float]] = {str(d): {} for d in history}
    for seed in seeds:
        rng = np.random.default_rng(seed)
        draws = [_payer_truth(rng, 0.05) for _ in range(segments)]
        params = pd.DataFrame([{k: getattr(t, k) for k in ("r", "alpha", "a", "b")} for t in draws])
        true = float(
            np.mean([_new_payer_purchases(row.to_dict(), horizon) for _, row in params.iterrows()])
        )
        for days in history:
            model = fit_ltv(simulated_rfm(rng, params, customers, days))
            out[str(days)][str(seed)] = _new_payer_purchases(model.bgnbd, horizon) / true
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="1,2,3,4,5")
    parser.add_argument("--history", default="55,75,105,180,365")
    parser.add_argument("--segments", type=int, default=13)
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--horizon", type=float, default=365.0)
    parser.add_argument("--out", type=Path, default=Path("var/bench/ltv_history.json"))
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    history = [int(d) for d in args.history.split(",")]
    result = run(seeds, history, args.segments, args.customers, args.horizon)
    print(
        f"fitted / true expected repeat purchases of a new payer by {args.horizon:g} days "
        f"({args.segments} segments, {args.customers} payers)"
    )
    print("| history days | " + " | ".join(f"seed {s}" for s in seeds) + " | median |")
    print("|---" * (len(seeds) + 2) + "|")
    for days, by_seed in result.items():
        cells = " | ".join(f"{by_seed[str(s)]:.2f}" for s in seeds)
        print(f"| {days} | {cells} | {statistics.median(by_seed.values()):.2f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, sort_keys=True), encoding="utf-8")


if __name__ == "__main__":
    main()
