"""ROAS, pROAS and CPI: the one place adperf divides money by money or by installs.

Every report column, reason line, Slack figure and follow-up computes them here, so a
campaign's ROAS reads the same everywhere:

- ROAS = revenue / spend, pROAS = pLTV / spend (either may be a cohort's, a day's or a window's
  sum); nullable Float64 over Series, `None` for scalars, where spend is 0 or absent: a
  campaign that spent nothing has no ROAS, not an infinite one.
- CPI = spend / installs in integer micros rounded half up (exact integer arithmetic: a float
  rounds some half-micro CPIs the wrong way), `<NA>` / `None` without installs.

Amounts are integer micros or floats of one currency; the ratios do not depend on the unit.
"""

from __future__ import annotations

from typing import overload

import numpy as np
import pandas as pd


def ratio(numerator: pd.Series, denominator: pd.Series) -> pd.Series:
    """numerator / denominator as nullable Float64, <NA> where either is absent or den is 0."""
    num = numerator.astype("Float64")
    den = denominator.astype("Float64")
    return (num / den).where(den != 0, pd.NA)


def roas(revenue: pd.Series, spend: pd.Series) -> pd.Series:
    """Revenue over spend per row (ROAS so far)."""
    return ratio(revenue, spend)


def proas(pltv: pd.Series, spend: pd.Series) -> pd.Series:
    """Predicted lifetime value over spend per row (pROAS)."""
    return ratio(pltv, spend)


def cpi_micros(spend_micros: pd.Series, installs: pd.Series) -> pd.Series:
    """Spend per install in micros, rounded half up exactly in integers; <NA> without installs."""
    num = spend_micros.astype("int64")
    den = installs.astype("int64")
    safe = den.where(den != 0, 1)
    rounded = (2 * num + safe) // (2 * safe)
    return rounded.astype("Int64").where(den != 0, pd.NA)


def ratio_of(numerator: float | int | None, denominator: float | int | None) -> float | None:
    """One numerator / denominator as float; None where either is absent or den is not > 0."""
    if numerator is None or denominator is None or pd.isna(numerator) or pd.isna(denominator):
        return None
    if denominator <= 0:
        return None
    return float(numerator) / float(denominator)


def cpi_change(
    window_spend: float | int | None,
    window_installs: float | int | None,
    recent_spend: float | int | None,
    recent_installs: float | int | None,
) -> float | None:
    """Installs a unit of spend buys in the recent days over what it bought in the whole
    window (the window's CPI / the recent CPI); None where either lacks spend or installs."""
    window = ratio_of(window_installs, window_spend)
    recent = ratio_of(recent_installs, recent_spend)
    if window is None or recent is None or window <= 0 or recent <= 0:
        return None
    return recent / window


def roas_of(revenue: float | int | None, spend: float | int | None) -> float | None:
    """One ROAS: revenue / spend, None without spend."""
    return ratio_of(revenue, spend)


def proas_of(pltv: float | int | None, spend: float | int | None) -> float | None:
    """One pROAS: pLTV / spend, None without spend or without a pLTV."""
    return ratio_of(pltv, spend)


def cpi_of(spend: float | int | None, installs: float | int | None) -> float | None:
    """One CPI in the unit of `spend` (unrounded): spend / installs, None without installs."""
    return ratio_of(spend, installs)


def cpi_micros_of(spend_micros: int, installs: int) -> int | None:
    """One CPI in micros rounded half up (as cpi_micros does per row); None without installs."""
    if installs <= 0:
        return None
    return (2 * spend_micros + installs) // (2 * installs)


@overload
def proas_draws(pltv_draws: np.ndarray, spend_micros: int) -> np.ndarray: ...
@overload
def proas_draws(pltv_draws: None, spend_micros: int) -> None: ...
def proas_draws(pltv_draws: np.ndarray | None, spend_micros: int) -> np.ndarray | None:
    """A bootstrap's pLTV draws (micros) as pROAS draws over the same spend."""
    return None if pltv_draws is None else pltv_draws / spend_micros
