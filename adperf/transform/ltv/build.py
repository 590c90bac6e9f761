"""One report day's LTV, one function per task: the `ltv_model` row, the cohort pLTV, backtest."""

from __future__ import annotations

import json
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pandas as pd

from adperf.transform.ltv.backtest import BACKTEST_DAYS, _backtest, backtest_row
from adperf.transform.ltv.fit import (
    MODEL_NAME,
    LtvFitError,
    LtvModel,
    fit_ltv,
    model_from_row,
    model_row,
    rfm_span_days,
)
from adperf.transform.ltv.intervals import BOOTSTRAP_REPLICATES
from adperf.transform.ltv.prepare import (
    _day_of,
    _encode,
    _net_days,
    _prepare,
    _Prepared,
    _rfm_codes,
)
from adperf.transform.ltv.value import _cohort_pltv, _empty_pltv


def build_ltv(
    day: str,
    payments: pd.DataFrame,
    installs: pd.DataFrame,
    *,
    history_days: int = 365,
    horizon_days: int = 365,
    discount_rate_annual: float = 0.0,
    initial: LtvModel | None = None,
    initial_date: str | None = None,
    backtest_days: int = BACKTEST_DAYS,
    backtest_model: LtvModel | None = None,
    replicates: int = BOOTSTRAP_REPLICATES,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """The day's `ltv_model` row and its cohort pLTV; a failed fit never fails the report.

    `initial` (fitted on `initial_date`, e.g. the previous day's model) warm-starts the fit and
    is the fallback when no penalizer converges: the row then says converged=False and
    model_date=initial_date. Without any usable model the row carries the reason and the cohort
    pLTV is empty (pROAS is NULL). The backtest uses `backtest_model`, the model fitted as of
    day - backtest_days (that day's own `ltv_model`), and fits it here only when it is None.
    """
    prep = _prepare(payments, installs)
    with ThreadPoolExecutor(max_workers=1) as pool:
        # A stored D-90 model needs nothing of today's: its backtest runs beside today's fit
        # and valuation (numpy releases the GIL in the array work that both are made of), so
        # a second core shortens the day. Same inputs, same results, either way.
        early = None
        if backtest_days > 0 and backtest_model is not None and backtest_model.converged:
            early = pool.submit(_backtest, prep, day, backtest_model, backtest_days, history_days)
        return _build_ltv(
            prep,
            day,
            initial=initial,
            initial_date=initial_date,
            history_days=history_days,
            horizon_days=horizon_days,
            discount_rate_annual=discount_rate_annual,
            backtest_days=backtest_days,
            backtest_model=backtest_model,
            early_backtest=early,
            replicates=replicates,
        )


def _build_ltv(
    prep: _Prepared,
    day: str,
    *,
    initial: LtvModel | None,
    initial_date: str | None,
    history_days: int,
    horizon_days: int,
    discount_rate_annual: float,
    backtest_days: int,
    backtest_model: LtvModel | None,
    early_backtest: Future[tuple[float, float, int] | None] | None,
    replicates: int,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """build_ltv on prepared inputs; `early_backtest`: the stored model's backtest, running."""
    as_of_day = _day_of(day)
    rfm = _rfm_codes(*_net_days(prep.pay, as_of_day - history_days + 1, as_of_day), as_of_day)
    row, model = _fit_row(day, rfm, initial, initial_date, horizon_days)
    if model is None:
        return row, _empty_pltv()
    pltv, result, source = _value(
        prep,
        day,
        model,
        rfm,
        horizon_days=horizon_days,
        discount_rate_annual=discount_rate_annual,
        history_days=history_days,
        backtest_days=backtest_days,
        backtest_model=backtest_model,
        early_backtest=early_backtest,
        replicates=replicates,
    )
    row = model_row(
        day,
        model,
        model_date=row["model_date"],
        backtest_result=result,
        backtest_source=source,
        history_span_days=rfm_span_days(rfm) if model.converged else None,
        horizon_days=horizon_days,
    )
    return row, pltv


def _fit_row(
    day: str,
    rfm: pd.DataFrame,
    initial: LtvModel | None,
    initial_date: str | None,
    horizon_days: int | None,
) -> tuple[dict[str, Any], LtvModel | None]:
    """The day's `ltv_model` row (no backtest) and its model; None when no model is usable."""
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
            "model_date": None,
            "backtest_mape": None,
            "backtest_bias": None,
        }
        return row, None
    model_date = day if model.converged else (initial_date or day)
    # A fallback model's span is its fit's, not today's history: left out.
    span = rfm_span_days(rfm) if model.converged else None
    row = model_row(
        day, model, model_date=model_date, history_span_days=span, horizon_days=horizon_days
    )
    return row, model


def _value(
    prep: _Prepared,
    day: str,
    model: LtvModel,
    rfm: pd.DataFrame,
    *,
    horizon_days: int,
    discount_rate_annual: float,
    history_days: int,
    backtest_days: int,
    backtest_model: LtvModel | None,
    early_backtest: Future[tuple[float, float, int] | None] | None,
    replicates: int,
) -> tuple[pd.DataFrame, tuple[float, float, int] | None, str]:
    """(cohort pLTV, backtest result, backtest source) of the day with `model`."""
    as_of_day = _day_of(day)
    pltv = _cohort_pltv(
        prep,
        day,
        model,
        horizon_days=horizon_days,
        discount_rate_annual=discount_rate_annual,
        cohort_dates=None,
        history_days=history_days,
        replicates=replicates,
        seed=0,
        rfm=rfm,
    )
    result, then, source = None, backtest_model, "stored"
    if backtest_days > 0:
        if then is None:
            then_day, source = as_of_day - backtest_days, "fitted"
            net = _net_days(prep.pay, then_day - history_days + 1, then_day)
            try:
                # Warm-started from today's model; a fit that falls back to it would leak the
                # future into the backtest, so only a converged fit counts.
                then = fit_ltv(_rfm_codes(*net, then_day), initial=model)
            except LtvFitError:
                then = None
        if early_backtest is not None:
            result = early_backtest.result()
        elif then is not None and then.converged:
            result = _backtest(prep, day, then, backtest_days, history_days)
    return pltv, result, source


# --- the two halves of build_ltv, one per task: the fit on payments alone, then the valuation


def build_ltv_model(
    day: str,
    payments: pd.DataFrame,
    *,
    history_days: int = 365,
    horizon_days: int = 365,
    initial: LtvModel | None = None,
    initial_date: str | None = None,
) -> dict[str, Any]:
    """The day's `ltv_model` row fitted on the payment history alone (no installs, no backtest).

    `horizon_days`, the horizon the model will value, is recorded beside the history the fit
    saw (`params`: the report says when the value is extrapolated past that history).

    The same fit as build_ltv's: `initial` warm-starts it and is the fallback (converged=False,
    model_date=initial_date); without any usable model the row carries the reason.
    """
    as_of_day = _day_of(day)
    enc = _encode(payments[["user_pid", "date", "amount_micros"]])
    rfm = _rfm_codes(*_net_days(enc, as_of_day - history_days + 1, as_of_day), as_of_day)
    row, _ = _fit_row(day, rfm, initial, initial_date, horizon_days)
    return row


def build_pltv(
    day: str,
    model: dict[str, Any],
    payments: pd.DataFrame,
    installs: pd.DataFrame,
    *,
    history_days: int = 365,
    horizon_days: int = 365,
    discount_rate_annual: float = 0.0,
    backtest_days: int = BACKTEST_DAYS,
    backtest_model: LtvModel | None = None,
    replicates: int = BOOTSTRAP_REPLICATES,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """(the day's backtest row, cohort pLTV) valued with `model`, the day's `ltv_model` row.

    What build_ltv returns after its fit: with_backtest(model, backtest) is build_ltv's row.
    A row without a usable model gives an empty pLTV (pROAS NULL) and no backtest.
    """
    found = model_from_row(model)
    if found is None:
        return backtest_row(day, None, "stored"), _empty_pltv()
    fitted = found[1]
    prep = _prepare(payments, installs)
    as_of_day = _day_of(day)
    rfm = _rfm_codes(*_net_days(prep.pay, as_of_day - history_days + 1, as_of_day), as_of_day)
    with ThreadPoolExecutor(max_workers=1) as pool:
        early = None
        if backtest_days > 0 and backtest_model is not None and backtest_model.converged:
            early = pool.submit(_backtest, prep, day, backtest_model, backtest_days, history_days)
        pltv, result, source = _value(
            prep,
            day,
            fitted,
            rfm,
            horizon_days=horizon_days,
            discount_rate_annual=discount_rate_annual,
            history_days=history_days,
            backtest_days=backtest_days,
            backtest_model=backtest_model,
            early_backtest=early,
            replicates=replicates,
        )
    return backtest_row(day, result, source), pltv
