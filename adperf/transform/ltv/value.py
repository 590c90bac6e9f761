"""Predicted value (pLTV) of install cohorts per campaign and adset, in micros, with an interval."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd

from adperf.schema import MICROS, PLTV
from adperf.transform.ltv.fit import LtvModel
from adperf.transform.ltv.intervals import BOOTSTRAP_REPLICATES, INTERVAL, _bootstrap_draws
from adperf.transform.ltv.predict import _bgnbd_expected, _discount_factor, _new_payer_expected
from adperf.transform.ltv.prepare import (
    _LEVEL_KEYS,
    LEVELS,
    _day_of,
    _net_days,
    _prepare,
    _Prepared,
    _rfm_codes,
    _segment_ids,
)
from adperf.transform.ltv.priors import _fit_segments, _Fitted, _Segments

COHORT_PLTV_COLUMNS: list[str] = PLTV.columns  # declared in adperf.schema


def _nonpayer_terms(
    seg: _Segments, codes: np.ndarray, ages: np.ndarray, horizon: int, model: LtvModel
) -> tuple[np.ndarray, np.ndarray]:
    """Per (segment, age): P(first purchase within `horizon` days | unpaid through age), and the
    expected repeat purchases (the segment's rate) that follow it within the horizon.
    """
    if horizon < 1 or len(codes) == 0:
        return np.zeros(len(codes)), np.zeros(len(codes))
    survival = np.cumprod(1.0 - seg.hazard, axis=1)  # hazard[:, 0] == 0: survival[:, 0] == 1
    s_age = survival[codes, ages]
    safe = np.where(s_age > 0, s_age, 1.0)
    convert = np.where(s_age > 0, 1.0 - survival[codes, ages + horizon] / safe, 0.0)
    # A first purchase at age + j leaves horizon - j days of repeat purchases.
    days_left = np.arange(horizon + 1, dtype="float64")[None, :]
    curves = _new_payer_expected(days_left, seg.rate[:, None], model)
    steps = np.arange(1, horizon + 1)
    repeats = np.zeros(len(codes))
    # In blocks of rows: the (rows x horizon) temporaries stay in the CPU caches (the
    # backtest asks for every (campaign, age) pair: ~10^5 rows x 90 days).
    block = max(1, (1 << 16) // horizon)
    for lo in range(0, len(codes), block):
        part = slice(lo, lo + block)
        rows = codes[part][:, None]
        t = ages[part][:, None] + steps[None, :]
        density = (survival[rows, t - 1] - survival[rows, t]) / safe[part][:, None]
        left = curves[rows, horizon - steps[None, :]]
        repeats[part] = np.where(s_age[part] > 0, (density * left).sum(axis=1), 0.0)
    return convert, repeats


def _rfm_rows(rfm: pd.DataFrame, codes: np.ndarray) -> tuple[np.ndarray, ...]:
    """frequency, recency, T, monetary_value (float64) of the user `codes` in rfm (index: user
    code), 0 for a code not in it: rfm.reindex(codes).fillna(0), by binary search when rfm's
    index is sorted (as _rfm_codes makes it) instead of a hash table of a million codes."""
    cols = ["frequency", "recency", "T", "monetary_value"]
    index = rfm.index.to_numpy()
    if not (len(index) and index.dtype.kind == "i" and np.all(index[1:] > index[:-1])):
        rows = rfm.reindex(codes)[cols].fillna(0.0)
        return tuple(rows[c].to_numpy(dtype="float64") for c in cols)
    at = np.minimum(np.searchsorted(index, codes), len(index) - 1)
    found = index[at] == codes
    return tuple(np.where(found, rfm[c].to_numpy(dtype="float64")[at], 0.0) for c in cols)


def _payer_terms(
    model: LtvModel, rfm: pd.DataFrame, ids: pd.Index, horizon: int, rate: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per payer: (expected purchases x Gamma-Gamma's weight on the payer's own mean spend x
    that mean, expected purchases x the weight left for the segment's mean spend).

    BG/NBD purchases on the payer's own history with the segment's rate as prior; Gamma-Gamma's
    conditional mean spend is w * own mean + (1 - w) * prior mean with w = p x / (p x + q - 1),
    the prior mean being the segment's: value = first term + segment spend x second term.
    """
    n = len(ids)
    if n == 0 or horizon < 1:
        return np.zeros(n), np.zeros(n)
    x, rec, big_t, money = _rfm_rows(rfm, ids.to_numpy())
    # Once per unique (frequency, recency, T, rate): far fewer rows than payers. Integer day
    # counts pack into one int64 key (np.unique over a float matrix is many times slower).
    rate_code = np.unique(rate, return_inverse=True)[1].ravel().astype(np.int64)
    whole = all(np.array_equal(v, np.round(v)) and v.max(initial=0) < 4096 for v in (x, rec, big_t))
    if whole:
        key = (x.astype(np.int64) * 4096 + rec.astype(np.int64)) * 4096 + big_t.astype(np.int64)
        # A hash table, not np.unique's sort: each pattern's value is computed elementwise, so
        # the order of the patterns does not matter.
        back = pd.factorize(key * (rate_code.max(initial=0) + 1) + rate_code)[0]
        first = np.zeros(back.max(initial=-1) + 1, dtype=np.int64)
        first[back] = np.arange(len(back))  # any payer of a pattern: they all share it
    else:
        pattern = np.column_stack([x, rec, big_t, rate])
        _, first, back = np.unique(pattern, axis=0, return_index=True, return_inverse=True)
    purchases = _bgnbd_expected(
        float(horizon), x[first], rec[first], big_t[first], model, rate[first]
    )[np.ravel(back)]
    gg = model.gammagamma or {"p": 1.0, "q": 2.0}
    weight = gg["p"] * x / (gg["p"] * x + gg["q"] - 1.0)
    own = purchases * weight * money
    return own, purchases * (1.0 - weight)


def _cohort_frame(
    cohort_date: str, level: str, keys: pd.DataFrame, values: dict[str, np.ndarray]
) -> pd.DataFrame:
    out = keys.copy()
    if level == "campaign":
        out["adset_id"] = None
    out.insert(0, "level", level)
    out.insert(0, "date", cohort_date)
    for name, col in values.items():
        out[name] = col
    return out


def build_cohort_pltv(
    day: str,
    model: LtvModel,
    installs: pd.DataFrame,
    payments: pd.DataFrame,
    horizon_days: int = 365,
    discount_rate_annual: float = 0.0,
    *,
    cohort_dates: list[str] | None = None,
    history_days: int = 365,
    replicates: int = BOOTSTRAP_REPLICATES,
    seed: int = 0,
) -> pd.DataFrame:
    """Predicted value of install cohorts per campaign and adset, in micros, with a 90% interval.

    pltv = revenue the cohort realized up to `day`
      + its payers' expected revenue until they are `horizon_days` old: pooled BG/NBD purchases
        on their own history x the segment's frequency multiplier x Gamma-Gamma spend with the
        segment's mean spend as prior
      + its non-payers x P(first purchase by that age | unpaid so far) x (first purchase day's
        revenue + the repeat revenue that follows),
    each segment parameter from older cohorts, shrunk toward the parent (campaign -> pooled,
    adset -> campaign) by empirical Bayes. Installs without a user id count at their segment's
    mean. The interval: a Poisson bootstrap over the cohort's users with draws of the segment
    parameters. `cohort_dates` (install days, each valued at its age on `day`) default to
    [day].
    """
    return _cohort_pltv(
        _prepare(payments, installs),
        day,
        model,
        horizon_days=horizon_days,
        discount_rate_annual=discount_rate_annual,
        cohort_dates=cohort_dates,
        history_days=history_days,
        replicates=replicates,
        seed=seed,
    )


def _cohort_pltv(
    prep: _Prepared,
    day: str,
    model: LtvModel,
    *,
    horizon_days: int,
    discount_rate_annual: float,
    cohort_dates: list[str] | None,
    history_days: int,
    replicates: int,
    seed: int,
    rfm: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """build_cohort_pltv on prepared inputs (`rfm`: _rfm_codes at day, computed if None)."""
    dates = [day] if cohort_dates is None else list(cohort_dates)
    as_of_day = _day_of(day)
    installs = prep.installs
    cohort_installs = installs[installs["date"].isin(dates) & (installs["date"] <= day)]
    if cohort_installs["user_pid"].notna().sum() == 0:
        return _empty_pltv()
    if rfm is None:
        rfm = _rfm_codes(*_net_days(prep.pay, as_of_day - history_days + 1, as_of_day), as_of_day)
    fit = _fit_segments(prep, as_of_day, model, history_days, grid=horizon_days + history_days + 1)
    frames = [
        _value_cohort(
            fit,
            model,
            rfm,
            cohort_installs[cohort_installs["date"] == d],
            _day_of(d),
            horizon_days=horizon_days,
            discount_rate_annual=discount_rate_annual,
            replicates=replicates,
            seed=seed,
        )
        for d in sorted(set(dates))
        if _day_of(d) <= as_of_day
    ]
    out = pd.concat([f for f in frames if not f.empty] or [_empty_pltv()], ignore_index=True)
    return out[COHORT_PLTV_COLUMNS].reset_index(drop=True)


@dataclass
class _LevelValues:
    """One cohort's (or a window's) value per segment of one level, in currency units.

    point and draws are scaled from the users valued to all installs; draws: (replicates, k)
    bootstrap replicates of the value before that scaling, None without replicates.
    """

    keys: pd.DataFrame
    installs: np.ndarray
    users: np.ndarray
    payers: np.ndarray
    realized: np.ndarray
    point: np.ndarray  # unscaled
    scale: np.ndarray  # installs / users
    draws: np.ndarray | None


def _value_cohort(
    fit: _Fitted,
    model: LtvModel,
    rfm: pd.DataFrame,
    day_installs: pd.DataFrame,
    cohort_day: int,
    *,
    horizon_days: int,
    discount_rate_annual: float,
    replicates: int,
    seed: int,
) -> pd.DataFrame:
    """build_cohort_pltv's rows for one install day (both levels)."""
    values = _cohort_values(
        fit,
        model,
        rfm,
        day_installs,
        cohort_day,
        horizon_days=horizon_days,
        discount_rate_annual=discount_rate_annual,
        replicates=replicates,
        seed=seed,
    )
    if values is None:
        return _empty_pltv()
    cohort_date = str(np.datetime64(cohort_day, "D"))
    frames = []
    for level, v in values.items():
        low, high = v.point, v.point  # replicates=0: no interval (the bench's core timing)
        if v.draws is not None:
            low, high = np.quantile(v.draws, INTERVAL, axis=0)
        frame = _cohort_frame(
            cohort_date,
            level,
            v.keys,
            {
                "installs": v.installs.astype("int64"),
                "users": v.users.astype("int64"),
                "payers": v.payers.astype("int64"),
                "realized_micros": np.round(v.realized * MICROS).astype("int64"),
                "pltv_micros": np.round(v.point * v.scale * MICROS).astype("int64"),
                "pltv_low_micros": np.round(low * v.scale * MICROS).astype("int64"),
                "pltv_high_micros": np.round(high * v.scale * MICROS).astype("int64"),
            },
        )
        frames.append(frame[v.users > 0])
    return pd.concat(frames, ignore_index=True)


def _cohort_values(
    fit: _Fitted,
    model: LtvModel,
    rfm: pd.DataFrame,
    day_installs: pd.DataFrame,
    cohort_day: int,
    *,
    horizon_days: int,
    discount_rate_annual: float,
    replicates: int,
    seed: int,
    parameter_draws: dict[str, np.ndarray] | None = None,
) -> dict[str, _LevelValues] | None:
    """One install day's value per segment of each level; None without users.

    `parameter_draws` (level -> (4, replicates, k) standard normals) are the segment
    parameters' draws: shared by the cohorts of a window, whose parameters are the same.
    """
    age = fit.as_of_day - cohort_day
    horizon = max(horizon_days - age, 0)
    in_cohort = (fit.users["install_day"] == cohort_day).to_numpy()
    users = fit.users[in_cohort]
    if users.empty:
        return None
    payer = users["first_paid_day"].notna().to_numpy()
    nonpayer = (~payer).astype("float64")
    realized = users["realized_micros"].to_numpy() / MICROS
    # Future revenue is net of the refunds still to come and discounted.
    future_factor = fit.net_share * _discount_factor(horizon, discount_rate_annual)
    all_ids = _segment_ids(day_installs)
    rng = np.random.default_rng([seed, cohort_day])
    weights = rng.poisson(1.0, size=(replicates, len(users))).astype("float64")
    out: dict[str, _LevelValues] = {}
    for level in LEVELS:
        seg = fit.segments[level]
        codes = fit.codes[level][in_cohort]
        k = len(seg.keys)
        own, prior_w = np.zeros(len(users)), np.zeros(len(users))
        own[payer], prior_w[payer] = _payer_terms(
            model, rfm, users.index[payer], horizon, seg.rate[codes[payer]]
        )
        own, prior_w = own * future_factor, prior_w * future_factor
        convert, repeats = _nonpayer_terms(
            seg, np.arange(k), np.full(k, age, dtype=np.int64), horizon, model
        )
        convert = convert * _discount_factor(horizon, discount_rate_annual)
        repeats = repeats * future_factor

        def total(x: np.ndarray, codes: np.ndarray = codes, k: int = k) -> np.ndarray:
            return np.bincount(codes, weights=x, minlength=k)

        n_users = total(np.ones(len(users)))
        point = (
            total(realized)
            + total(own)
            + seg.spend * total(prior_w)
            + total(nonpayer) * (convert * seg.first_units + seg.spend * repeats)
        )
        draws = None
        if replicates > 0:
            z = None if parameter_draws is None else parameter_draws[level]
            if z is None:
                z = rng.standard_normal((4, weights.shape[0], k))
            draws = _bootstrap_draws(
                z, weights, codes, k, realized, own, prior_w, nonpayer, seg, convert, repeats
            )

        key_cols = _LEVEL_KEYS[level]
        installs_all = np.maximum(_install_counts(all_ids, seg.keys, key_cols), n_users)
        out[level] = _LevelValues(
            keys=seg.keys[key_cols],
            installs=installs_all,
            users=n_users,
            payers=total(payer.astype("float64")),
            realized=total(realized),
            point=point,
            scale=np.divide(installs_all, n_users, out=np.ones(k), where=n_users > 0),
            draws=draws,
        )
    return out


def _install_counts(ids: pd.DataFrame, keys: pd.DataFrame, cols: list[str]) -> np.ndarray:
    """Rows of `ids` per row of `keys` (0 where none), matched on `cols` (float64).

    A dict of key tuples, not groupby + merge: a window values each of its cohorts at both
    levels (28 calls a report day), and pandas' fixed cost per call was most of the time.
    """
    counts = Counter(zip(*(ids[c].tolist() for c in cols), strict=True))
    wanted = zip(*(keys[c].tolist() for c in cols), strict=True)
    return np.array([counts.get(k, 0) for k in wanted], dtype="float64")


def _empty_pltv() -> pd.DataFrame:
    out = pd.DataFrame({c: pd.Series(dtype="int64") for c in COHORT_PLTV_COLUMNS})
    for c in ("date", "level", "platform", "campaign_id", "adset_id"):
        out[c] = out[c].astype("str")
    return out
