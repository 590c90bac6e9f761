"""The install cohorts of a trailing window, valued as of the report day and pooled per segment."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from adperf.schema import MICROS, PLTV_DRAWS, PLTV_WINDOW
from adperf.transform.ltv.fit import model_from_row
from adperf.transform.ltv.intervals import BOOTSTRAP_REPLICATES, INTERVAL
from adperf.transform.ltv.prepare import (
    _LEVEL_KEYS,
    LEVELS,
    _day_of,
    _net_days,
    _prepare,
    _rfm_codes,
)
from adperf.transform.ltv.priors import _fit_segments, _Fitted
from adperf.transform.ltv.value import _cohort_frame, _cohort_values

WINDOW_COLUMNS: list[str] = PLTV_WINDOW.columns  # declared in adperf.schema
DRAW_COLUMNS: list[str] = PLTV_DRAWS.columns


def build_pltv_window(
    day: str,
    model: dict[str, Any],
    payments: pd.DataFrame,
    installs: pd.DataFrame,
    *,
    window_days: int,
    history_days: int = 365,
    horizon_days: int = 365,
    discount_rate_annual: float = 0.0,
    replicates: int = BOOTSTRAP_REPLICATES,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The install cohorts of the `window_days` days to `day`, valued as of `day` and pooled per
    campaign and adset: (one row each with its 90% interval, its bootstrap draws).

    Each cohort is valued as build_cohort_pltv values it at its age: an old cohort mostly by
    the revenue it has realized, a young one mostly by its segment's shrunk parameters. The
    draws add the cohorts' user bootstraps with one draw of the segment parameters shared by
    every cohort of the window (they are the same parameters), so a window of young cohorts
    stays as uncertain as its campaign's parameters. `model` is the day's `ltv_model` row.
    """
    found = model_from_row(model)
    if found is None or window_days < 1:
        return _empty_window(), _empty_draws()
    prep = _prepare(payments, installs)
    as_of_day = _day_of(day)
    in_window = (prep.day > as_of_day - window_days) & (prep.day <= as_of_day)
    if not in_window.any():
        return _empty_window(), _empty_draws()
    fitted = found[1]
    rfm = _rfm_codes(*_net_days(prep.pay, as_of_day - history_days + 1, as_of_day), as_of_day)
    fit = _fit_segments(prep, as_of_day, fitted, history_days, grid=horizon_days + history_days + 1)
    rng = np.random.default_rng([seed, as_of_day, window_days])
    shared = {
        level: rng.standard_normal((4, replicates, len(fit.segments[level].keys)))
        for level in LEVELS
    }
    pooled: dict[str, dict[str, np.ndarray]] = {}
    # The window's installs first: each cohort's rows are then taken from them, not from every
    # install of the history (the same rows, in the same order, with the same index).
    window_installs, window_day = prep.installs[in_window], prep.day[in_window]
    for cohort_day in range(as_of_day - window_days + 1, as_of_day + 1):
        values = _cohort_values(
            fit,
            fitted,
            rfm,
            window_installs[window_day == cohort_day],
            cohort_day,
            horizon_days=horizon_days,
            discount_rate_annual=discount_rate_annual,
            replicates=replicates,
            seed=seed,
            parameter_draws=shared,
        )
        for level, v in (values or {}).items():
            scaled = {
                "cohorts": (v.users > 0).astype("float64"),
                "installs": v.installs.astype("float64"),
                "users": v.users,
                "payers": v.payers,
                "realized": v.realized,
                "point": v.point * v.scale,
                "draws": (v.point if v.draws is None else v.draws) * v.scale,
            }
            acc = pooled.setdefault(level, {n: np.zeros_like(a) for n, a in scaled.items()})
            for name, arr in scaled.items():
                acc[name] = acc[name] + arr
    return _window_frames(day, window_days, fit, pooled, replicates)


def _window_frames(
    day: str,
    window_days: int,
    fit: _Fitted,
    pooled: dict[str, dict[str, np.ndarray]],
    replicates: int,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """build_pltv_window's two frames from the pooled sums per level."""
    windows, draws = [], []
    for level, acc in pooled.items():
        keys = fit.segments[level].keys[_LEVEL_KEYS[level]]
        low, high = acc["point"], acc["point"]
        if replicates > 0:
            low, high = np.quantile(acc["draws"], INTERVAL, axis=0)
        frame = _cohort_frame(
            day,
            level,
            keys,
            {
                "window_days": np.full(len(keys), window_days, dtype="int64"),
                "cohorts": acc["cohorts"].astype("int64"),
                "installs": acc["installs"].astype("int64"),
                "users": acc["users"].astype("int64"),
                "payers": acc["payers"].astype("int64"),
                "realized_micros": np.round(acc["realized"] * MICROS).astype("int64"),
                "pltv_micros": np.round(acc["point"] * MICROS).astype("int64"),
                "pltv_low_micros": np.round(low * MICROS).astype("int64"),
                "pltv_high_micros": np.round(high * MICROS).astype("int64"),
            },
        )
        has = acc["users"] > 0
        windows.append(frame[has])
        if replicates > 0:
            rows = frame.loc[has, DRAW_COLUMNS[:5]]
            long = rows.loc[rows.index.repeat(replicates)].reset_index(drop=True)
            long["draw"] = np.tile(np.arange(replicates, dtype="int64"), int(has.sum()))
            long["pltv_micros"] = np.round(acc["draws"][:, has].T.ravel() * MICROS).astype("int64")
            draws.append(long)
    window = pd.concat(windows or [_empty_window()], ignore_index=True)
    drawn = pd.concat(draws or [_empty_draws()], ignore_index=True)
    return window[WINDOW_COLUMNS], drawn[DRAW_COLUMNS]


def _empty_window() -> pd.DataFrame:
    out = pd.DataFrame({c: pd.Series(dtype="int64") for c in WINDOW_COLUMNS})
    for c in ("date", "level", "platform", "campaign_id", "adset_id"):
        out[c] = out[c].astype("str")
    return out


def _empty_draws() -> pd.DataFrame:
    out = pd.DataFrame({c: pd.Series(dtype="int64") for c in DRAW_COLUMNS})
    for c in ("date", "level", "platform", "campaign_id", "adset_id"):
        out[c] = out[c].astype("str")
    return out
