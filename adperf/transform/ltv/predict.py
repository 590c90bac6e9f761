"""What a fitted model expects: value per customer over a horizon, purchases per payer and rate."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from lifetimes import BetaGeoFitter, GammaGammaFitter
from scipy.interpolate import CubicSpline
from scipy.special import hyp2f1

from adperf.transform.ltv.fit import LtvFitError, LtvModel


def _bgnbd(model: LtvModel) -> BetaGeoFitter:
    fitter = BetaGeoFitter()
    fitter.params_ = pd.Series(model.bgnbd, dtype="float64")[["r", "alpha", "a", "b"]]
    return fitter


def _gammagamma(model: LtvModel) -> GammaGammaFitter:
    if model.gammagamma is None:
        raise LtvFitError(
            "LTV model has no Gamma-Gamma parameters, so spend per purchase is unknown. "
            "Fix: fit the model on a payments history with repeat buyers"
        )
    fitter = GammaGammaFitter()
    fitter.params_ = pd.Series(model.gammagamma, dtype="float64")[["p", "q", "v"]]
    return fitter


def _discount_factor(horizon_days: int, discount_rate_annual: float) -> float:
    """One factor for the whole horizon, taken at its midpoint.

    BG/NBD gives expected purchases over the horizon, not their timing; assuming them spread
    evenly, discounting everything at mid-horizon is exact to first order in the rate and
    errs by well under 1% for rates below 30%/year over a year.
    """
    if discount_rate_annual == 0.0:
        return 1.0
    return float((1.0 + discount_rate_annual) ** (-(horizon_days / 2.0) / 365.0))


def predict_customer_value(
    model: LtvModel, rfm: pd.DataFrame, horizon_days: int, discount_rate_annual: float = 0.0
) -> pd.Series:
    """Expected revenue per user_pid (rfm's index) over `horizon_days`, in report-currency units.

    Expected purchases (BG/NBD) x expected spend per purchase (Gamma-Gamma; the population mean
    for users without repeat purchases), evaluated once per unique RFM pattern.
    """
    keys = ["frequency", "recency", "T", "monetary_value"]
    if rfm.empty:
        return pd.Series([], index=rfm.index, dtype="float64", name="expected_value")
    patterns = rfm[keys].drop_duplicates().reset_index(drop=True)
    freq = patterns["frequency"].to_numpy(dtype="float64")
    with warnings.catch_warnings():
        # hyp2f1 overflows for extreme patterns; lifetimes switches to an equivalent formula.
        warnings.simplefilter("ignore", RuntimeWarning)
        purchases = _bgnbd(model).conditional_expected_number_of_purchases_up_to_time(
            float(horizon_days),
            freq,
            patterns["recency"].to_numpy(dtype="float64"),
            patterns["T"].to_numpy(dtype="float64"),
        )
    spend = _gammagamma(model).conditional_expected_average_profit(
        freq, patterns["monetary_value"].to_numpy(dtype="float64")
    )
    patterns["expected_value"] = (
        np.asarray(purchases)
        * np.asarray(spend)
        * _discount_factor(horizon_days, discount_rate_annual)
    )
    mapped = rfm[keys].merge(patterns, on=keys, how="left")["expected_value"].to_numpy()
    return pd.Series(mapped, index=rfm.index, dtype="float64", name="expected_value")


# Segment purchase rates relative to the pooled BG/NBD's, as multipliers of E[lambda] = r/alpha.
RATE_GRID = np.exp(np.linspace(np.log(0.1), np.log(10.0), 93))


def _bgnbd_expected(
    t: np.ndarray | float,
    x: np.ndarray | float,
    t_x: np.ndarray | float,
    big_t: np.ndarray | float,
    model: LtvModel,
    rate: np.ndarray | float = 1.0,
) -> np.ndarray:
    """BG/NBD E[purchases in (T, T + t] | x, t_x, T] with alpha / rate, elementwise (broadcast).

    Equation (10) of Fader, Hardie & Lee (2005), "Counting your customers the easy way", as in
    lifetimes' conditional_expected_number_of_purchases_up_to_time, but with a per-row alpha:
    scaling alpha by 1 / rate scales the prior mean purchase rate r / alpha by `rate`.
    """
    r, a, b = (model.bgnbd[k] for k in ("r", "a", "b"))
    alpha = model.bgnbd["alpha"] / np.asarray(rate, dtype="float64")
    x, t_x, big_t, t = (np.asarray(v, dtype="float64") for v in (x, t_x, big_t, t))
    _a, _b, _c = r + x, b + x, a + b + x - 1
    z = t / (alpha + big_t + t)
    with np.errstate(all="ignore"):
        ln_hyp = np.log(hyp2f1(_a, _b, _c, z))
        # lifetimes' switch to Euler's transformation where the direct series overflows,
        # evaluated there only (hyp2f1 is elementwise: the same values, half its calls).
        over = np.isinf(ln_hyp)
        if over.any():
            a_, b_, c_, z_ = (np.broadcast_to(v, ln_hyp.shape)[over] for v in (_a, _b, _c, z))
            ln_hyp = np.array(ln_hyp, dtype="float64")  # a copy, also of a 0-d result
            ln_hyp[over] = np.log(hyp2f1(c_ - a_, c_ - b_, c_, z_)) + (c_ - a_ - b_) * np.log1p(-z_)
        second = 1 - np.exp(ln_hyp + (r + x) * np.log((alpha + big_t) / (alpha + t + big_t)))
        numerator = (a + b + x - 1) / (a - 1) * second
        denominator = 1 + (x > 0) * (a / (b + x - 1)) * ((alpha + big_t) / (alpha + t_x)) ** (r + x)
        out = numerator / denominator
    return np.asarray(np.nan_to_num(out, nan=0.0, posinf=0.0), dtype="float64")


def _new_payer_expected(days: np.ndarray, rate: np.ndarray, model: LtvModel) -> np.ndarray:
    """_bgnbd_expected(days, 0, 0, 0, model, rate) (broadcast), from one curve in days x rate.

    With x = t_x = T = 0, equation (10) depends on t and alpha / rate only through t x rate, so
    every (days, rate) pair lies on one curve F(s), s = days x rate. F is evaluated exactly at
    _CURVE_POINTS points spaced evenly in log s and read between them by a cubic spline of
    log F over log s (relative error < 1e-9 against the exact value): a few thousand hyp2f1
    calls instead of one per segment and day (hundreds of thousands at 1M customers).
    """
    s = np.asarray(days, dtype="float64") * np.asarray(rate, dtype="float64")
    out = np.zeros(s.shape)
    pos = s > 0
    if not pos.any():
        return out
    lo, hi = float(s[pos].min()), float(s[pos].max())
    if hi / lo < 1.0 + 1e-9:  # one point: exact
        out[pos] = _bgnbd_expected(lo, 0.0, 0.0, 0.0, model)
        return out
    knots = np.linspace(np.log(lo), np.log(hi), _CURVE_POINTS)
    exact = _bgnbd_expected(np.exp(knots), 0.0, 0.0, 0.0, model)
    if not np.all(exact > 0):  # degenerate parameters: evaluate exactly
        out[pos] = _bgnbd_expected(s[pos], 0.0, 0.0, 0.0, model)
        return out
    spline = CubicSpline(knots, np.log(exact))
    out[pos] = np.exp(spline(np.log(s[pos])))
    return out


_CURVE_POINTS = 4096


def _purchase_curves(model: LtvModel, grid: int) -> np.ndarray:
    """(len(RATE_GRID), grid + 1): expected repeat purchases of a new payer (0, 0, 0) within
    0..grid days, for each rate multiplier of RATE_GRID."""
    t = np.arange(grid + 1, dtype="float64")[None, :]
    return _new_payer_expected(t, RATE_GRID[:, None], model)
