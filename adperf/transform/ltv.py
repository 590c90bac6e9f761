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
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from autograd import value_and_grad
from lifetimes import BetaGeoFitter, GammaGammaFitter
from lifetimes.utils import ConvergenceError
from scipy.interpolate import CubicSpline
from scipy.optimize import minimize
from scipy.special import hyp2f1

from adperf.errors import AdperfError
from adperf.schema import MICROS
from adperf.vocabulary import INSTALL_BUCKETS, UNATTRIBUTED

MODEL_NAME = "bgnbd_gammagamma"
RFM_COLUMNS = ["frequency", "recency", "T", "monetary_value", "first_purchase_date"]
COHORT_PLTV_COLUMNS = [
    "date",  # the cohort's install day
    "level",  # 'campaign' or 'adset'
    "platform",
    "campaign_id",
    "adset_id",  # None at campaign level
    "installs",  # all installs, with or without a user id
    "users",  # installs with a user id (the users valued)
    "payers",
    "realized_micros",
    "pltv_micros",
    "pltv_low_micros",
    "pltv_high_micros",
]

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


def _day_number(dates: pd.Series | pd.Index) -> np.ndarray:
    """'YYYY-MM-DD' strings -> int64 days since 1970-01-01.

    Arrow parses the strings in C++ (pandas' arrow-backed strings pass without a copy); going
    through Python str objects cost seconds per million payments.
    """
    try:
        parsed = pa.array(dates, from_pandas=True).cast(pa.date32())
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise ValueError(f"dates are not 'YYYY-MM-DD' strings: {exc}") from exc
    if parsed.null_count:
        raise ValueError("dates are not 'YYYY-MM-DD' strings: a date is missing")
    return np.asarray(parsed.cast(pa.int32()).to_numpy(), dtype=np.int64)


def _day_of(day: str) -> int:
    return int(_day_number(pd.Index([day]))[0])


@dataclass
class _Payments:
    """Payments as arrays sorted by (user, day): user code, day, micros."""

    user: np.ndarray
    day: np.ndarray
    amount: np.ndarray
    ids: _UserCodes  # user code <-> user_pid, payments' rows then `extra_ids`'
    extra: np.ndarray  # the codes of `extra_ids` given to _encode (-1: null)
    # _net_days by (first_day, last_day): the day's RFM, segments and backtest ask for the same
    # windows again (read-only arrays, so a caller cannot change what the next one gets).
    net_memo: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = field(
        default_factory=dict
    )


@dataclass
class _UserCodes:
    """Integer codes of string user ids, in order of first appearance (pd.factorize's codes)."""

    codes: np.ndarray  # int64 per id, -1 for null
    n_codes: int
    source: pa.ChunkedArray  # the ids that were encoded

    def names(self, codes: np.ndarray) -> np.ndarray:
        """The user_pid strings of `codes` (object array)."""
        some_row = np.zeros(self.n_codes, dtype=np.int64)
        valid = np.flatnonzero(self.codes >= 0)
        # Any row of a code will do: every row of a code holds the same string.
        some_row[self.codes[valid]] = valid
        return np.asarray(self.source.take(some_row[codes]).to_pylist(), dtype=object)


def _strided_words(buffer: pa.Buffer, offset: int, stride: int, n: int) -> np.ndarray:
    """n little-endian uint64 read from buffer at offset, offset + stride, ... (a copy)."""
    view = np.ndarray((n,), dtype="<u8", buffer=buffer, offset=offset, strides=(stride,))
    return view.astype(np.uint64)


def _fixed_width_words(ids: pa.ChunkedArray) -> list[np.ndarray] | None:
    """Each id as uint64 words that together determine it (equal words <=> equal ids), or None
    unless every id has the same byte length (>= 8) and none is null.

    Pseudonyms are fixed-width hex, so this reads the Arrow buffers in place: no Python str,
    no string hash table.
    """
    if ids.null_count or len(ids) == 0:
        return None
    parts: list[list[np.ndarray]] = []
    width = -1
    for chunk in ids.chunks:
        if len(chunk) == 0:
            continue
        large = pa.types.is_large_string(chunk.type) or pa.types.is_large_binary(chunk.type)
        if not (large or pa.types.is_string(chunk.type) or pa.types.is_binary(chunk.type)):
            return None
        offsets = np.frombuffer(chunk.buffers()[1], dtype=np.int64 if large else np.int32)
        offsets = offsets[chunk.offset : chunk.offset + len(chunk) + 1].astype(np.int64)
        lengths = np.diff(offsets)
        size = int(lengths[0])
        if size < 8 or (width >= 0 and size != width) or np.any(lengths != size):
            return None
        width = size
        data = chunk.buffers()[2]
        base = int(offsets[0])
        words = []
        # Whole words aligned to the end of each id, then the bytes left at its front (masked
        # out of a word read from the id's start: little-endian, so the low bytes).
        for start in range(size - 8, -1, -8):
            words.append(_strided_words(data, base + start, size, len(chunk)))
        if size % 8:
            front = _strided_words(data, base, size, len(chunk))
            words.append(front & np.uint64((1 << (8 * (size % 8))) - 1))
        parts.append(words)
    if not parts:
        return None
    return [np.concatenate([p[j] for p in parts]) for j in range(len(parts[0]))]


def _mix_words(words: list[np.ndarray]) -> np.ndarray:
    """One uint64 per row from several (a multiplicative mix; may join two rows: check)."""
    key = words[0].copy()
    for w in words[1:]:
        key *= np.uint64(0x9E3779B97F4A7C15)
        key ^= w
    return key


def _user_codes(ids: pa.ChunkedArray) -> _UserCodes:
    """Codes of user ids in order of first appearance, nulls -1 (what pd.factorize gives).

    A string hash table over millions of ids was a third of the 1M-customer LTV run (pandas
    3's Arrow strings hash slowly, and the table is far larger than the caches). Fixed-width
    ids (pseudonyms: 32 hex digits) become one uint64 key each, a mix of their 8-byte words,
    hashed as integers; a check that every word agrees within each code catches a mix that
    joined two ids (then the string path runs).
    """
    words = _fixed_width_words(ids)
    if words is not None:
        words = [w for w in words if np.any(w != w[0])] or words[:1]  # drop common prefixes
        codes, uniques = pd.factorize(_mix_words(words))
        codes = codes.astype(np.int64)
        # The mix of several words may join two ids: every word must agree within a code.
        some_row = np.zeros(len(uniques), dtype=np.int64)
        some_row[codes] = np.arange(len(codes))
        if len(words) == 1 or all(np.array_equal(w[some_row][codes], w) for w in words):
            return _UserCodes(codes, len(uniques), ids)
    slow_codes, slow_uniques = pd.factorize(pd.Series(ids.to_pandas()))
    return _UserCodes(slow_codes.astype(np.int64), len(slow_uniques), ids)


def _id_chunks(values: pd.Series) -> pa.ChunkedArray:
    """A string Series as Arrow (zero-copy for pandas' Arrow-backed strings)."""
    arr = pa.array(values, from_pandas=True)
    return arr if isinstance(arr, pa.ChunkedArray) else pa.chunked_array([arr])


def _encode(payments: pd.DataFrame, extra_ids: pd.Series | None = None) -> _Payments:
    """Payments with integer user codes, sorted once; `extra_ids` (installs') share the codes.

    Strings are encoded once here: every later group-by runs on sorted integers, which at a
    million customers is the difference between seconds and minutes.
    """
    chunks = list(_id_chunks(payments["user_pid"]).chunks)
    if extra_ids is not None:
        chunks += list(_id_chunks(extra_ids).chunks)
    types = {c.type for c in chunks}
    target = pa.large_string() if pa.large_string() in types else pa.string()
    ids = pa.chunked_array([c.cast(target) for c in chunks], type=target)
    enc = _user_codes(ids)
    codes = enc.codes
    n = len(payments)
    user = codes[:n]
    day = _day_number(payments["date"]) if n else np.zeros(0, dtype=np.int64)
    # One int64 key sorts faster than a two-key lexsort; stable, so reruns order alike.
    lo = int(day.min()) if n else 0
    span = int(day.max()) - lo + 1 if n else 1
    order = np.argsort(user * span + (day - lo), kind="stable")
    return _Payments(
        user=user[order],
        day=day[order],
        amount=payments["amount_micros"].to_numpy(dtype=np.int64)[order],
        ids=enc,
        extra=codes[n:],
    )


def _net_days(
    enc: _Payments, first_day: int, last_day: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user, day, net micros) per user and day with first_day <= day <= last_day, sorted."""
    if (first_day, last_day) in enc.net_memo:
        return enc.net_memo[(first_day, last_day)]
    keep = (enc.day >= first_day) & (enc.day <= last_day)
    user, day, amount = enc.user[keep], enc.day[keep], enc.amount[keep]
    if len(user) == 0:
        empty = np.zeros(0, dtype=np.int64)
        out = (empty, empty.copy(), empty.copy())
    else:
        starts = np.flatnonzero(np.r_[True, (user[1:] != user[:-1]) | (day[1:] != day[:-1])])
        out = (user[starts], day[starts], np.add.reduceat(amount, starts))
    for arr in out:
        arr.flags.writeable = False
    enc.net_memo[(first_day, last_day)] = out
    return out


def _rfm_codes(
    user: np.ndarray, day: np.ndarray, net: np.ndarray, as_of_day: int, unit_days: int = 1
) -> pd.DataFrame:
    """RFM per user code (index) from sorted net days: frequency, recency, T, monetary_value,
    first_day. A purchase day is a day with positive net revenue (refunds net on their day)."""
    bought = net > 0
    user, day, net = user[bought], day[bought], net[bought]
    if len(user) == 0:
        frame = pd.DataFrame(
            {
                "frequency": pd.Series(dtype="int64"),
                "recency": pd.Series(dtype="float64"),
                "T": pd.Series(dtype="float64"),
                "monetary_value": pd.Series(dtype="float64"),
                "first_day": pd.Series(dtype="int64"),
            }
        )
        frame.index = pd.Index([], dtype="int64", name="user")
        return frame
    starts = np.flatnonzero(np.r_[True, user[1:] != user[:-1]])
    ends = np.r_[starts[1:], len(user)] - 1
    n = ends - starts + 1
    first, last = day[starts], day[ends]
    total = np.add.reduceat(net, starts)
    frequency = (n - 1).astype(np.int64)
    # The first purchase is excluded from monetary value, as in lifetimes: Gamma-Gamma models
    # the spend of repeat transactions only.
    repeat_total = (total - net[starts]).astype("float64")
    monetary = np.where(frequency > 0, repeat_total / np.maximum(frequency, 1) / MICROS, 0.0)
    frame = pd.DataFrame(
        {
            "frequency": frequency,
            "recency": (last - first) / unit_days,
            "T": (as_of_day - first) / unit_days,
            "monetary_value": monetary.astype("float64"),
            "first_day": first,
        },
        index=pd.Index(user[starts], name="user"),
    )
    return frame


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
    as_of_day = _day_of(as_of)
    enc = _encode(payments[["user_pid", "date", "amount_micros"]])
    rfm = _rfm_codes(*_net_days(enc, as_of_day - history_days + 1, as_of_day), as_of_day, unit_days)
    first = rfm.pop("first_day").to_numpy().astype("datetime64[D]")
    rfm["first_purchase_date"] = pd.Series(np.datetime_as_string(first), index=rfm.index).astype(
        "str"
    )
    rfm.index = pd.Index(enc.ids.names(rfm.index.to_numpy()), dtype="str", name="user_pid")
    return rfm.sort_index()


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
    fitter = _BetaGeo(penalizer_coef=penalizer)
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


# --- cohort value per campaign and adset ------------------------------------------------------

LEVELS = ("campaign", "adset")
_LEVEL_KEYS = {
    "campaign": ["platform", "campaign_id"],
    "adset": ["platform", "campaign_id", "adset_id"],
}
INTERVAL = (0.05, 0.95)  # a 90% interval
BOOTSTRAP_REPLICATES = 200
BACKTEST_DAYS = 90
# Hazard prior strength when the segments look alike (no between-segment variance measured):
# effectively the pooled curve.
_FULL_POOLING = 1e9


def _segment_ids(frame: pd.DataFrame) -> pd.DataFrame:
    """platform / campaign_id / adset_id; organic and restricted ids are their bucket's name,
    missing ids 'unattributed'."""
    out = pd.DataFrame({"platform": frame["platform"].astype("str")}, index=frame.index)
    bucket = out["platform"].isin(INSTALL_BUCKETS)
    for col in ("campaign_id", "adset_id"):
        ids = frame[col] if col in frame.columns else pd.Series(None, index=frame.index)
        ids = ids.astype("object").where(ids.notna(), UNATTRIBUTED)
        out[col] = ids.where(~bucket, out["platform"]).astype("str")
    return out


@dataclass
class _Prepared:
    """Payments and installs with integer user codes and day numbers, encoded once per day."""

    pay: _Payments
    installs: pd.DataFrame
    user: np.ndarray  # installs' user codes (-1: no user id)
    day: np.ndarray  # installs' day numbers
    time: np.ndarray  # installs' install_time (int64, for ordering)
    adset: np.ndarray  # installs' row of `adsets`
    adsets: pd.DataFrame  # _segment_ids' distinct (platform, campaign_id, adset_id), sorted
    by_time: np.ndarray  # install rows sorted by (day, install_time), stable


def _prepare(payments: pd.DataFrame, installs: pd.DataFrame) -> _Prepared:
    pay = _encode(payments[["user_pid", "date", "amount_micros"]], installs["user_pid"])
    if "install_time" in installs.columns:
        times = pd.to_datetime(installs["install_time"], utc=True)
        time = times.dt.tz_localize(None).to_numpy(dtype="datetime64[us]").astype(np.int64)
    else:
        time = np.zeros(len(installs), dtype=np.int64)
    installs = installs.reset_index(drop=True)
    day = _day_number(installs["date"]) if len(installs) else np.zeros(0, dtype=np.int64)
    adset, adsets = _adset_codes(installs)
    return _Prepared(
        pay=pay,
        installs=installs,
        user=pay.extra,
        day=day,
        time=time,
        adset=adset,
        adsets=adsets,
        # Install rows by (day, time): each as-of day's first install per user reads it.
        by_time=np.lexsort((time, day)),
    )


def _column_codes(values: pd.Series) -> tuple[np.ndarray, int]:
    """Codes of a column's distinct values (nulls one more value) and how many there are."""
    try:
        arr = pa.array(values, from_pandas=True)
        if isinstance(arr, pa.ChunkedArray):
            # One array: Arrow cannot unify chunked dictionaries that encode nulls.
            arr = arr.combine_chunks()
        encoded = pc.dictionary_encode(arr, "encode")
        return encoded.indices.to_numpy(zero_copy_only=False), len(encoded.dictionary)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        codes, uniques = pd.factorize(values.astype("object"), use_na_sentinel=False)
        return codes, len(uniques)


def _adset_codes(installs: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
    """Per install: its row of the sorted distinct _segment_ids (platform, campaign_id,
    adset_id), and those rows.

    Segment ids are strings: encoded once here, so every as-of day (today, the backtest's)
    groups integers. The few distinct raw id combinations are found by dictionary-encoding
    each column in Arrow (a hash table of a few hundred strings) and _segment_ids applied to
    them only, not to a million rows.
    """
    raw_cols = [c for c in ("platform", "campaign_id", "adset_id") if c in installs.columns]
    combo, bound = np.zeros(len(installs), dtype=np.int64), 1
    for col in raw_cols:
        idx, size = _column_codes(installs[col])
        if bound * max(size, 1) >= 2**62:  # keep the packed key inside int64
            codes, uniques = pd.factorize(combo)
            combo, bound = codes.astype(np.int64), max(len(uniques), 1)
        combo = combo * max(size, 1) + idx.astype(np.int64)
        bound *= max(size, 1)
    combo_code, combos = pd.factorize(combo)
    some_row = np.zeros(len(combos), dtype=np.int64)
    some_row[combo_code] = np.arange(len(combo_code))  # any row: all rows of a combo agree
    ids = _segment_ids(installs.iloc[some_row].reset_index(drop=True))
    cols = _LEVEL_KEYS["adset"]
    group = ids.groupby(cols, sort=True).ngroup().to_numpy(dtype=np.int64)
    first = np.unique(group, return_index=True)[1]
    return group[combo_code], ids.iloc[first][cols].reset_index(drop=True)


def _user_table(
    prep: _Prepared, as_of_day: int, net: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> pd.DataFrame:
    """Per installed user (index: user code): adset (row of prep.adsets), install day, first
    paid day, revenue.

    A user belongs to the first install on record (up to as_of). Revenue counts from the install
    day on: a payment before it is a returning customer's, not this install's. A purchase day
    is a day with positive net revenue; first_paid_day is NaN for users who have not paid.
    repeat_days / repeat_micros: the purchase days after the first and their revenue.
    `net` is _net_days over the history window up to as_of.
    """
    order = prep.by_time
    order = order[(prep.user[order] >= 0) & (prep.day[order] <= as_of_day)]
    first = np.sort(order[~pd.Series(prep.user[order]).duplicated().to_numpy()])
    code, install_day = prep.user[first], prep.day[first]
    users = pd.DataFrame({"adset": prep.adset[first]}, index=pd.Index(code, name="user"))
    users["install_day"] = install_day
    n_codes = prep.pay.ids.n_codes
    installed = np.full(n_codes, np.iinfo(np.int64).max, dtype=np.int64)
    installed[code] = install_day
    p_user, p_day, p_net = net
    mine = p_day >= installed[p_user]
    p_user, p_day, p_net = p_user[mine], p_day[mine], p_net[mine]
    # Float sums of int64 micros are exact below 2**53 micros (9 billion currency units).
    realized = np.rint(np.bincount(p_user, weights=p_net, minlength=n_codes)).astype(np.int64)
    users["realized_micros"] = realized[code]
    bought = p_net > 0
    b_user, b_day, b_net = p_user[bought], p_day[bought], p_net[bought]
    first_paid = np.full(n_codes, np.nan)
    first_micros = np.zeros(n_codes, dtype=np.int64)
    repeat_days = np.zeros(n_codes, dtype=np.int64)
    repeat_micros = np.zeros(n_codes, dtype=np.int64)
    if len(b_user):
        # Sorted by (user, day): each user's first purchase day opens its run.
        starts = np.flatnonzero(np.r_[True, b_user[1:] != b_user[:-1]])
        who = b_user[starts]
        first_paid[who] = b_day[starts]
        first_micros[who] = b_net[starts]
        repeat_days[who] = np.diff(np.r_[starts, len(b_user)]) - 1
        repeat_micros[who] = np.add.reduceat(b_net, starts) - b_net[starts]
    users["first_paid_day"] = first_paid[code]
    users["first_day_micros"] = first_micros[code]
    users["repeat_days"] = repeat_days[code]
    users["repeat_micros"] = repeat_micros[code]
    return users


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
    tau2 = _dersimonian_laird(dev[has], own_var[has])
    weight = np.where(has, tau2 / np.maximum(tau2 + own_var, 1e-300), 0.0)
    post = prior + weight * dev
    post_var = np.where(has, weight * own_var, tau2) + (1 - weight) ** 2 * prior_sd**2
    return post, np.sqrt(post_var)


def _dersimonian_laird(dev: np.ndarray, var: np.ndarray) -> float:
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
        tau2 = _dersimonian_laird(p_raw[has] - p_prior[has], binomial)
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
        # lifetimes' switch to Euler's transformation where the direct series overflows.
        alt = np.log(hyp2f1(_c - _a, _c - _b, _c, z)) + (_c - _a - _b) * np.log1p(-z)
        ln_hyp = np.where(np.isinf(ln_hyp), alt, ln_hyp)
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


WINDOW_COLUMNS = [
    "date",  # the report day; the window is the `window_days` install days up to it
    "level",
    "platform",
    "campaign_id",
    "adset_id",
    "window_days",
    "cohorts",  # install days of the window with users of the segment
    "installs",
    "users",
    "payers",
    "realized_micros",
    "pltv_micros",
    "pltv_low_micros",
    "pltv_high_micros",
]
DRAW_COLUMNS = ["date", "level", "platform", "campaign_id", "adset_id", "draw", "pltv_micros"]


def build_pltv_window(
    day: str,
    model: dict[str, Any],
    payments: pd.DataFrame,
    installs: pd.DataFrame,
    *,
    window_days: int,
    history_days: int = 365,
    horizon_days: int = 365,
    discount_rate_annual: float = 0.0,
    replicates: int = BOOTSTRAP_REPLICATES,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The install cohorts of the `window_days` days to `day`, valued as of `day` and pooled per
    campaign and adset: (one row each with its 90% interval, its bootstrap draws).

    Each cohort is valued as build_cohort_pltv values it at its age: an old cohort mostly by
    the revenue it has realized, a young one mostly by its segment's shrunk parameters. The
    draws add the cohorts' user bootstraps with one draw of the segment parameters shared by
    every cohort of the window (they are the same parameters), so a window of young cohorts
    stays as uncertain as its campaign's parameters. `model` is the day's `ltv_model` row.
    """
    found = model_from_row(model)
    if found is None or window_days < 1:
        return _empty_window(), _empty_draws()
    prep = _prepare(payments, installs)
    as_of_day = _day_of(day)
    if not ((prep.day > as_of_day - window_days) & (prep.day <= as_of_day)).any():
        return _empty_window(), _empty_draws()
    fitted = found[1]
    rfm = _rfm_codes(*_net_days(prep.pay, as_of_day - history_days + 1, as_of_day), as_of_day)
    fit = _fit_segments(prep, as_of_day, fitted, history_days, grid=horizon_days + history_days + 1)
    rng = np.random.default_rng([seed, as_of_day, window_days])
    shared = {
        level: rng.standard_normal((4, replicates, len(fit.segments[level].keys)))
        for level in LEVELS
    }
    pooled: dict[str, dict[str, np.ndarray]] = {}
    for cohort_day in range(as_of_day - window_days + 1, as_of_day + 1):
        values = _cohort_values(
            fit,
            fitted,
            rfm,
            prep.installs[prep.day == cohort_day],
            cohort_day,
            horizon_days=horizon_days,
            discount_rate_annual=discount_rate_annual,
            replicates=replicates,
            seed=seed,
            parameter_draws=shared,
        )
        for level, v in (values or {}).items():
            scaled = {
                "cohorts": (v.users > 0).astype("float64"),
                "installs": v.installs.astype("float64"),
                "users": v.users,
                "payers": v.payers,
                "realized": v.realized,
                "point": v.point * v.scale,
                "draws": (v.point if v.draws is None else v.draws) * v.scale,
            }
            acc = pooled.setdefault(level, {n: np.zeros_like(a) for n, a in scaled.items()})
            for name, arr in scaled.items():
                acc[name] = acc[name] + arr
    return _window_frames(day, window_days, fit, pooled, replicates)


def _window_frames(
    day: str,
    window_days: int,
    fit: _Fitted,
    pooled: dict[str, dict[str, np.ndarray]],
    replicates: int,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """build_pltv_window's two frames from the pooled sums per level."""
    windows, draws = [], []
    for level, acc in pooled.items():
        keys = fit.segments[level].keys[_LEVEL_KEYS[level]]
        low, high = acc["point"], acc["point"]
        if replicates > 0:
            low, high = np.quantile(acc["draws"], INTERVAL, axis=0)
        frame = _cohort_frame(
            day,
            level,
            keys,
            {
                "window_days": np.full(len(keys), window_days, dtype="int64"),
                "cohorts": acc["cohorts"].astype("int64"),
                "installs": acc["installs"].astype("int64"),
                "users": acc["users"].astype("int64"),
                "payers": acc["payers"].astype("int64"),
                "realized_micros": np.round(acc["realized"] * MICROS).astype("int64"),
                "pltv_micros": np.round(acc["point"] * MICROS).astype("int64"),
                "pltv_low_micros": np.round(low * MICROS).astype("int64"),
                "pltv_high_micros": np.round(high * MICROS).astype("int64"),
            },
        )
        has = acc["users"] > 0
        windows.append(frame[has])
        if replicates > 0:
            rows = frame.loc[has, DRAW_COLUMNS[:5]]
            long = rows.loc[rows.index.repeat(replicates)].reset_index(drop=True)
            long["draw"] = np.tile(np.arange(replicates, dtype="int64"), int(has.sum()))
            long["pltv_micros"] = np.round(acc["draws"][:, has].T.ravel() * MICROS).astype("int64")
            draws.append(long)
    window = pd.concat(windows or [_empty_window()], ignore_index=True)
    drawn = pd.concat(draws or [_empty_draws()], ignore_index=True)
    return window[WINDOW_COLUMNS], drawn[DRAW_COLUMNS]


def _empty_window() -> pd.DataFrame:
    out = pd.DataFrame({c: pd.Series(dtype="int64") for c in WINDOW_COLUMNS})
    for c in ("date", "level", "platform", "campaign_id", "adset_id"):
        out[c] = out[c].astype("str")
    return out


def _empty_draws() -> pd.DataFrame:
    out = pd.DataFrame({c: pd.Series(dtype="int64") for c in DRAW_COLUMNS})
    for c in ("date", "level", "platform", "campaign_id", "adset_id"):
        out[c] = out[c].astype("str")
    return out


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
        counted = all_ids.groupby(key_cols).size().rename("n").reset_index()
        installs_all = (
            seg.keys[key_cols].merge(counted, on=key_cols, how="left")["n"].fillna(0).to_numpy()
        )
        installs_all = np.maximum(installs_all, n_users)
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


def _bootstrap_draws(
    z: np.ndarray,
    weights: np.ndarray,
    codes: np.ndarray,
    k: int,
    realized: np.ndarray,
    own: np.ndarray,
    prior_w: np.ndarray,
    nonpayer: np.ndarray,
    seg: _Segments,
    convert: np.ndarray,
    repeats: np.ndarray,
) -> np.ndarray:
    """(replicates, k): a Poisson bootstrap over users (`weights`, one row per replicate) with
    draws of the segment parameters (`z`: (4, replicates, k) standard normals)."""
    # Bootstrap replicates: per-segment sums of weighted user values per replicate, summed
    # over runs of users sorted by segment (a users x segments 0/1 matrix product cost ~0.5 s
    # per 1M-customer day in multiplications by zero).
    order = np.argsort(codes, kind="stable")
    sorted_codes = codes[order]
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    present = sorted_codes[starts]
    w_sorted = weights[:, order]

    def by_segment(x: np.ndarray) -> np.ndarray:
        out = np.zeros((weights.shape[0], k))
        if len(order):
            out[:, present] = np.add.reduceat(w_sorted * x[order], starts, axis=1)
        return out

    b_realized, b_own = by_segment(realized), by_segment(own)
    b_prior, b_nonpayers = by_segment(prior_w), by_segment(nonpayer)
    # Repeat revenue taken as proportional to the rate (exact for small rate x horizon).
    rate = np.maximum(1.0 + seg.rate_sd / seg.rate * z[0], 0.0)
    spend = np.maximum(seg.spend + seg.spend_sd * z[1], 0.0)
    first = np.maximum(seg.first_units + seg.first_sd * z[2], 0.0)
    conv = np.maximum(1.0 + seg.conv_rel_sd * z[3], 0.0)
    draws: np.ndarray = (
        b_realized
        + rate * (b_own + spend * b_prior)
        + b_nonpayers * conv * (convert * first + rate * spend * repeats)
    )
    return draws


def _empty_pltv() -> pd.DataFrame:
    out = pd.DataFrame({c: pd.Series(dtype="int64") for c in COHORT_PLTV_COLUMNS})
    for c in ("date", "level", "platform", "campaign_id", "adset_id"):
        out[c] = out[c].astype("str")
    return out


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


def model_row(
    day: str,
    model: LtvModel,
    *,
    model_date: str | None = None,
    backtest_result: tuple[float, float, int] | None = None,
    backtest_source: str = "fitted",
) -> dict[str, Any]:
    """One `ltv_model` report-table row for `day`; model_date is the day the model was fitted.

    backtest_source: 'stored' when the backtest's model was that day's own `ltv_model`,
    'fitted' when it had to be fitted again.
    """
    params: dict[str, Any] = {
        "bgnbd": model.bgnbd,
        "gammagamma": model.gammagamma,
        "penalizer": model.penalizer,
        "n_repeat": model.n_repeat,
    }
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
    row, model = _fit_row(day, rfm, initial, initial_date)
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
        day, model, model_date=row["model_date"], backtest_result=result, backtest_source=source
    )
    return row, pltv


def _fit_row(
    day: str, rfm: pd.DataFrame, initial: LtvModel | None, initial_date: str | None
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
    return model_row(day, model, model_date=model_date), model


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
    initial: LtvModel | None = None,
    initial_date: str | None = None,
) -> dict[str, Any]:
    """The day's `ltv_model` row fitted on the payment history alone (no installs, no backtest).

    The same fit as build_ltv's: `initial` warm-starts it and is the fallback (converged=False,
    model_date=initial_date); without any usable model the row carries the reason.
    """
    as_of_day = _day_of(day)
    enc = _encode(payments[["user_pid", "date", "amount_micros"]])
    rfm = _rfm_codes(*_net_days(enc, as_of_day - history_days + 1, as_of_day), as_of_day)
    row, _ = _fit_row(day, rfm, initial, initial_date)
    return row


BACKTEST_COLUMNS = ["backtest_mape", "backtest_bias", "backtest_campaigns", "backtest_model"]


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
