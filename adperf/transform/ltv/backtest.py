"""Backtest of a model fitted `days` before the report day: per campaign, predicted vs. realized."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from adperf.schema import MICROS
from adperf.transform.ltv.fit import LtvModel
from adperf.transform.ltv.prepare import _day_of, _net_days, _prepare, _Prepared, _rfm_codes
from adperf.transform.ltv.priors import _fit_segments
from adperf.transform.ltv.value import _nonpayer_terms, _payer_terms
from adperf.vocabulary import UNATTRIBUTED

BACKTEST_DAYS = 90


def backtest(
    day: str,
    model: LtvModel,
    payments: pd.DataFrame,
    installs: pd.DataFrame,
    *,
    days: int = BACKTEST_DAYS,
    history_days: int = 365,
) -> tuple[float, float, int] | None:
    """(MAPE, bias, campaigns) of each campaign's revenue from day - days to day as predicted by
    `model` (fitted as of day - days) from what was known then, against what came."""
    return _backtest(_prepare(payments, installs), day, model, days, history_days)


def _backtest(
    prep: _Prepared, day: str, model: LtvModel, days: int, history_days: int
) -> tuple[float, float, int] | None:
    """(MAPE, bias, campaigns) of each campaign's revenue from day - days to day as predicted by
    `model` (fitted as of day - days) from what was known then, against what came.

    Users installed by day - days; MAPE over campaigns (organic included, 'unattributed' not)
    with revenue in the window; bias = predicted total / actual total - 1. None without them.
    """
    as_of_day = _day_of(day) - days
    grid = days + history_days + 1
    fit = _fit_segments(prep, as_of_day, model, history_days, grid, levels=("campaign",))
    users = fit.users
    if users.empty:
        return None
    seg, codes = fit.segments["campaign"], fit.codes["campaign"]
    payer = users["first_paid_day"].notna().to_numpy()
    pc = codes[payer]
    rfm = _rfm_codes(*_net_days(prep.pay, as_of_day - history_days + 1, as_of_day), as_of_day)
    own, prior_w = _payer_terms(model, rfm, users.index[payer], days, seg.rate[pc])
    predicted = np.zeros(len(users))
    predicted[payer] = (own + seg.spend[pc] * prior_w) * fit.net_share
    ages = np.clip(fit.as_of_day - users["install_day"].to_numpy(), 0, history_days)
    pairs = pd.DataFrame({"code": codes[~payer], "age": ages[~payer].astype(np.int64)})
    unique = pairs.drop_duplicates().reset_index(drop=True)
    uc = unique["code"].to_numpy()
    convert, repeats = _nonpayer_terms(seg, uc, unique["age"].to_numpy(), days, model)
    unique["value"] = convert * seg.first_units[uc] + seg.spend[uc] * repeats * fit.net_share
    predicted[~payer] = pairs.merge(unique, on=["code", "age"], how="left")["value"].to_numpy()
    l_user, _, l_net = _net_days(prep.pay, as_of_day + 1, as_of_day + days)
    after = np.bincount(l_user, weights=l_net / MICROS, minlength=prep.pay.ids.n_codes)
    came = after[users.index.to_numpy()]
    k = len(seg.keys)
    actual = np.bincount(codes, weights=came, minlength=k)
    pred = np.bincount(codes, weights=predicted, minlength=k)
    keep = (seg.keys["campaign_id"] != UNATTRIBUTED).to_numpy() & (actual > 0)
    if not keep.any():
        return None
    mape = float(np.mean(np.abs(pred[keep] - actual[keep]) / actual[keep]))
    bias = float(pred[keep].sum() / actual[keep].sum() - 1.0)
    return mape, bias, int(keep.sum())


BACKTEST_COLUMNS = ["backtest_mape", "backtest_bias", "backtest_campaigns", "backtest_model"]


def backtest_row(day: str, result: tuple[float, float, int] | None, source: str) -> dict[str, Any]:
    """One day's backtest: (MAPE, bias, campaigns) and where its model came from, or nulls."""
    return {
        "date": day,
        "backtest_mape": None if result is None else float(result[0]),
        "backtest_bias": None if result is None else float(result[1]),
        "backtest_campaigns": None if result is None else int(result[2]),
        "backtest_model": None if result is None else source,
    }


def with_backtest(model: dict[str, Any], backtest: dict[str, Any] | None) -> dict[str, Any]:
    """The `ltv_model` row `model` with the day's backtest (model_row's columns and params)."""
    out = dict(model)
    campaigns = None if backtest is None else backtest.get("backtest_campaigns")
    if backtest is None or campaigns is None or pd.isna(campaigns):
        return out
    params = json.loads(str(out["params"]))
    params["backtest_campaigns"] = int(campaigns)
    params["backtest_model"] = str(backtest["backtest_model"])
    out["params"] = json.dumps(params, sort_keys=True)
    out["backtest_mape"] = float(backtest["backtest_mape"])
    out["backtest_bias"] = float(backtest["backtest_bias"])
    return out
