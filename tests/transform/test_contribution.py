"""adperf.transform.contribution: PageRank vs hand-worked and dense solutions; assisted revenue."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from adperf.transform.contribution import (
    CONTRIBUTION_COLUMNS,
    PageRankNotConverged,
    build_contribution,
    pagerank,
)

D = 0.85
M = 1_000_000
DAY = "2024-03-10"


def dense_pagerank(
    src: list[int], dst: list[int], n: int, p: np.ndarray, weights: list[float] | None = None
) -> np.ndarray:
    """Stationary vector of the dense Google matrix by eigen-decomposition (no iteration)."""
    a = np.zeros((n, n))
    for i, (s, t) in enumerate(zip(src, dst, strict=True)):
        a[s, t] += 1.0 if weights is None else weights[i]
    p = p / p.sum()
    rows = a.sum(axis=1)
    transition = np.where(rows[:, None] > 0, a / np.where(rows > 0, rows, 1)[:, None], p[None, :])
    google = D * transition + (1 - D) * p[None, :]
    values, vectors = np.linalg.eig(google.T)
    v = np.real(vectors[:, np.argmin(np.abs(values - 1))])
    return v / v.sum()


def test_two_nodes_with_a_dangling_node_by_hand() -> None:
    # 0 -> 1, node 1 dangling, uniform teleport: x0 = d x1 / 2 + (1 - d) / 2 with x0 + x1 = 1
    # gives x0 = 1 / (2 + d).
    x = pagerank(np.array([0]), np.array([1]), 2)
    np.testing.assert_allclose(x, [1 / (2 + D), (1 + D) / (2 + D)], rtol=1e-9)


def test_personalization_by_hand() -> None:
    # Undirected 0 - 1, all teleport to 0: x0 = d x1 + (1 - d), x1 = d x0 -> x0 = 1 / (1 + d).
    x = pagerank(np.array([0, 1]), np.array([1, 0]), 2, personalization=np.array([3.0, 0.0]))
    np.testing.assert_allclose(x, [1 / (1 + D), D / (1 + D)], rtol=1e-9)


def test_four_nodes_against_dense_eigen_solve() -> None:
    # 0 -> 1, 0 -> 2, 1 -> 2, 2 -> 0, 3 -> 2 (3 has no in-links), weighted, uniform teleport.
    src, dst, w = [0, 0, 1, 2, 3], [1, 2, 2, 0, 2], [1.0, 3.0, 1.0, 2.0, 1.0]
    x = pagerank(np.array(src), np.array(dst), 4, weights=np.array(w))
    np.testing.assert_allclose(x, dense_pagerank(src, dst, 4, np.ones(4), w), rtol=1e-8)
    assert x.sum() == pytest.approx(1.0, abs=1e-12)
    assert x[3] == pytest.approx((1 - D) / 4, rel=1e-9)  # only teleport reaches node 3


def test_dangling_and_personalization_against_dense_eigen_solve() -> None:
    # Node 3 dangling, node 2 isolated-in; teleport and dangling mass go to node 0 and 2 (1:3).
    src, dst = [0, 1, 1, 2], [1, 0, 3, 3]
    p = np.array([1.0, 0.0, 3.0, 0.0])
    x = pagerank(np.array(src), np.array(dst), 4, personalization=p)
    np.testing.assert_allclose(x, dense_pagerank(src, dst, 4, p), rtol=1e-8)
    assert x.sum() == pytest.approx(1.0, abs=1e-12)


def test_duplicate_edges_add_their_weights() -> None:
    twice = pagerank(np.array([0, 0, 1, 2]), np.array([1, 1, 2, 0]), 3)
    weighted = pagerank(np.array([0, 1, 2]), np.array([1, 2, 0]), 3, weights=np.array([2.0, 1, 1]))
    np.testing.assert_allclose(twice, weighted, rtol=1e-12)


def test_pagerank_edge_cases() -> None:
    assert pagerank(np.array([], dtype=int), np.array([], dtype=int), 0).shape == (0,)
    np.testing.assert_allclose(
        pagerank(np.array([], dtype=int), np.array([], dtype=int), 3), [1 / 3] * 3
    )
    with pytest.raises(PageRankNotConverged, match="after 1 iterations"):
        pagerank(np.array([0]), np.array([1]), 2, max_iter=1)
    with pytest.raises(ValueError, match="node ids"):
        pagerank(np.array([0]), np.array([2]), 2)
    with pytest.raises(ValueError, match="personalization"):
        pagerank(np.array([0]), np.array([1]), 2, personalization=np.zeros(2))


# --- build_contribution ---------------------------------------------------------------------------


def events_frame(rows: list[tuple[str, str, str | None, bool | None]]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["event", "user_pid", "peer_pid", "premium"])
    df["date"] = DAY
    df["ts"] = pd.Timestamp(DAY, tz="UTC")
    df["premium"] = df["premium"].astype("boolean")
    return df


def payments_frame(rows: list[tuple[str, str, float]]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["date", "user_pid", "amount"])
    df["amount_micros"] = np.round(df["amount"] * M).astype("int64")
    return df.drop(columns="amount")


USER_MAP = pd.DataFrame(
    {
        "user_pid": ["X", "Y", "Z", "W", "P"],
        "platform": ["facebook", "google_ads", "organic", "facebook", "facebook"],
        "campaign_id": ["c1", "g1", None, "c1", "c9"],
    }
)


def as_dict(out: pd.DataFrame) -> dict[tuple[str, str], int]:
    return {(r.platform, r.campaign_id): r.assisted_revenue_micros for r in out.itertuples()}


def test_only_partner_of_the_only_payer_gets_the_whole_pool() -> None:
    events = events_frame([("match", "P", "X", True), ("login", "X", None, None)])
    payments = payments_frame(
        [
            (DAY, "P", 12.345678),
            ("2024-03-09", "P", 100.0),  # another day: not today's revenue
            (DAY, "Q", 5.0),  # a payer without a match: outside the pool
        ]
    )
    out = build_contribution(DAY, events, payments, USER_MAP)
    assert list(out.columns) == CONTRIBUTION_COLUMNS
    # 0.2 x 12,345,678 = 2,469,135.6 -> 2,469,136 micros.
    assert as_dict(out) == {("facebook", "c1"): 2_469_136}
    assert (out["date"] == DAY).all()
    assert out["assisted_revenue_micros"].dtype == np.int64


def test_two_partners_split_by_score_and_rows_sum_to_the_pool() -> None:
    events = events_frame(
        [
            ("match", "P", "X", True),  # weight 2
            ("match", "Y", "P", False),  # weight 1, either direction
            ("match", "Z", "W", None),  # not connected to a payer: no score, no credit
        ]
    )
    payments = payments_frame([(DAY, "P", 10.0)])
    out = build_contribution(DAY, events, payments, USER_MAP)
    # Star around P, all teleport to P: x_X = d x_P 2/3 and x_Y = d x_P / 3, so X:Y = 2:1 of
    # the 2,000,000 pool: 1,333,333.33 and 666,666.67 -> largest remainder gives Y the last unit.
    assert as_dict(out) == {("facebook", "c1"): 1_333_333, ("google_ads", "g1"): 666_667}
    assert out["assisted_revenue_micros"].sum() == 2_000_000


def test_refunds_net_and_unknown_users_are_unattributed() -> None:
    events = events_frame(
        [
            ("match", "P", "X", True),
            ("match", "P", "V", True),  # V is not in the user map
            ("match", "R", "Z", True),  # R's refund nets its day to 0: R is no payer
            ("match", "P", "P", True),  # self-match: ignored
        ]
    )
    payments = payments_frame([(DAY, "P", 10.0), (DAY, "R", 4.0), (DAY, "R", -4.0)])
    out = build_contribution(DAY, events, payments, USER_MAP)
    got = as_dict(out)
    assert set(got) == {("facebook", "c1"), ("unattributed", "unattributed")}
    assert got[("facebook", "c1")] == got[("unattributed", "unattributed")] == 1_000_000


def test_many_campaigns_sum_exactly_to_the_pool() -> None:
    rng = np.random.default_rng(7)
    users = [f"u{i}" for i in range(60)]
    payers = users[:7]
    rows = []
    for _ in range(300):
        a, b = rng.choice(users, 2, replace=False)
        rows.append(("match", str(a), str(b), bool(rng.random() < 0.3)))
    events = events_frame(rows)
    payments = payments_frame([(DAY, u, float(rng.integers(1, 10_000)) / 7) for u in payers])
    user_map = pd.DataFrame(
        {
            "user_pid": users[:50],
            "platform": "facebook",
            "campaign_id": [f"c{i % 11}" for i in range(50)],
        }
    )
    out = build_contribution(DAY, events, payments, user_map, partner_share=0.3)
    matched = set(events["user_pid"]) | set(events["peer_pid"])
    revenue = payments[payments["user_pid"].isin(matched)]["amount_micros"].sum()
    assert out["assisted_revenue_micros"].sum() == round(0.3 * int(revenue))
    assert ("unattributed", "unattributed") in as_dict(out)
    assert len(out) == 12


def test_no_payers_or_payers_matched_only_with_payers_give_an_empty_frame() -> None:
    events = events_frame([("match", "P", "X", True)])
    for payments in (
        payments_frame([("2024-03-09", "P", 10.0)]),
        payments_frame([(DAY, "P", 10.0), (DAY, "X", 1.0)]),
    ):
        out = build_contribution(DAY, events, payments, USER_MAP)
        assert out.empty and list(out.columns) == CONTRIBUTION_COLUMNS
        assert out["assisted_revenue_micros"].dtype == np.int64
