"""Campaign and adset parameters at one as-of day, from older cohorts, shrunk toward the parent.

Campaigns shrink toward the pooled estimate, adsets toward their campaign (empirical Bayes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from adperf.schema import MICROS
from adperf.transform.ltv.fit import LtvModel
from adperf.transform.ltv.predict import RATE_GRID, _purchase_curves
from adperf.transform.ltv.prepare import (
    _LEVEL_KEYS,
    LEVELS,
    _net_days,
    _Prepared,
    _user_table,
)

# Hazard prior strength when the segments look alike (no between-segment variance measured):
# effectively the pooled curve.
_FULL_POOLING = 1e9


@dataclass
class _Segments:
    """Per-segment parameters of one level (arrays aligned with `keys` rows), shrunk."""

    keys: pd.DataFrame
    hazard: np.ndarray  # (K, G + 1): P(first purchase at age t | none before), t >= 1
    conv_rel_sd: np.ndarray  # relative sd of the conversion probability
    first_units: np.ndarray  # expected revenue of a first purchase day
    first_sd: np.ndarray
    rate: np.ndarray  # purchase rate relative to the pooled BG/NBD's (alpha / rate)
    rate_sd: np.ndarray
    spend: np.ndarray  # mean revenue of a repeat purchase day (Gamma-Gamma's prior mean)
    spend_sd: np.ndarray

    def take(self, rows: np.ndarray, keys: pd.DataFrame) -> _Segments:
        """The rows `rows` of every array, as the prior of the segments `keys`."""
        return _Segments(
            keys=keys,
            hazard=self.hazard[rows],
            conv_rel_sd=self.conv_rel_sd[rows],
            first_units=self.first_units[rows],
            first_sd=self.first_sd[rows],
            rate=self.rate[rows],
            rate_sd=self.rate_sd[rows],
            spend=self.spend[rows],
            spend_sd=self.spend_sd[rows],
        )


def _shrink(
    raw: np.ndarray, var: np.ndarray, prior: np.ndarray, prior_sd: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Empirical-Bayes (normal-normal) estimates and their sd: raw shrunk toward prior.

    The between-segment variance tau^2 is DerSimonian and Laird's moment estimate (inverse-
    variance weighted, so many tiny segments cannot inflate it); each segment keeps the share
    tau^2 / (tau^2 + its sampling variance) of its own deviation, so thin evidence stays near
    the prior and a segment without evidence is the prior, uncertain by tau.
    """
    has = np.isfinite(raw) & np.isfinite(var) & (var > 0)
    own_var = np.where(has, var, 0.0)
    dev = np.where(has, raw - prior, 0.0)
    tau2 = dersimonian_laird(dev[has], own_var[has])
    weight = np.where(has, tau2 / np.maximum(tau2 + own_var, 1e-300), 0.0)
    post = prior + weight * dev
    post_var = np.where(has, weight * own_var, tau2) + (1 - weight) ** 2 * prior_sd**2
    return post, np.sqrt(post_var)


def dersimonian_laird(dev: np.ndarray, var: np.ndarray) -> float:
    """Between-segment variance of true values from deviations and their sampling variances."""
    if len(dev) < 2:
        return 0.0
    w = 1.0 / var
    q = float(np.sum(w * dev**2))
    scale = float(w.sum() - np.sum(w**2) / w.sum())
    return max((q - (len(dev) - 1)) / scale, 0.0) if scale > 0 else 0.0


def _ratio_estimate(
    codes: np.ndarray, observed: np.ndarray, expected: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per segment: sum(observed) / sum(expected) and its quasi-Poisson sampling variance.

    The dispersion is pooled over all segments, so a segment with a few silent members does not
    claim certainty (a per-segment variance of zeros would be zero).
    """
    o_sum = np.bincount(codes, weights=observed, minlength=k)
    e_sum = np.bincount(codes, weights=expected, minlength=k)
    total = float(expected.sum())
    if total <= 0:
        return np.full(k, np.nan), np.full(k, np.nan)
    pooled = float(observed.sum()) / total
    dispersion = float(np.sum((observed - pooled * expected) ** 2)) / total
    with np.errstate(invalid="ignore", divide="ignore"):
        raw = np.where(e_sum > 0, o_sum / e_sum, np.nan)
        var = np.where(e_sum > 0, dispersion / e_sum, np.nan)
    return raw, var


def _risk_counts(
    old: pd.DataFrame, codes: np.ndarray, k: int, as_of_day: int, grid: int
) -> tuple[np.ndarray, np.ndarray]:
    """(at risk, first purchases) per segment and age 0..grid, Kaplan-Meier style."""
    observed = (as_of_day - old["install_day"].to_numpy()).astype(np.int64)
    age_paid = old["first_paid_day"].to_numpy() - old["install_day"].to_numpy()
    # At risk at age t >= 1: observed at t and unpaid before t, i.e. min(observed, paid age) >= t;
    # counted by a reverse cumulative sum over ages, not a users x ages matrix. An age-0 payer is
    # never at risk: a cohort's non-payers are exactly those unpaid at age 0.
    last = np.minimum(np.minimum(observed, np.where(np.isnan(age_paid), np.inf, age_paid)), grid)
    counts = np.bincount(codes * (grid + 1) + last.astype(np.int64), minlength=k * (grid + 1))
    at_risk = np.cumsum(counts.reshape(k, grid + 1)[:, ::-1], axis=1)[:, ::-1].copy()
    at_risk[:, 0] = 0
    later = ~np.isnan(age_paid) & (age_paid >= 1) & (age_paid <= grid)
    events = np.bincount(
        codes[later] * (grid + 1) + age_paid[later].astype(np.int64), minlength=k * (grid + 1)
    ).reshape(k, grid + 1)
    return at_risk, events


def _rate_estimate(
    codes: np.ndarray, span: np.ndarray, repeats: np.ndarray, k: int, curves: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per segment: the RATE_GRID multiplier matching observed to expected repeat purchases, and
    its sampling variance (quasi-Poisson, pooled dispersion, delta method)."""
    grid = curves.shape[1] - 1
    hist = np.bincount(codes * (grid + 1) + span, minlength=k * (grid + 1)).reshape(k, grid + 1)
    expected = hist @ curves.T  # (k, rates): increasing in the rate
    observed = np.bincount(codes, weights=repeats, minlength=k)
    one = int(np.argmin(np.abs(RATE_GRID - 1.0)))
    e_pool = curves[one][span]
    total = float(e_pool.sum())
    raw, var = np.full(k, np.nan), np.full(k, np.nan)
    if total <= 0:
        return raw, var
    dispersion = float(np.sum((repeats - repeats.sum() / total * e_pool) ** 2)) / total
    for i in np.flatnonzero(expected[:, -1] > 0):
        raw[i] = float(np.interp(observed[i], expected[i], RATE_GRID))
        slope = float(np.interp(raw[i], RATE_GRID, np.gradient(expected[i], RATE_GRID)))
        at = float(np.interp(raw[i], RATE_GRID, expected[i]))
        var[i] = dispersion * max(at, observed[i], 1.0) / max(slope, 1e-12) ** 2
    return raw, var


def _estimate_segments(
    old: pd.DataFrame,
    codes: np.ndarray,
    keys: pd.DataFrame,
    as_of_day: int,
    curves: np.ndarray,
    prior: _Segments,
) -> _Segments:
    """Per-segment conversion hazard, first-day value, repeat frequency and spend, shrunk.

    `old` are users installed before as_of and `codes` their segment (row of `keys`); `prior`
    holds each segment's prior (the pooled or the parent estimate), row-aligned with `keys`.
    `curves` are _purchase_curves: a new payer's expected repeat purchases by rate and days.
    """
    k, grid = len(keys), prior.hazard.shape[1] - 1
    at_risk, events = _risk_counts(old, codes, k, as_of_day, grid)
    # Conversion: beta-binomial shrinkage of each age's hazard toward the prior's, with a prior
    # worth kappa users; kappa from the spread of the segments' conversion beyond binomial noise.
    seen = at_risk > 0
    raw_h = np.divide(events, at_risk, out=np.zeros(at_risk.shape), where=seen)
    p_raw = 1.0 - np.prod(1.0 - raw_h, axis=1)
    p_prior = 1.0 - np.prod(np.where(seen, 1.0 - prior.hazard, 1.0), axis=1)
    n1 = at_risk[:, 1].astype("float64")
    has = n1 > 0
    kappa = _FULL_POOLING
    has &= (p_prior > 0) & (p_prior < 1)
    if has.sum() >= 2:
        binomial = p_prior[has] * (1 - p_prior[has]) / n1[has]
        tau2 = dersimonian_laird(p_raw[has] - p_prior[has], binomial)
        p_bar = float(np.average(p_prior[has], weights=n1[has]))
        if tau2 > 0:
            kappa = max(p_bar * (1 - p_bar) / tau2 - 1.0, 1.0)
    hazard = (events + kappa * prior.hazard) / (at_risk + kappa)
    hazard[:, 0] = 0.0
    p_post = 1.0 - np.prod(1.0 - hazard, axis=1)
    own = np.divide(p_post * (1 - p_post) / (n1 + kappa + 1.0), p_post**2, out=np.zeros(k),
                    where=p_post > 0)  # fmt: skip
    conv_rel_sd = np.sqrt(own + (prior.conv_rel_sd * kappa / (n1 + kappa)) ** 2)

    payer = ~np.isnan(old["first_paid_day"].to_numpy())
    pc = codes[payer]
    # First purchase day's revenue: a segment mean with its sampling variance (pooled spread).
    first = old["first_day_micros"].to_numpy()[payer] / MICROS
    n_pay = np.bincount(pc, minlength=k).astype("float64")
    with np.errstate(invalid="ignore", divide="ignore"):
        f_raw = np.bincount(pc, weights=first, minlength=k) / n_pay
        f_var = (float(np.var(first)) if len(first) > 1 else np.nan) / n_pay
    first_units, first_sd = _shrink(f_raw, f_var, prior.first_units, prior.first_sd)
    # Purchase rate: the multiplier of the pooled BG/NBD's mean rate under which the segment's
    # payers would be expected to have made the repeat purchase days they made (each over its
    # own span since the first purchase), with a quasi-Poisson variance by the delta method.
    span = np.clip(as_of_day - old["first_paid_day"].to_numpy()[payer], 0, grid).astype(np.int64)
    repeat_days = old["repeat_days"].to_numpy()[payer].astype("float64")
    rate_raw, rate_var = _rate_estimate(pc, span, repeat_days, k, curves)
    rate, rate_sd = _shrink(rate_raw, rate_var, prior.rate, prior.rate_sd)
    spend_units = old["repeat_micros"].to_numpy()[payer] / MICROS
    s_raw, s_var = _ratio_estimate(pc, spend_units, repeat_days, k)
    spend, spend_sd = _shrink(s_raw, s_var, prior.spend, prior.spend_sd)
    return _Segments(
        keys=keys,
        hazard=hazard,
        conv_rel_sd=conv_rel_sd,
        first_units=np.maximum(first_units, 0.0),
        first_sd=first_sd,
        rate=np.clip(rate, RATE_GRID[0], RATE_GRID[-1]),
        rate_sd=rate_sd,
        spend=np.maximum(spend, 0.0),
        spend_sd=spend_sd,
    )


@dataclass
class _Fitted:
    """What the valuation needs at one as_of day: users, segments per level, pooled curves."""

    as_of_day: int
    users: pd.DataFrame
    codes: dict[str, np.ndarray]  # level -> segment code per user
    segments: dict[str, _Segments]
    curves: np.ndarray  # _purchase_curves
    net_share: float  # net revenue / purchase-day revenue: refunds still to come


def _fit_segments(
    prep: _Prepared,
    as_of_day: int,
    model: LtvModel,
    history_days: int,
    grid: int,
    levels: tuple[str, ...] = LEVELS,
) -> _Fitted:
    """Users and the shrunk campaign (toward pooled) and adset (toward campaign) parameters.

    `levels` is a prefix of LEVELS: each level is shrunk toward the one before, so the
    campaigns come out the same without the adsets (the backtest needs campaigns only).
    """
    net = _net_days(prep.pay, as_of_day - history_days + 1, as_of_day)
    users = _user_table(prep, as_of_day, net)
    curves = _purchase_curves(model, grid)
    old = users[(users["install_day"] < as_of_day).to_numpy()]
    parent = _pooled(old, as_of_day, grid, model)
    parent_codes: np.ndarray = np.zeros(len(users), dtype=np.int64)
    codes: dict[str, np.ndarray] = {}
    segments: dict[str, _Segments] = {}
    old_mask = (users["install_day"] < as_of_day).to_numpy()
    adset = users["adset"].to_numpy()
    # The campaign of each adset row: prep.adsets is sorted, so campaigns come out sorted too.
    camp_cols = _LEVEL_KEYS["campaign"]
    campaign_of = prep.adsets.groupby(camp_cols, sort=True).ngroup().to_numpy(dtype=np.int64)
    camp_first = np.unique(campaign_of, return_index=True)[1]
    level_keys = {
        "campaign": (campaign_of[adset], prep.adsets.iloc[camp_first][camp_cols]),
        "adset": (adset, prep.adsets),
    }
    for level in levels:
        global_code, all_keys = level_keys[level]
        # np.unique(global_code, return_inverse=True) by counting: the codes are dense.
        present = np.flatnonzero(np.bincount(global_code, minlength=len(all_keys)))
        dense = np.zeros(len(all_keys), dtype=np.int64)
        dense[present] = np.arange(len(present))
        code = dense[global_code]
        keys = all_keys.iloc[present].reset_index(drop=True)
        up: np.ndarray = np.zeros(len(keys), dtype=np.int64)
        up[code] = parent_codes  # each segment's parent (all its users share it)
        seg = _estimate_segments(
            old, code[old_mask], keys, as_of_day, curves, parent.take(up, keys)
        )
        codes[level], segments[level] = code, seg
        parent, parent_codes = seg, code
    positive = float(net[2][net[2] > 0].sum())
    share = float(net[2].sum()) / positive if positive > 0 else 1.0
    return _Fitted(as_of_day, users, codes, segments, curves, min(max(share, 0.0), 1.0))


def _pooled(old: pd.DataFrame, as_of_day: int, grid: int, model: LtvModel) -> _Segments:
    """The pooled segment: raw estimates over all older users, Gamma-Gamma's mean spend."""
    at_risk, events = _risk_counts(old, np.zeros(len(old), dtype=np.int64), 1, as_of_day, grid)
    hazard = np.divide(events, at_risk, out=np.zeros(at_risk.shape), where=at_risk > 0)
    payer = ~np.isnan(old["first_paid_day"].to_numpy())
    first = old["first_day_micros"].to_numpy()[payer] / MICROS
    gg = model.gammagamma or {"p": 1.0, "q": 2.0, "v": 0.0}
    zero = np.zeros(1)
    return _Segments(
        keys=pd.DataFrame(index=[0]),
        hazard=hazard,
        conv_rel_sd=zero,
        first_units=np.array([float(first.mean()) if len(first) else 0.0]),
        first_sd=zero,
        rate=np.ones(1),  # the pooled BG/NBD is the pooled purchase rate
        rate_sd=zero,
        spend=np.array([gg["p"] * gg["v"] / (gg["q"] - 1.0)]),
        spend_sd=zero,
    )
