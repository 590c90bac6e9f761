"""Customer lifetime value: BG/NBD (how often, how long) x Gamma-Gamma (how much) from `lifetimes`.

Time is counted in whole report days throughout (`date` strings), so the models' time unit is
one day unless `build_rfm(unit_days=...)` says otherwise (only used to reproduce published fits
in weeks). Money comes in as int64 micros and leaves as int64 micros; the models themselves work
in report-currency units (floats), because their likelihoods are scale-dependent only through
`v` and micros would push `gammaln` arguments into needless precision loss.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from lifetimes import BetaGeoFitter, GammaGammaFitter
from lifetimes.utils import ConvergenceError

from adperf.errors import AdperfError
from adperf.schema import MICROS

MODEL_NAME = "bgnbd_gammagamma"
RFM_COLUMNS = ["frequency", "recency", "T", "monetary_value", "first_purchase_date"]
COHORT_PLTV_COLUMNS = [
    "date",
    "platform",
    "campaign_id",
    "installs",
    "payers",
    "realized_micros",
    "pltv_micros",
]
ORGANIC = "organic"
UNATTRIBUTED = "unattributed"

# What a failed lifetimes fit raises: ConvergenceError (a ValueError) when scipy's minimizer
# reports failure, ValueError from lifetimes' input checks, LinAlgError (also a ValueError) when
# the Hessian at the optimum is singular, FloatingPointError if numpy is set to raise.
_FIT_ERRORS: tuple[type[BaseException], ...] = (
    ConvergenceError,
    ValueError,
    np.linalg.LinAlgError,
    FloatingPointError,
    OverflowError,
)


class LtvFitError(AdperfError):
    """No penalizer gave a usable fit and there is no previous model to fall back on."""


@dataclass
class LtvModel:
    """Fitted BG/NBD and Gamma-Gamma parameters (time unit: the RFM's, one day by default)."""

    bgnbd: dict[str, float]  # r, alpha, a, b
    gammagamma: dict[str, float] | None  # p, q, v (report-currency units per purchase)
    n_customers: int
    n_repeat: int
    converged: bool
    log_likelihood: float
    penalizer: float

    def to_json(self) -> str:
        """The model as a JSON object (stable key order)."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> LtvModel:
        """A model from `to_json` output."""
        raw: dict[str, Any] = json.loads(text)
        gg = raw["gammagamma"]
        return cls(
            bgnbd={k: float(v) for k, v in raw["bgnbd"].items()},
            gammagamma=None if gg is None else {k: float(v) for k, v in gg.items()},
            n_customers=int(raw["n_customers"]),
            n_repeat=int(raw["n_repeat"]),
            converged=bool(raw["converged"]),
            log_likelihood=float(raw["log_likelihood"]),
            penalizer=float(raw["penalizer"]),
        )


def _day_number(dates: pd.Series | pd.Index) -> np.ndarray:
    """'YYYY-MM-DD' strings -> int64 days since 1970-01-01."""
    parsed = pd.to_datetime(pd.Series(np.asarray(dates, dtype=object)), format="%Y-%m-%d")
    return np.asarray(parsed.to_numpy().astype("datetime64[D]").astype(np.int64))


def _purchase_days(payments: pd.DataFrame) -> pd.DataFrame:
    """Per (user_pid, date) with positive net revenue: amount_micros and day number, sorted."""
    daily = payments.groupby(["user_pid", "date"], sort=False, as_index=False)[
        "amount_micros"
    ].sum()
    # Refunds are negative rows on their own day; a day netted to <= 0 bought nothing.
    daily = daily[daily["amount_micros"] > 0].copy()
    daily["day"] = _day_number(daily["date"])
    ordered: pd.DataFrame = daily.sort_values(["user_pid", "day"], kind="stable")
    return ordered.reset_index(drop=True)


def build_rfm(
    payments: pd.DataFrame, as_of: str, history_days: int = 365, unit_days: int = 1
) -> pd.DataFrame:
    """Per user_pid (index): frequency, recency, T, monetary_value, first_purchase_date at as_of.

    Uses PAYMENTS rows with `date` in (as_of - history_days, as_of]. A purchase day is a date with
    positive net revenue; frequency = purchase days - 1, recency = last - first purchase day,
    T = as_of - first purchase day (recency and T in units of `unit_days` days, fractional if
    need be), monetary_value = mean net revenue of the repeat purchase days in report-currency
    units (0 when frequency is 0) -- the conventions of lifetimes'
    `summary_data_from_transaction_data(freq='D', observation_period_end=as_of)`.
    """
    as_of_day = int(_day_number(pd.Index([as_of]))[0])
    first_day = pd.Timestamp(as_of) - pd.Timedelta(days=history_days)
    lower = first_day.strftime("%Y-%m-%d")
    # ISO dates compare correctly as strings.
    window = payments[(payments["date"] > lower) & (payments["date"] <= as_of)]
    days = _purchase_days(window[["user_pid", "date", "amount_micros"]])
    if days.empty:
        empty = pd.DataFrame(
            {
                "frequency": pd.Series(dtype="int64"),
                "recency": pd.Series(dtype="float64"),
                "T": pd.Series(dtype="float64"),
                "monetary_value": pd.Series(dtype="float64"),
                "first_purchase_date": pd.Series(dtype="str"),
            }
        )
        empty.index = pd.Index([], dtype="str", name="user_pid")
        return empty
    g = days.groupby("user_pid", sort=True)
    agg = g.agg(
        first=("day", "min"),
        last=("day", "max"),
        n=("day", "size"),
        total=("amount_micros", "sum"),
        first_amount=("amount_micros", "first"),
        first_purchase_date=("date", "first"),
    )
    frequency = (agg["n"] - 1).astype("int64")
    repeat_total = agg["total"] - agg["first_amount"]
    # The first purchase is excluded from monetary value, as in lifetimes: Gamma-Gamma models
    # the spend of repeat transactions only.
    monetary = np.where(frequency > 0, repeat_total / frequency.clip(lower=1) / MICROS, 0.0)
    rfm = pd.DataFrame(
        {
            "frequency": frequency,
            "recency": (agg["last"] - agg["first"]) / unit_days,
            "T": (as_of_day - agg["first"]) / unit_days,
            "monetary_value": monetary.astype("float64"),
            "first_purchase_date": agg["first_purchase_date"].astype("str"),
        },
        index=agg.index,
    )
    rfm.index.name = "user_pid"
    return rfm


def _unique_rows(rfm: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Unique `keys` rows of rfm with a `weight` column counting the customers in each."""
    return rfm.groupby(keys, sort=True).size().rename("weight").reset_index()


def _bgnbd_total_log_likelihood(
    params: dict[str, float], freq: np.ndarray, rec: np.ndarray, t: np.ndarray, w: np.ndarray
) -> float:
    """Sum of BG/NBD log-likelihoods in the RFM's own time unit, without penalty."""
    log_params = np.log([params["r"], params["alpha"], params["a"], params["b"]])
    mean_nll = BetaGeoFitter._negative_log_likelihood(log_params, freq, rec, t, w, 0.0)
    return float(-mean_nll * w.sum())


def _gg_total_log_likelihood(
    params: dict[str, float], freq: np.ndarray, m: np.ndarray, w: np.ndarray
) -> float:
    """Sum of Gamma-Gamma log-likelihoods, without penalty."""
    log_params = np.log([params["p"], params["q"], params["v"]])
    mean_nll = GammaGammaFitter._negative_log_likelihood(log_params, freq, m, w, 0.0)
    return float(-mean_nll * w.sum())


def _all_finite_positive(params: dict[str, float]) -> bool:
    return all(math.isfinite(v) and v > 0 for v in params.values())


def _fit_bgnbd(
    rows: pd.DataFrame, penalizer: float, initial: dict[str, float] | None
) -> dict[str, float] | None:
    """BG/NBD params on unique (frequency, recency, T) rows, or None if the fit failed."""
    t = rows["T"].to_numpy(dtype="float64")
    init = None
    if initial is not None:
        # lifetimes optimizes log-params with alpha rescaled so that max(T) == 1.
        scale = 1.0 / t.max()
        init = np.log([initial["r"], initial["alpha"] * scale, initial["a"], initial["b"]])
    fitter = BetaGeoFitter(penalizer_coef=penalizer)
    try:
        # lifetimes print()s scipy's result on failure; keep it out of the task log.
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            fitter.fit(
                rows["frequency"].to_numpy(),
                rows["recency"].to_numpy(dtype="float64"),
                t,
                weights=rows["weight"].to_numpy(),
                initial_params=init,
            )
    except _FIT_ERRORS:
        return None
    params = {k: float(fitter.params_[k]) for k in ("r", "alpha", "a", "b")}
    return params if _all_finite_positive(params) else None


def _fit_gammagamma(
    rows: pd.DataFrame, penalizer: float, initial: dict[str, float] | None
) -> dict[str, float] | None:
    """Gamma-Gamma params on unique (frequency, monetary_value) rows, or None if the fit failed."""
    init = None if initial is None else np.log([initial["p"], initial["q"], initial["v"]])
    fitter = GammaGammaFitter(penalizer_coef=penalizer)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            fitter.fit(
                rows["frequency"].to_numpy(),
                rows["monetary_value"].to_numpy(dtype="float64"),
                weights=rows["weight"].to_numpy(),
                initial_params=init,
            )
    except _FIT_ERRORS:
        return None
    params = {k: float(fitter.params_[k]) for k in ("p", "q", "v")}
    # q <= 1 makes the population mean spend v*p/(q-1) infinite or negative: unusable.
    if not _all_finite_positive(params) or params["q"] <= 1.0:
        return None
    return params


def fit_ltv(
    rfm: pd.DataFrame,
    *,
    initial: LtvModel | None = None,
    penalizers: tuple[float, ...] = (0.0, 0.001, 0.01, 0.1),
) -> LtvModel:
    """Fit BG/NBD on all customers and Gamma-Gamma on repeat buyers of one RFM table.

    Walks the penalizer ladder until both fits converge with finite parameters; if none does,
    returns `initial` marked converged=False, or raises LtvFitError when there is no initial.
    """
    n_customers = len(rfm)
    repeat = rfm[(rfm["frequency"] > 0) & (rfm["monetary_value"] > 0)]
    failure = (
        f"LTV fit failed for {n_customers} customers ({len(repeat)} repeat buyers) with "
        f"penalizers {list(penalizers)}"
    )
    # Without a repeat buyer neither model is identified (BG/NBD's drop-out and Gamma-Gamma's
    # spend both need a second purchase): any "converged" fit would be an artefact.
    if n_customers and len(repeat):
        # Same likelihood as one row per customer (each pattern's log-likelihood x its count),
        # with far fewer rows: a year of daily data has a few thousand distinct patterns.
        bg_rows = _unique_rows(rfm, ["frequency", "recency", "T"])
        gg_rows = _unique_rows(repeat, ["frequency", "monetary_value"])
        for penalizer in penalizers:
            bg = _fit_bgnbd(bg_rows, penalizer, None if initial is None else initial.bgnbd)
            if bg is None:
                continue
            gg = _fit_gammagamma(
                gg_rows, penalizer, None if initial is None else initial.gammagamma
            )
            if gg is None:
                continue
            # Joint log-likelihood: Gamma-Gamma assumes spend independent of the transaction
            # process, so the two models' log-likelihoods add.
            ll = _bgnbd_total_log_likelihood(
                bg,
                bg_rows["frequency"].to_numpy(dtype="float64"),
                bg_rows["recency"].to_numpy(dtype="float64"),
                bg_rows["T"].to_numpy(dtype="float64"),
                bg_rows["weight"].to_numpy(dtype="float64"),
            ) + _gg_total_log_likelihood(
                gg,
                gg_rows["frequency"].to_numpy(dtype="float64"),
                gg_rows["monetary_value"].to_numpy(dtype="float64"),
                gg_rows["weight"].to_numpy(dtype="float64"),
            )
            return LtvModel(
                bgnbd=bg,
                gammagamma=gg,
                n_customers=n_customers,
                n_repeat=len(repeat),
                converged=True,
                log_likelihood=ll,
                penalizer=penalizer,
            )
    if initial is None:
        raise LtvFitError(
            f"{failure}. Fix: check the payments history (a year of PAYMENTS with repeat "
            "buyers is expected) or pass the previous day's model as `initial`"
        )
    return LtvModel(
        bgnbd=dict(initial.bgnbd),
        gammagamma=None if initial.gammagamma is None else dict(initial.gammagamma),
        n_customers=initial.n_customers,
        n_repeat=initial.n_repeat,
        converged=False,
        log_likelihood=initial.log_likelihood,
        penalizer=initial.penalizer,
    )


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


def _nonpayer_conversion_probability(
    day: str, installs: pd.DataFrame, payments: pd.DataFrame, horizon_days: int
) -> float:
    """P(a user who has not paid by the end of install day pays within the horizon).

    Kaplan-Meier on first-purchase age over all earlier install days, pooled: each earlier
    user is at risk at age t if unpaid before t and observed at t (day - install day >= t), so
    young cohorts count only for the ages they have lived. The horizon is capped at the oldest
    observed age: beyond it there is no evidence.
    """
    history = installs[(installs["date"] < day) & installs["user_pid"].notna()]
    if history.empty:
        return 0.0
    first_install = history.groupby("user_pid", sort=False)["date"].min()
    paid = _purchase_days(payments[payments["date"] <= day][["user_pid", "date", "amount_micros"]])
    first_paid = paid.groupby("user_pid", sort=False)["day"].min()
    users = pd.DataFrame({"install_day": _day_number(first_install)}, index=first_install.index)
    users["first_paid_day"] = first_paid.reindex(users.index)
    users["age_paid"] = users["first_paid_day"] - users["install_day"]
    # Paid before installing: a returning customer on a new device, not a new user's curve.
    users = users[~(users["age_paid"] < 0)]
    if users.empty:
        return 0.0
    observed = int(_day_number(pd.Index([day]))[0]) - users["install_day"].to_numpy()
    age_paid = users["age_paid"].to_numpy(dtype="float64")  # NaN: not paid yet
    horizon = min(horizon_days, int(observed.max()))
    if horizon < 1:
        return 0.0
    # At risk at age t: observed at t and unpaid at every age < t, i.e. min(observed age, paid
    # age) >= t. Counted by a reverse cumulative sum, not a users x ages matrix. Age 0 payers
    # are never at risk: the cohort's non-payers are exactly those unpaid at age 0.
    unpaid_before = np.where(np.isnan(age_paid), np.inf, age_paid)
    last_at_risk = np.minimum(np.minimum(observed, unpaid_before), horizon).astype(np.int64)
    at_risk = np.cumsum(np.bincount(last_at_risk, minlength=horizon + 1)[::-1])[::-1][1:]
    events = np.bincount(
        age_paid[(age_paid >= 1) & (age_paid <= horizon)].astype(np.int64), minlength=horizon + 1
    )[1:]
    hazard = np.divide(events, at_risk, out=np.zeros(horizon), where=at_risk > 0)
    return float(1.0 - np.prod(1.0 - hazard))


def _campaign_key(frame: pd.DataFrame) -> pd.DataFrame:
    """platform/campaign_id with organic installs as ('organic', 'organic')."""
    out = frame.copy()
    organic = out["platform"] == ORGANIC
    out["campaign_id"] = out["campaign_id"].astype("object")
    out.loc[organic, "campaign_id"] = ORGANIC
    out["campaign_id"] = out["campaign_id"].fillna(UNATTRIBUTED).astype("str")
    return out


def build_cohort_pltv(
    day: str,
    model: LtvModel,
    rfm: pd.DataFrame,
    installs: pd.DataFrame,
    payments: pd.DataFrame,
    horizon_days: int = 365,
    discount_rate_annual: float = 0.0,
) -> pd.DataFrame:
    """Predicted lifetime value of `day`'s install cohort per (platform, campaign_id), in micros.

    pltv = revenue realized by the cohort up to `day` + predicted future value of its payers
    + n_nonpayers x P(pay later | unpaid at install day) x expected horizon value of a new payer.
    `rfm` is build_rfm(payments, day); `installs` and `payments` carry the history (install days
    before `day` feed the first-purchase curve).
    """
    cohort = installs[(installs["date"] == day) & installs["user_pid"].notna()]
    cohort = _campaign_key(cohort.sort_values("install_time", kind="stable"))
    # A user installing twice on one day is one member of the cohort, credited to the first.
    cohort = cohort.drop_duplicates("user_pid")[["user_pid", "platform", "campaign_id"]]
    if cohort.empty:
        out = pd.DataFrame({c: pd.Series(dtype="int64") for c in COHORT_PLTV_COLUMNS})
        for c in ("date", "platform", "campaign_id"):
            out[c] = out[c].astype("str")
        return out

    realized = (
        payments[(payments["date"] <= day) & payments["user_pid"].isin(cohort["user_pid"])]
        .groupby("user_pid")["amount_micros"]
        .sum()
    )
    users = cohort.set_index("user_pid")
    users["realized_micros"] = realized.reindex(users.index, fill_value=0).astype("int64")
    users["payer"] = users["realized_micros"] > 0

    # Future value of payers from their own RFM; a payer absent from rfm (built over another
    # window) has only this day's history, i.e. is a first-day buyer (0, 0, 0).
    payer_ids = users.index[users["payer"]]
    payer_rfm = rfm.reindex(payer_ids)
    payer_rfm = payer_rfm.fillna({"frequency": 0, "recency": 0.0, "T": 0.0, "monetary_value": 0.0})
    payer_rfm["frequency"] = payer_rfm["frequency"].astype("int64")
    users["future"] = 0.0
    users.loc[payer_ids, "future"] = predict_customer_value(
        model, payer_rfm, horizon_days, discount_rate_annual
    ).to_numpy()

    # A new payer: the mean first purchase day's revenue, then the future of a (0, 0, 0) buyer.
    first_days = _purchase_days(
        payments[payments["date"] <= day][["user_pid", "date", "amount_micros"]]
    ).drop_duplicates("user_pid")
    mean_first_units = (
        float(first_days["amount_micros"].mean()) / MICROS if len(first_days) else 0.0
    )
    new_buyer = pd.DataFrame(
        {"frequency": [0], "recency": [0.0], "T": [0.0], "monetary_value": [0.0]}
    )
    new_payer_units = mean_first_units + float(
        predict_customer_value(model, new_buyer, horizon_days, discount_rate_annual).iloc[0]
    )
    p_convert = _nonpayer_conversion_probability(day, installs, payments, horizon_days)

    grouped = users.groupby(["platform", "campaign_id"], sort=True).agg(
        installs=("payer", "size"),
        payers=("payer", "sum"),
        realized_micros=("realized_micros", "sum"),
        future_units=("future", "sum"),
    )
    nonpayers = grouped["installs"] - grouped["payers"]
    expected_units = grouped["future_units"] + nonpayers * p_convert * new_payer_units
    pltv = grouped["realized_micros"] + np.round(expected_units * MICROS)
    out = grouped.reset_index()
    out["date"] = day
    out["installs"] = out["installs"].astype("int64")
    out["payers"] = out["payers"].astype("int64")
    out["realized_micros"] = out["realized_micros"].astype("int64")
    out["pltv_micros"] = pltv.to_numpy().astype("int64")
    return out[COHORT_PLTV_COLUMNS]


def model_row(day: str, model: LtvModel) -> dict[str, Any]:
    """One `ltv_model` report-table row for `day`."""
    params = {
        "bgnbd": model.bgnbd,
        "gammagamma": model.gammagamma,
        "penalizer": model.penalizer,
        "n_repeat": model.n_repeat,
    }
    return {
        "date": day,
        "model": MODEL_NAME,
        "params": json.dumps(params, sort_keys=True),
        "n_customers": model.n_customers,
        "converged": model.converged,
        "log_likelihood": model.log_likelihood,
    }


def build_ltv(
    day: str,
    payments: pd.DataFrame,
    installs: pd.DataFrame,
    *,
    history_days: int = 365,
    horizon_days: int = 365,
    discount_rate_annual: float = 0.0,
    initial: LtvModel | None = None,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """The day's `ltv_model` row and its cohort pLTV; a failed fit never fails the report.

    Without a converged model (too little history, and no earlier model to fall back on) the
    row says converged=False with the reason, and the cohort pLTV is empty (pROAS is NULL).
    """
    rfm = build_rfm(payments, day, history_days)
    try:
        model = fit_ltv(rfm, initial=initial)
    except LtvFitError as exc:
        row = {
            "date": day,
            "model": MODEL_NAME,
            "params": json.dumps({"error": str(exc)}, sort_keys=True),
            "n_customers": len(rfm),
            "converged": False,
            "log_likelihood": None,
        }
        empty = pd.DataFrame({c: pd.Series(dtype="int64") for c in COHORT_PLTV_COLUMNS})
        for c in ("date", "platform", "campaign_id"):
            empty[c] = empty[c].astype("str")
        return row, empty
    pltv = build_cohort_pltv(
        day,
        model,
        rfm,
        installs,
        payments,
        horizon_days=horizon_days,
        discount_rate_annual=discount_rate_annual,
    )
    return model_row(day, model), pltv
