"""BG/NBD's conditional expectation where hyp2f1's direct series overflows (Euler's switch)."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import hyp2f1

from adperf.transform.ltv.predict import _bgnbd_expected


class _Model:
    def __init__(self, **bgnbd: float) -> None:
        self.bgnbd = bgnbd


def _reference(t: Any, x: Any, t_x: Any, big_t: Any, model: _Model) -> np.ndarray:
    """Equation (10) as lifetimes writes it: both series everywhere, Euler's where inf."""
    r, a, b, alpha = (model.bgnbd[k] for k in ("r", "a", "b", "alpha"))
    x, t_x, big_t, t = (np.asarray(v, dtype="float64") for v in (x, t_x, big_t, t))
    _a, _b, _c = r + x, b + x, a + b + x - 1
    z = t / (alpha + big_t + t)
    with np.errstate(all="ignore"):
        ln_hyp = np.log(hyp2f1(_a, _b, _c, z))
        alt = np.log(hyp2f1(_c - _a, _c - _b, _c, z)) + (_c - _a - _b) * np.log1p(-z)
        ln_hyp = np.where(np.isinf(ln_hyp), alt, ln_hyp)
        second = 1 - np.exp(ln_hyp + (r + x) * np.log((alpha + big_t) / (alpha + t + big_t)))
        out = (a + b + x - 1) / (a - 1) * second
        out = out / (1 + (x > 0) * (a / (b + x - 1)) * ((alpha + big_t) / (alpha + t_x)) ** (r + x))
    return np.asarray(np.nan_to_num(out, nan=0.0, posinf=0.0), dtype="float64")


def test_rows_whose_direct_series_overflows_take_eulers_transformation_row_by_row() -> None:
    model = _Model(r=20.0, alpha=0.05, a=2.0, b=150.0)
    x = np.array([0.0, 3.0, 800.0, 2500.0, 40.0])
    t_x, big_t = x * 1.2, x * 1.2 + 30.0
    t = np.array([30.0, 365.0, 5000.0, 9000.0, 90.0])
    with np.errstate(all="ignore"):
        direct = np.log(hyp2f1(20.0 + x, 150.0 + x, 151.0 + x, t / (0.05 + big_t + t)))
    assert np.isinf(direct).any() and not np.isinf(direct).all()  # both kinds of row

    got = _bgnbd_expected(t, x, t_x, big_t, model)  # type: ignore[arg-type]

    assert np.array_equal(got, _reference(t, x, t_x, big_t, model))
    assert np.all(np.isfinite(got)) and np.all(got >= 0)
    # One overflowing row alone (a 0-d result) gives the same value as within the array.
    i = int(np.argmax(np.isinf(direct)))
    alone = _bgnbd_expected(t[i], x[i], t_x[i], big_t[i], model)  # type: ignore[arg-type]
    assert alone.shape == () and alone == got[i]
