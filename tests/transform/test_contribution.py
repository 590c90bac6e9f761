"""adperf.transform.contribution: PageRank vs hand-worked and dense solutions; assisted revenue."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from adperf.transform.contribution import (
    CONTRIBUTION_COLUMNS,
    MAX_EXACT_PLAYERS,
    PageRankNotConverged,
    build_contribution,
    build_contribution_from_edges,
    build_shapley,
    match_shapley,
    match_value,
    pagerank,
    shapley_values,
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


def as_dict(
    out: pd.DataFrame, column: str = "assisted_revenue_micros"
) -> dict[tuple[str, str], int]:
    """Non-zero values of one column by campaign."""
    return {
        (r.platform, r.campaign_id): getattr(r, column)
        for r in out.itertuples()
        if getattr(r, column)
    }


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
    assert len(as_dict(out)) == 12


def test_no_payers_give_an_empty_frame_and_payers_matched_only_with_payers_no_pagerank() -> None:
    events = events_frame([("match", "P", "X", True)])
    out = build_contribution(DAY, events, payments_frame([("2024-03-09", "P", 10.0)]), USER_MAP)
    assert out.empty and list(out.columns) == CONTRIBUTION_COLUMNS
    assert out["assisted_revenue_micros"].dtype == np.int64
    # X pays too: nobody to credit by PageRank, but X still partnered P's paid match.
    out = build_contribution(
        DAY, events, payments_frame([(DAY, "P", 10.0), (DAY, "X", 1.0)]), USER_MAP
    )
    assert (out["assisted_revenue_micros"] == 0).all()
    assert as_dict(out, "shapley_assisted_micros") == {("facebook", "c1"): 2_000_000}
    assert as_dict(out, "shapley_channel_micros") == {
        ("facebook", "c1"): 2_000_000,
        ("facebook", "c9"): 8_000_000,
    }


# --- Shapley ----------------------------------------------------------------------------------


def test_shapley_values_of_the_glove_game_by_hand() -> None:
    # Player 0 holds a left glove, players 1 and 2 a right one; a pair is worth 1. Orders in
    # which 0 completes a pair: 4 of 6 -> 2/3; each right glove completes it when it follows 0
    # and precedes the other right glove: 1 of 6 -> 1/6.
    def v(s: frozenset[int]) -> float:
        return 1.0 if 0 in s and (1 in s or 2 in s) else 0.0

    np.testing.assert_allclose(shapley_values(3, v), [2 / 3, 1 / 6, 1 / 6], rtol=1e-12)
    assert shapley_values(0, v).shape == (0,)
    with pytest.raises(ValueError, match="at most"):
        shapley_values(MAX_EXACT_PLAYERS + 1, v)


SHAPLEY_EVENTS = [
    ("match", "P", "X", True),
    ("match", "P", "X", True),
    ("match", "P", "Y", True),
    ("match", "P", "Z", False),  # not premium: no paid match
    ("match", "Q", "X", True),  # Q's refund nets its day to 0: no paid match
]


def test_match_shapley_by_hand_and_against_enumeration() -> None:
    events = events_frame(SHAPLEY_EVENTS)
    payments = payments_frame([(DAY, "P", 10.0), (DAY, "Q", 3.0), (DAY, "Q", -3.0)])
    shares = match_shapley(DAY, events, payments, partner_share=0.2)
    got = {r.participant_pid: r.share_micros for r in shares.itertuples()}
    # R = 10; X has 2 of P's 3 premium matches, Y 1: X = 0.2 x 10 x 2/3, Y = 0.2 x 10 / 3,
    # P = (1 - 0.2) x 10.
    assert got == pytest.approx({"P": 8 * M, "X": 4 / 3 * M, "Y": 2 / 3 * M}, rel=1e-12)
    assert sum(got.values()) == pytest.approx(10 * M, rel=1e-12)  # efficiency

    players = ["P", "X", "Y"]

    def v(s: frozenset[int]) -> float:
        members = frozenset(players[i] for i in s)
        return match_value(members, "P", {"X": 2, "Y": 1}, 10 * M, 0.2)

    exact = shapley_values(3, v)
    assert [got[p] for p in players] == pytest.approx(list(exact), rel=1e-12)
    assert exact.sum() == pytest.approx(v(frozenset({0, 1, 2})), rel=1e-12)


def test_channel_shapley_by_hand_and_against_the_channel_game() -> None:
    events = events_frame(SHAPLEY_EVENTS)
    payments = payments_frame([(DAY, "P", 10.0)])
    user_map = pd.DataFrame(
        {"user_pid": ["P", "X", "Y"], "platform": "facebook", "campaign_id": ["c9", "c1", "c9"]}
    )
    out = build_shapley(DAY, events, payments, user_map, partner_share=0.2)
    channel = as_dict(out, "shapley_channel_micros")
    # v(c9) = 6 (P alone) + 4/3 (P with Y); v(c1) = 0; v(c9, c1) = 10: c9 = (6 + 4/3 + 10 - 0) / 2
    # = 8.667, c1 = (0 + 10 - 22/3) / 2 = 1.333; the unit left by rounding goes to c9.
    assert channel == {("facebook", "c9"): 8_666_667, ("facebook", "c1"): 1_333_333}
    assert as_dict(out, "shapley_assisted_micros") == {
        ("facebook", "c1"): 1_333_333,
        ("facebook", "c9"): 666_667,
    }
    owner = {"P": "c9", "X": "c1", "Y": "c9"}
    camps = ["c9", "c1"]

    def v(s: frozenset[int]) -> float:
        members = frozenset(u for u, c in owner.items() if c in {camps[i] for i in s})
        return match_value(members, "P", {"X": 2, "Y": 1}, 10 * M, 0.2)

    exact = shapley_values(2, v)
    assert [channel[("facebook", c)] for c in camps] == pytest.approx(list(exact), abs=1)


def test_channel_shapley_equals_enumeration_on_random_days() -> None:
    rng = np.random.default_rng(11)
    users = [f"u{i}" for i in range(9)]
    camp = {u: f"c{i % 4}" for i, u in enumerate(users)}
    rows = [
        ("match", str(a), str(b), bool(rng.random() < 0.6))
        for a, b in (rng.choice(users, 2, replace=False) for _ in range(40))
    ]
    events = events_frame(rows)
    payments = payments_frame([(DAY, u, float(rng.integers(1, 5000)) / 3) for u in users[:4]])
    user_map = pd.DataFrame(
        {"user_pid": users, "platform": "google_ads", "campaign_id": [camp[u] for u in users]}
    )
    out = build_shapley(DAY, events, payments, user_map, partner_share=0.25)
    got = as_dict(out, "shapley_channel_micros")

    camps = sorted(set(camp.values()))
    expected = np.zeros(len(camps))
    shares = match_shapley(DAY, events, payments, 0.25)
    revenue = payments.groupby("user_pid")["amount_micros"].sum()
    for payer in shares["payer_pid"].unique():  # a sum of games: Shapley adds up
        mine = events[
            (events["user_pid"] == payer) & events["premium"].fillna(False).astype(bool)
            & (events["peer_pid"] != payer)
        ]  # fmt: skip
        w = mine.groupby("peer_pid").size().to_dict()

        def v(s: frozenset[int], payer: str = payer, w: dict = w) -> float:
            inside = {camps[i] for i in s}
            members = frozenset(u for u in users if camp[u] in inside)
            return match_value(members, payer, w, float(revenue[payer]), 0.25)

        expected += shapley_values(len(camps), v)
    assert [got.get(("google_ads", c), 0) for c in camps] == pytest.approx(list(expected), abs=1)
    assert sum(got.values()) == revenue[shares["payer_pid"].unique()].sum()  # efficiency
    assert out["shapley_assisted_micros"].sum() == round(0.25 * sum(got.values()))


def test_only_the_days_premium_matches_of_payers_count() -> None:
    events = events_frame([("match", "P", "X", True), ("match", "P", "Y", True)])
    events.loc[1, "date"] = "2024-03-09"  # the day before: not today's paid match
    payments = payments_frame([(DAY, "P", 5.0), (DAY, "W", 7.0)])  # W: no premium match
    out = build_contribution(DAY, events, payments, USER_MAP, partner_share=0.1)
    assert as_dict(out, "shapley_channel_micros") == {
        ("facebook", "c9"): 4_500_000,  # P keeps 1 - 0.1
        ("facebook", "c1"): 500_000,  # X
    }
    assert as_dict(out, "shapley_assisted_micros") == {("facebook", "c1"): 500_000}
    with pytest.raises(ValueError, match="partner_share 0.6 is not in"):
        build_contribution(DAY, events, payments, USER_MAP, partner_share=0.6)


def test_pagerank_split_mat_vec_and_repeated_edges_give_the_same_ranks(monkeypatch):
    import numpy as np

    from adperf.transform import contribution

    rng = np.random.default_rng(3)
    n, m = 300, 2000
    src, dst = rng.integers(0, n, m), rng.integers(0, n, m)
    w = rng.random(m)
    seeds = np.where(rng.random(n) < 0.1, rng.random(n), 0.0)
    seeds[0] = 1.0
    whole = contribution.pagerank(src, dst, n, personalization=seeds, weights=w)
    # The same edges with every weight split in two repeated edges: the same graph.
    twice = contribution.pagerank(
        np.concatenate([src, src]),
        np.concatenate([dst, dst]),
        n,
        personalization=seeds,
        weights=np.concatenate([w * 0.25, w * 0.75]),
    )
    assert np.abs(twice - whole).sum() < 1e-12
    # Rows split between two threads (what large graphs do): the same result to the bit.
    monkeypatch.setattr(contribution._MatVec, "_MIN_NNZ", 0)
    split = contribution.pagerank(src, dst, n, personalization=seeds, weights=w)
    assert np.array_equal(split, whole)


def _edges_of(events: pd.DataFrame) -> pd.DataFrame:
    """The daily match edges the log extract writes for `events` (adperf.sources.logs)."""
    import datetime as dt

    import pyarrow as pa

    from adperf.schema import EVENTS
    from adperf.sources.logs import MatchEdges

    frames = []
    for day, rows in events.groupby("date", sort=True):
        edges = MatchEdges(dt.date.fromisoformat(str(day)))
        edges.add(pa.Table.from_pandas(rows[EVENTS.columns], preserve_index=False))
        frames.append(edges.table().to_pandas())
    return pd.concat(frames, ignore_index=True)


def test_contribution_from_daily_match_edges_equals_the_one_from_raw_events() -> None:
    rng = np.random.default_rng(5)
    users = [f"u{i:02d}" for i in range(30)]
    rows = [
        (
            "match" if rng.random() < 0.9 else "login",
            str(a),
            None if rng.random() < 0.05 else str(b if rng.random() < 0.95 else a),  # self-match
            [True, False, None][int(rng.integers(0, 3))],
        )
        for a, b in (rng.choice(users[:12], 2, replace=False) for _ in range(400))
    ]
    events = events_frame(rows)
    events["date"] = [f"2024-03-{d:02d}" for d in rng.integers(8, 11, len(events))]
    payments = payments_frame(
        [(DAY, u, float(rng.integers(1, 9000)) / 7) for u in users[:5]] + [(DAY, "u01", -1.0)]
    )
    user_map = pd.DataFrame(
        {
            "user_pid": users,
            "platform": ["facebook", "google_ads", "organic"] * 10,
            "campaign_id": [f"c{i % 4}" for i in range(30)],
        }
    )
    edges = _edges_of(events)
    assert len(edges) < len(events) and edges["matches"].max() > 1  # repeated pairs counted
    old = build_contribution(DAY, events, payments, user_map, partner_share=0.3)
    new = build_contribution_from_edges(DAY, edges, payments, user_map, partner_share=0.3)
    assert (old["assisted_revenue_micros"] > 0).sum() >= 2
    assert (old["shapley_assisted_micros"] > 0).sum() >= 2
    pd.testing.assert_frame_equal(new, old)


def test_contribution_reads_shards_partial_edges_as_the_whole_days() -> None:
    # A day merged from shards keeps each shard's edges (a pair matched in two shards has a
    # row in each: adperf.sources.logs.merge_shard_partitions); Contribution sums them.
    rng = np.random.default_rng(11)
    users = [f"u{i:02d}" for i in range(20)]
    rows = [
        ("match", str(a), str(b), [True, False, None][int(rng.integers(0, 3))])
        for a, b in (rng.choice(users[:10], 2, replace=False) for _ in range(600))
    ]
    events = events_frame(rows)
    events["date"] = [f"2024-03-{d:02d}" for d in rng.integers(8, 11, len(events))]
    payments = payments_frame([(DAY, u, float(rng.integers(1, 9000)) / 7) for u in users[:6]])
    user_map = pd.DataFrame(
        {
            "user_pid": users,
            "platform": ["facebook", "google_ads", "organic", "tiktok"] * 5,
            "campaign_id": [f"c{i % 3}" for i in range(20)],
        }
    )
    whole = _edges_of(events)
    cut = len(events) // 3
    partial = pd.concat(
        [_edges_of(events.iloc[:cut]), _edges_of(events.iloc[cut:])], ignore_index=True
    ).sort_values("date", kind="stable")
    assert len(partial) > len(whole)  # pairs in both shards: a row in each
    old = build_contribution_from_edges(DAY, whole, payments, user_map, partner_share=0.3)
    new = build_contribution_from_edges(DAY, partial, payments, user_map, partner_share=0.3)
    assert (old["assisted_revenue_micros"] > 0).sum() >= 2
    pd.testing.assert_frame_equal(new, old)
