"""Hypothesis properties of the transforms: money is conserved, ratios are never inf or NaN."""

from __future__ import annotations

import math
from decimal import Decimal

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adperf import warehouse
from adperf.fx import FxTable, convert_micros
from adperf.transform import contribution, metrics
from adperf.transform.attribution import (
    build_attribution,
    build_reconciliation,
    build_user_map,
)

DAY = "2026-11-20"
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

users = st.sampled_from([f"u{i}" for i in range(8)])
platforms = st.sampled_from(["facebook", "google_ads", "other", "organic", "restricted"])


@st.composite
def installs_and_payments(draw: st.DrawFn) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Installs (some users twice, some never) and one day's payments, refunds included."""
    n = draw(st.integers(0, 12))
    rows = []
    for k in range(n):
        platform = draw(platforms)
        paid = platform not in ("organic", "restricted")
        rows.append(
            {
                "user_pid": draw(st.one_of(st.none(), users)),
                "date": f"2026-11-{draw(st.integers(1, 20)):02d}",
                "install_time": pd.Timestamp("2026-11-01", tz="UTC")
                + pd.Timedelta(minutes=draw(st.integers(0, 30_000))),
                "platform": platform,
                "campaign_id": f"c{k % 3}" if paid else None,
                "campaign_name": f"name{k % 2}" if paid else None,
                "adset_id": f"s{k % 4}" if paid else None,
                "ad_id": f"a{k}" if paid else None,
            }
        )
    columns = ["user_pid", "date", "install_time", "platform", "campaign_id", "campaign_name"]
    # Object columns even when empty, as the lake's string columns read back.
    installs = pd.DataFrame(rows, columns=[*columns, "adset_id", "ad_id"]).astype(
        {c: "object" for c in [*columns, "adset_id", "ad_id"] if c != "install_time"}
    )
    m = draw(st.integers(0, 15))
    payments = pd.DataFrame(
        {
            "date": [DAY] * m,
            "user_pid": [draw(users) for _ in range(m)],
            "kind": [draw(st.sampled_from(["purchase", "refund"])) for _ in range(m)],
            "amount_micros": [draw(st.integers(0, 10**11)) for _ in range(m)],
        }
    )
    payments = payments.astype({"date": "object", "user_pid": "object", "kind": "object"})
    sign = np.where(payments["kind"] == "refund", -1, 1)
    payments["amount_micros"] = (payments["amount_micros"] * sign).astype("int64")
    return installs, payments


@FAST
@given(installs_and_payments())
def test_attribution_conserves_revenue(data: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    installs, payments = data
    user_map = build_user_map(installs)
    attribution = build_attribution(DAY, payments, user_map)
    totals = build_reconciliation(DAY, payments, attribution)  # raises when it does not add up
    parts = sum(
        totals[f"{k}_micros"] for k in ("attributed", "organic", "unattributed", "restricted")
    )
    assert parts == totals["total_payments_micros"] == int(payments["amount_micros"].sum())
    # Each payer's money lands once: unattributed is exactly the payments of unmapped users.
    unmapped = ~payments["user_pid"].isin(user_map["user_pid"])
    assert totals["unattributed_micros"] == int(payments.loc[unmapped, "amount_micros"].sum())


@st.composite
def paid_matches(draw: st.DrawFn) -> tuple[pd.DataFrame, pd.DataFrame, float]:
    """Premium matches among a few users and the day's payments of some of them."""
    n = draw(st.integers(0, 20))
    events = pd.DataFrame(
        {
            "date": [DAY] * n,
            "event": ["match"] * n,
            "user_pid": [draw(users) for _ in range(n)],
            "peer_pid": [draw(st.one_of(st.none(), users)) for _ in range(n)],
            "premium": [draw(st.booleans()) for _ in range(n)],
        }
    )
    m = draw(st.integers(0, 10))
    payments = pd.DataFrame(
        {
            "date": [DAY] * m,
            "user_pid": [draw(users) for _ in range(m)],
            "kind": ["purchase"] * m,
            "amount_micros": [draw(st.integers(1, 10**10)) for _ in range(m)],
        }
    )
    return events, payments, draw(st.sampled_from([0.0, 0.1, 0.2, 0.5]))


@FAST
@given(paid_matches())
def test_shapley_shares_sum_to_each_payers_revenue(
    data: tuple[pd.DataFrame, pd.DataFrame, float],
) -> None:
    events, payments, share = data
    shares = contribution.match_shapley(DAY, events, payments, share)
    revenue = payments.groupby("user_pid")["amount_micros"].sum()
    for payer, group in shares.groupby("payer_pid"):
        assert math.isclose(group["share_micros"].sum(), revenue[payer], rel_tol=1e-9)
        assert (group["share_micros"] >= 0).all()
    user_map = pd.DataFrame(
        {
            "user_pid": [f"u{i}" for i in range(8)],
            "install_date": DAY,
            "platform": ["facebook", "google_ads", "organic", "facebook"] * 2,
            "campaign_id": ["c1", "g1", None, "c2"] * 2,
            "campaign_name": None,
            "adset_id": None,
            "ad_id": None,
        }
    )
    credit = contribution.build_shapley(DAY, events, payments, user_map, share)
    matched = int(revenue.reindex(shares["payer_pid"].unique()).sum()) if len(shares) else 0
    channel = int(credit["shapley_channel_micros"].sum()) if len(credit) else 0
    assert channel == matched  # integer micros, largest remainder: exact


@FAST
@given(
    st.integers(1, 5),
    st.lists(st.integers(1, 4), min_size=1, max_size=4),
    st.sampled_from([0.0, 0.2, 0.5]),
)
def test_closed_form_shapley_is_the_exact_shapley_value(
    revenue: int, weights: list[int], share: float
) -> None:
    partners = {f"p{i}": w for i, w in enumerate(weights)}
    players = ["payer", *partners]

    def value(coalition: frozenset[int]) -> float:
        names = frozenset(players[i] for i in coalition)
        return contribution.match_value(names, "payer", partners, float(revenue), share)

    exact = contribution.shapley_values(len(players), value)
    total = sum(weights)
    closed = [(1 - share) * revenue] + [share * revenue * w / total for w in weights]
    assert np.allclose(exact, closed)
    assert math.isclose(exact.sum(), revenue)


money = st.integers(-(10**12), 10**12)


@FAST
@given(st.lists(st.tuples(money, st.integers(0, 10**12)), min_size=1, max_size=30))
def test_ratios_are_never_inf_or_nan_where_the_denominator_is_zero(
    pairs: list[tuple[int, int]],
) -> None:
    num = pd.Series([p[0] for p in pairs], dtype="int64")
    den = pd.Series([p[1] for p in pairs], dtype="int64")
    for ratio in (metrics.roas(num, den), metrics.proas(num, den)):  # every ratio's one place
        values = ratio.to_numpy(dtype="float64", na_value=np.nan)
        assert not np.isinf(values).any()
        zero = (den == 0).to_numpy()
        assert np.isnan(values[zero]).all()  # NULL, not 0 and not inf
        assert not np.isnan(values[~zero]).any()
    # And the warehouse writes a missing ratio as NULL, whatever float it is.
    frame = pd.DataFrame({"roas": [math.inf, -math.inf, math.nan, 1.5]})
    rows = warehouse._clean  # noqa: SLF001 - the one place NaN/inf become NULL
    assert [rows(v) for v in frame["roas"]] == [None, None, None, 1.5]


@FAST
@given(
    st.lists(st.integers(-(10**13), 10**13), min_size=1, max_size=20),
    st.decimals(min_value=Decimal("0.0001"), max_value=Decimal("5000"), places=6),
)
def test_currency_conversion_round_trips_within_a_micro(amounts: list[int], rate: Decimal) -> None:
    """USD→XXX at `rate` and back at 1/rate: within a micro when rate ≥ 1, and within the
    information the first rounding lost (0.5 / rate micros) otherwise."""
    inverse = Decimal(1) / rate  # 28 significant digits
    there = FxTable("USD", {(DAY, "XXX"): rate})
    back = FxTable("XXX", {(DAY, "USD"): inverse})
    n = len(amounts)
    _, converted = convert_micros(
        pd.Series(amounts), pd.Series(["XXX"] * n), pd.Series([DAY] * n), there
    )
    for a, c in zip(amounts, converted, strict=True):
        assert c == int((Decimal(a) * rate).to_integral_value(rounding="ROUND_HALF_EVEN"))
    _, returned = convert_micros(
        pd.Series(converted), pd.Series(["USD"] * n), pd.Series([DAY] * n), back
    )
    bound = 1 + (Decimal("0.5") / rate if rate < 1 else 0)
    assert all(abs(r - a) <= bound for r, a in zip(returned, amounts, strict=True))
