"""The sandbox's true purchase process: first-purchase delay, BG/NBD repeats, Gamma-Gamma amounts.

All samplers are vectorized over payers (parameters are per-payer arrays) and take the
generator to draw from, so the world and the Monte Carlo truth run the very same process.
Times are in days since install.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

MAX_FIRST_DELAY_DAYS = 60.0
# Store prices: nothing below $0.99 or above $499.99, as in the app stores' price tiers.
MIN_PRICE_CENTS = 99
MAX_PRICE_CENTS = 49_999
REFUND_RATE = 0.03


@dataclass(frozen=True)
class PayerTruth:
    """True payer behaviour of one campaign (or of organic users)."""

    payer_rate: float  # share of installs that ever pay
    fast_share: float  # share of payers whose first purchase comes from the fast delay curve
    fast_mean_days: float
    slow_mean_days: float
    r: float  # BG/NBD: purchase rate lambda ~ Gamma(r, scale=1/alpha), per day
    alpha: float
    a: float  # BG/NBD: drop-out after each repeat purchase p ~ Beta(a, b)
    b: float
    p: float  # Gamma-Gamma: amount z ~ Gamma(p, scale=1/nu), nu ~ Gamma(q, scale=1/v), USD
    q: float
    v: float

    @property
    def mean_purchase_usd(self) -> float:
        """E[z] of the Gamma-Gamma model before price clamping (needs q > 1)."""
        return self.p * self.v / (self.q - 1.0)


def sample_first_delay(
    rng: np.random.Generator, fast_share: FloatArray, fast_mean: FloatArray, slow_mean: FloatArray
) -> FloatArray:
    """Days from install to first purchase: a fast and a slow exponential, cut at 60 days."""
    n = len(fast_share)
    fast = rng.random(n) < fast_share
    mean = np.where(fast, fast_mean, slow_mean)
    # Inverse CDF of the exponential truncated at MAX_FIRST_DELAY_DAYS: no tail beyond it.
    cap = -np.expm1(-MAX_FIRST_DELAY_DAYS / mean)
    out: FloatArray = -mean * np.log1p(-rng.random(n) * cap)
    return out


def sample_repeat_times(
    rng: np.random.Generator,
    t0: FloatArray,
    horizon: FloatArray,
    r: FloatArray,
    alpha: FloatArray,
    a: FloatArray,
    b: FloatArray,
) -> tuple[IntArray, FloatArray]:
    """BG/NBD repeat purchases after a first purchase at t0, up to `horizon` (days since install).

    Returns (payer index, time) per repeat purchase, sorted by payer then time. Exact and
    loop-free: the number of Poisson events in (t0, horizon] is M ~ Poisson(lambda * span), and
    given M their times are sorted uniforms; the payer drops out after the K-th repeat purchase,
    K ~ Geometric(p), so only the first min(M, K) survive.
    """
    lam = rng.gamma(r, 1.0 / alpha)
    # Beta draws can underflow to 0 when a < 1; Geometric needs p > 0.
    drop = np.clip(rng.beta(a, b), 1e-9, 1.0)
    span = np.maximum(horizon - t0, 0.0)
    m = rng.poisson(lam * span).astype(np.int64)
    k = rng.geometric(drop).astype(np.int64)
    n = np.minimum(m, k)
    owner = np.repeat(np.arange(len(t0), dtype=np.int64), m)
    u = rng.random(owner.size)
    u = u[np.lexsort((u, owner))]  # owner is already sorted: this sorts times within payer
    first = np.cumsum(m) - m
    rank = np.arange(owner.size, dtype=np.int64) - first[owner]
    keep = rank < n[owner]
    owner = owner[keep]
    times: FloatArray = t0[owner] + u[keep] * span[owner]
    return owner, times


def sample_nu(rng: np.random.Generator, q: FloatArray, v: FloatArray) -> FloatArray:
    """Per-payer Gamma-Gamma rate nu ~ Gamma(q, scale=1/v)."""
    out: FloatArray = rng.gamma(q, 1.0 / v)
    return out


def sample_amount_cents(rng: np.random.Generator, p: FloatArray, nu: FloatArray) -> IntArray:
    """Per-purchase amount z ~ Gamma(p, scale=1/nu) in USD cents, clamped to store prices."""
    z = rng.gamma(p, 1.0 / nu)
    cents: IntArray = np.clip(np.rint(z * 100.0), MIN_PRICE_CENTS, MAX_PRICE_CENTS).astype(np.int64)
    return cents


def expected_purchases_and_revenue(
    truth: PayerTruth, rng: np.random.Generator, n_payers: int, horizon_days: float
) -> tuple[float, float]:
    """Monte Carlo (purchases, gross USD revenue) per payer within `horizon_days` of install."""

    def full(x: float) -> FloatArray:
        return np.full(n_payers, x, dtype=np.float64)

    t0 = sample_first_delay(
        rng, full(truth.fast_share), full(truth.fast_mean_days), full(truth.slow_mean_days)
    )
    # Only counts are needed here, so skip the times: same law as sample_repeat_times.
    lam = rng.gamma(truth.r, 1.0 / truth.alpha, n_payers)
    drop = np.clip(rng.beta(truth.a, truth.b, n_payers), 1e-9, 1.0)
    m = rng.poisson(lam * np.maximum(horizon_days - t0, 0.0))
    k = rng.geometric(drop)
    counts = (t0 <= horizon_days) * (1 + np.minimum(m, k)).astype(np.int64)
    nu = sample_nu(rng, full(truth.q), full(truth.v))
    per_purchase_nu = np.repeat(nu, counts)
    cents = sample_amount_cents(rng, np.full(per_purchase_nu.size, truth.p), per_purchase_nu)
    return float(counts.mean()), float(cents.sum()) / 100.0 / n_payers
