"""Customer lifetime value: BG/NBD (how often, how long) x Gamma-Gamma (how much) from `lifetimes`.

Time is counted in whole report days throughout (`date` strings), so the models' time unit is
one day unless `build_rfm(unit_days=...)` says otherwise (only used to reproduce published fits
in weeks). Money comes in as int64 micros and leaves as int64 micros; the models themselves work
in report-currency units (floats), because their likelihoods are scale-dependent only through
`v` and micros would push `gammaln` arguments into needless precision loss.

Modules, each importing only those before it:

- `prepare`: payments and installs encoded once per day (user codes, day numbers), RFM per user;
- `fit`: the BG/NBD + Gamma-Gamma fit of one RFM table and its `ltv_model` row;
- `predict`: what a fitted model expects per customer, and per new payer by purchase rate;
- `priors`: campaign and adset parameters from older cohorts, shrunk toward their parent;
- `intervals`: the bootstrap draws behind each 90% interval;
- `value`: cohort pLTV per campaign and adset; `window`: a trailing window's cohorts pooled;
- `backtest`: a model fitted 90 days ago against the revenue that came since;
- `build`: one report day's outputs, one function per task (`build_ltv_model`, `build_pltv`).
"""

from adperf.transform.ltv.backtest import (
    BACKTEST_COLUMNS,
    BACKTEST_DAYS,
    backtest,
    backtest_row,
    with_backtest,
)
from adperf.transform.ltv.build import build_ltv, build_ltv_model, build_pltv
from adperf.transform.ltv.fit import (
    MODEL_NAME,
    LtvFitError,
    LtvModel,
    fit_ltv,
    model_from_row,
    model_row,
)
from adperf.transform.ltv.intervals import BOOTSTRAP_REPLICATES, INTERVAL
from adperf.transform.ltv.predict import RATE_GRID, predict_customer_value
from adperf.transform.ltv.prepare import LEVELS, RFM_COLUMNS, build_rfm
from adperf.transform.ltv.value import COHORT_PLTV_COLUMNS, build_cohort_pltv
from adperf.transform.ltv.window import DRAW_COLUMNS, WINDOW_COLUMNS, build_pltv_window

# isort: split
# Internals that tests/transform/test_ltv.py checks one by one, importable from here so those
# tests read as before; code imports them from their own module.
from adperf.transform.ltv.fit import _unique_rows as _unique_rows
from adperf.transform.ltv.predict import _bgnbd_expected as _bgnbd_expected
from adperf.transform.ltv.predict import _new_payer_expected as _new_payer_expected
from adperf.transform.ltv.prepare import _adset_codes as _adset_codes
from adperf.transform.ltv.prepare import _day_of as _day_of
from adperf.transform.ltv.prepare import _prepare as _prepare
from adperf.transform.ltv.prepare import _segment_ids as _segment_ids
from adperf.transform.ltv.prepare import _user_codes as _user_codes
from adperf.transform.ltv.priors import _fit_segments as _fit_segments
from adperf.transform.ltv.value import _rfm_rows as _rfm_rows

__all__ = [
    "BACKTEST_COLUMNS",
    "BACKTEST_DAYS",
    "BOOTSTRAP_REPLICATES",
    "COHORT_PLTV_COLUMNS",
    "DRAW_COLUMNS",
    "INTERVAL",
    "LEVELS",
    "MODEL_NAME",
    "RATE_GRID",
    "RFM_COLUMNS",
    "WINDOW_COLUMNS",
    "LtvFitError",
    "LtvModel",
    "backtest",
    "backtest_row",
    "build_cohort_pltv",
    "build_ltv",
    "build_ltv_model",
    "build_pltv",
    "build_pltv_window",
    "build_rfm",
    "fit_ltv",
    "model_from_row",
    "model_row",
    "predict_customer_value",
    "with_backtest",
]
