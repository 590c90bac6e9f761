"""BG/NBD + Gamma-Gamma fit of one RFM table (one model per report day), and its `ltv_model` row."""

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
from autograd import value_and_grad
from lifetimes import BetaGeoFitter, GammaGammaFitter
from lifetimes.utils import ConvergenceError
from scipy.optimize import minimize

from adperf.errors import AdperfError

MODEL_NAME = "bgnbd_gammagamma"


# What a failed lifetimes fit raises: ConvergenceError (a ValueError) when scipy's minimizer
# reports failure, ValueError from lifetimes' input checks, LinAlgError (also a ValueError) from
# the minimizer's linear algebra, FloatingPointError if numpy is set to raise.
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


def _unique_rows(rfm: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Unique `keys` rows of rfm with a `weight` column counting the customers in each, sorted
    by `keys` (rfm.groupby(keys).size(), which it equals)."""
    cols = [rfm[k].to_numpy() for k in keys]
    bits = 20  # day counts: whole numbers far below 2**20, so several pack into one int64
    packable = len(rfm) > 0 and len(keys) * bits < 63
    for c in cols:
        packable = packable and c.dtype.kind in "iuf" and bool(np.all((c >= 0) & (c < 2**bits)))
        packable = packable and (c.dtype.kind != "f" or bool(np.array_equal(c, np.floor(c))))
    if not packable:
        return rfm.groupby(keys, sort=True).size().rename("weight").reset_index()
    key = np.zeros(len(rfm), dtype=np.int64)
    for c in cols:
        key = (key << bits) | c.astype(np.int64)
    unique, counts = np.unique(key, return_counts=True)  # a sort of int64: fast
    shifts = [bits * (len(keys) - 1 - i) for i in range(len(keys))]
    out = pd.DataFrame(
        {
            k: ((unique >> shift) & (2**bits - 1)).astype(c.dtype)
            for k, c, shift in zip(keys, cols, shifts, strict=True)
        }
    )
    out["weight"] = counts.astype(np.int64)
    return out


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


class _NoHessian:
    """lifetimes' `BaseFitter._fit` (autograd gradient, scipy's default minimizer, tol 1e-7) minus
    the Hessian it computes after convergence for `variance_matrix_`.

    Nothing here reads the fitters' standard errors (the pROAS interval comes from the segment
    estimates and a bootstrap over users), and autograd's Hessian of the likelihood (polygamma
    over every unique row) was ~0.7 s of each 1M-customer fit. Same minimizer call, same
    optimum: the weighted-rows test compares against stock lifetimes to 1e-6.
    """

    def _fit(  # lifetimes 0.11.3 BaseFitter._fit, without `hessian(...)`
        self,
        minimizing_function_args: tuple[Any, ...],
        initial_params: np.ndarray | None,
        params_size: int,
        disp: bool,
        tol: float = 1e-7,
        bounds: Any = None,
        **kwargs: Any,
    ) -> tuple[np.ndarray, float, None]:
        options = {"disp": disp, **kwargs}
        x0 = 0.1 * np.ones(params_size) if initial_params is None else initial_params
        nll = self._negative_log_likelihood  # type: ignore[attr-defined]
        out = minimize(
            value_and_grad(nll),
            jac=True,
            method=None,
            tol=tol,
            x0=x0,
            args=minimizing_function_args,
            options=options,
            bounds=bounds,
        )
        if not out.success:
            raise ConvergenceError(f"LTV fit did not converge: {out.message}")
        return out.x, float(out.fun), None

    def _compute_variance_matrix(self) -> None:
        return None

    def _compute_standard_errors(self) -> None:
        return None

    def _compute_confidence_intervals(self) -> None:
        return None


class _BetaGeo(_NoHessian, BetaGeoFitter):  # type: ignore[misc]
    """BetaGeoFitter without the post-fit Hessian."""


class _GammaGamma(_NoHessian, GammaGammaFitter):  # type: ignore[misc]
    """GammaGammaFitter without the post-fit Hessian."""


# log of the cap on BG/NBD's a and b in the bounded retry: Beta(a, b) with a + b near 10^4 is a
# drop-out probability known to about 1%, i.e. the same for every customer.
_LOG_AB_MAX = float(np.log(1e4))


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
    # Unpenalized, the drop-out's Beta(a, b) often runs off to a, b -> inf (every customer with
    # the same drop-out probability: a short history cannot tell them apart) and the minimizer
    # never converges. lifetimes' penalizer (coef x sum(params^2)) then pulls a and b towards 0,
    # a U-shaped Beta that says most new payers have already left: measured on the small world,
    # seed 11, a = 0.05, b = 0.70 valued every campaign at a fifth of its truth (in part the
    # NaN of a + b < 1 that predict._bgnbd_expected no longer has). So the
    # unpenalized fit is retried with a and b capped (a near-homogeneous drop-out, the limit the
    # data point to) before any penalizer.
    bounds = [(None, None), (None, None), (None, _LOG_AB_MAX), (None, _LOG_AB_MAX)]
    for bounded in (False, True) if penalizer == 0.0 else (False,):
        fitter = _BetaGeo(penalizer_coef=penalizer)
        # The capped optimum lies on a flat ridge (any a, b at the cap with the same a/(a+b)):
        # always the same (lifetimes' default) start, so a warm start cannot move it.
        start = None if bounded else init
        try:
            # lifetimes print()s scipy's result on failure; keep it out of the task log.
            with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                fitter.fit(
                    rows["frequency"].to_numpy(),
                    rows["recency"].to_numpy(dtype="float64"),
                    t,
                    weights=rows["weight"].to_numpy(),
                    initial_params=start,
                    **({"bounds": bounds} if bounded else {}),
                )
        except _FIT_ERRORS:
            continue
        params = {k: float(fitter.params_[k]) for k in ("r", "alpha", "a", "b")}
        if _all_finite_positive(params):
            return params
    return None


def _fit_gammagamma(
    rows: pd.DataFrame, penalizer: float, initial: dict[str, float] | None
) -> dict[str, float] | None:
    """Gamma-Gamma params on unique (frequency, monetary_value) rows, or None if the fit failed."""
    init = None if initial is None else np.log([initial["p"], initial["q"], initial["v"]])
    fitter = _GammaGamma(penalizer_coef=penalizer)
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


def model_row(
    day: str,
    model: LtvModel,
    *,
    model_date: str | None = None,
    backtest_result: tuple[float, float, int] | None = None,
    backtest_source: str = "fitted",
    history_span_days: int | None = None,
    horizon_days: int | None = None,
) -> dict[str, Any]:
    """One `ltv_model` report-table row for `day`; model_date is the day the model was fitted.

    backtest_source: 'stored' when the backtest's model was that day's own `ltv_model`,
    'fitted' when it had to be fitted again. history_span_days: the days of payments the fit
    saw (rfm_span_days); horizon_days: the horizon its value is asked for. Both go to
    `params`, where the report reads whether the value is extrapolated past the history.
    """
    params: dict[str, Any] = {
        "bgnbd": model.bgnbd,
        "gammagamma": model.gammagamma,
        "penalizer": model.penalizer,
        "n_repeat": model.n_repeat,
    }
    if history_span_days is not None:
        params["history_span_days"] = int(history_span_days)
    if horizon_days is not None:
        params["horizon_days"] = int(horizon_days)
    if backtest_result is not None:
        params["backtest_campaigns"] = backtest_result[2]
        params["backtest_model"] = backtest_source
    return {
        "date": day,
        "model": MODEL_NAME,
        "params": json.dumps(params, sort_keys=True),
        "n_customers": model.n_customers,
        "converged": model.converged,
        "log_likelihood": model.log_likelihood,
        "model_date": model_date if model_date is not None else day,
        "backtest_mape": None if backtest_result is None else backtest_result[0],
        "backtest_bias": None if backtest_result is None else backtest_result[1],
    }


def rfm_span_days(rfm: pd.DataFrame) -> int:
    """Days of payments an RFM table covers: from its earliest first purchase to the as-of day,
    both counted (T is the days since each customer's first purchase); 0 when it is empty."""
    return int(rfm["T"].max()) + 1 if len(rfm) else 0


def model_from_row(row: dict[str, Any]) -> tuple[str, LtvModel] | None:
    """(model_date, model) of an `ltv_model` row, or None when the row holds no usable model."""
    try:
        params = json.loads(str(row["params"]))
    except (KeyError, TypeError, ValueError):
        return None
    if not isinstance(params, dict) or "bgnbd" not in params or params.get("gammagamma") is None:
        return None
    model_date = row.get("model_date")
    usable = bool(row.get("converged")) or (model_date is not None and model_date != row["date"])
    if not usable:
        return None
    ll = row.get("log_likelihood")
    model = LtvModel(
        bgnbd={k: float(v) for k, v in params["bgnbd"].items()},
        gammagamma={k: float(v) for k, v in params["gammagamma"].items()},
        n_customers=int(row.get("n_customers") or 0),
        n_repeat=int(params.get("n_repeat", 0)),
        converged=True,
        log_likelihood=float(ll) if ll is not None and not pd.isna(ll) else math.nan,
        penalizer=float(params.get("penalizer", 0.0)),
    )
    return str(model_date if model_date is not None else row["date"]), model
