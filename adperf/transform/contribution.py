"""Behavioural contribution: revenue-seeded PageRank over the match graph credits partners.

A premium match needs a partner; the partner did not pay, but without them there was nothing to
buy. A share of the day's revenue of matched payers ("the pool") is credited to non-payers in
proportion to their personalized PageRank score, teleporting to payers in proportion to their
revenue, and rolled up to the campaigns that acquired them ("assisted revenue").
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

import numpy as np
import pandas as pd
import scipy.sparse as sp

from adperf.errors import AdperfError

CONTRIBUTION_COLUMNS = ["date", "platform", "campaign_id", "assisted_revenue_micros"]
UNATTRIBUTED = "unattributed"
ORGANIC = "organic"
PREMIUM_MATCH_WEIGHT = 2.0


class PageRankNotConverged(AdperfError):
    """Power iteration did not reach the tolerance within max_iter iterations."""


def pagerank(
    src: np.ndarray,
    dst: np.ndarray,
    n: int,
    personalization: np.ndarray | None = None,
    damping: float = 0.85,
    tol: float = 1e-10,
    max_iter: int = 200,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """PageRank score per node 0..n-1 of the directed weighted edges src -> dst (sums to 1).

    Teleport and dangling-node mass both follow `personalization` (uniform when None), as in
    networkx's default. Duplicate edges add their weights; pass undirected edges both ways.
    """
    src = np.asarray(src, dtype=np.int64)
    dst = np.asarray(dst, dtype=np.int64)
    w = np.ones(len(src)) if weights is None else np.asarray(weights, dtype="float64")
    if not (len(src) == len(dst) == len(w)):
        raise ValueError(
            f"pagerank: src, dst, weights lengths differ: {len(src)}, {len(dst)}, {len(w)}"
        )
    if len(src) and (src.min() < 0 or dst.min() < 0 or src.max() >= n or dst.max() >= n):
        raise ValueError(f"pagerank: node ids must be in [0, {n})")
    if np.any(w < 0) or not np.all(np.isfinite(w)):
        raise ValueError("pagerank: edge weights must be finite and non-negative")
    if n == 0:
        return np.zeros(0)
    if personalization is None:
        p = np.full(n, 1.0 / n)
    else:
        p = np.asarray(personalization, dtype="float64")
        if p.shape != (n,) or np.any(p < 0) or not p.sum() > 0:
            raise ValueError("pagerank: personalization must be n non-negative values, not all 0")
        p = p / p.sum()

    adjacency = sp.csr_matrix((w, (src, dst)), shape=(n, n))  # duplicates are summed
    out_weight = np.asarray(adjacency.sum(axis=1)).ravel()
    dangling = out_weight == 0
    inv_out = np.divide(1.0, out_weight, out=np.zeros(n), where=~dangling)
    # Row-stochastic transition matrix, transposed once so each step is one sparse mat-vec.
    transition_t = (sp.diags(inv_out) @ adjacency).T.tocsr()

    # Start from the teleport vector, not uniform: nodes unreachable from its support then stay
    # at exactly 0 instead of keeping a d**k residue of the starting mass.
    x = p.copy()
    for _ in range(max_iter):
        x_new = damping * (transition_t @ x + x[dangling].sum() * p) + (1.0 - damping) * p
        # Renormalize against float drift: the iteration preserves total mass exactly in theory.
        x_new /= x_new.sum()
        if np.abs(x_new - x).sum() < tol:
            return np.asarray(x_new)
        x = x_new
    raise PageRankNotConverged(
        f"pagerank: L1 change still >= {tol} after {max_iter} iterations on {n} nodes. "
        "Fix: raise max_iter or tol, or lower damping"
    )


def _empty() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "date": pd.Series(dtype="str"),
            "platform": pd.Series(dtype="str"),
            "campaign_id": pd.Series(dtype="str"),
            "assisted_revenue_micros": pd.Series(dtype="int64"),
        }
    )


def _largest_remainder(shares: np.ndarray, total: int) -> np.ndarray:
    """Integers summing exactly to `total`, each floor(share) or floor(share) + 1.

    The leftover units go to the largest fractional parts; ties to the earlier row, so the
    result is deterministic given the row order.
    """
    floors = np.floor(shares).astype(np.int64)
    left = int(total - floors.sum())
    order = np.argsort(-(shares - floors), kind="stable")
    floors[order[:left]] += 1
    return np.asarray(floors, dtype=np.int64)


def _pool_micros(partner_share: float, revenue_micros: int) -> int:
    """partner_share x revenue, rounded half-even to a micro, without binary float error."""
    exact = Decimal(repr(partner_share)) * Decimal(revenue_micros)
    return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def build_contribution(
    day: str,
    events: pd.DataFrame,
    payments: pd.DataFrame,
    user_map: pd.DataFrame,
    partner_share: float = 0.2,
) -> pd.DataFrame:
    """Assisted revenue of `day` per acquiring (platform, campaign_id), in micros.

    The pool, partner_share x the day's positive net revenue of payers with at least one match
    in `events`' match graph, goes to non-payers by revenue-personalized PageRank; rows sum to it.
    """
    matches = events[
        (events["event"] == "match")
        & events["peer_pid"].notna()
        & (events["user_pid"] != events["peer_pid"])  # a self-match partners nobody
    ]
    day_payments = payments[payments["date"] == day]
    revenue = day_payments.groupby("user_pid")["amount_micros"].sum()
    # Refunds are negative revenue on their own day; only a positive net day makes a payer.
    revenue = revenue[revenue > 0]
    if matches.empty or revenue.empty:
        return _empty()

    # Undirected graph, passed both ways; premium matches (paid) count double. Ids become
    # integer codes once (factorize), and repeated matches of a pair are summed by the CSR build.
    premium = matches["premium"].astype("boolean").fillna(False).to_numpy(dtype=bool)
    ends = pd.concat([matches["user_pid"], matches["peer_pid"]], ignore_index=True).astype("str")
    codes, uniques = pd.factorize(ends, sort=True)
    k = len(matches)
    a, b = codes[:k], codes[k:]
    w = np.where(premium, PREMIUM_MATCH_WEIGHT, 1.0)
    nodes = pd.Index(uniques)
    node_revenue = revenue.reindex(nodes, fill_value=0).to_numpy(dtype=np.int64)
    matched_revenue = int(node_revenue.sum())
    if matched_revenue == 0:
        return _empty()
    pool = _pool_micros(partner_share, matched_revenue)

    scores = pagerank(
        np.concatenate([a, b]),
        np.concatenate([b, a]),
        len(nodes),
        personalization=node_revenue.astype("float64"),
        weights=np.concatenate([w, w]),
    )
    partner = node_revenue == 0
    partner_scores = np.where(partner, scores, 0.0)
    if pool == 0 or not partner_scores.sum() > 0:
        # Payers matched only with payers: nobody to credit.
        return _empty()

    mapping = user_map.drop_duplicates("user_pid").set_index("user_pid")
    credited = pd.DataFrame(
        {"share": pool * partner_scores[partner] / partner_scores.sum()},
        index=nodes[partner],
    )
    credited["platform"] = mapping["platform"].reindex(credited.index)
    credited["campaign_id"] = mapping["campaign_id"].reindex(credited.index).astype("object")
    unknown = credited["platform"].isna()
    credited.loc[unknown, ["platform", "campaign_id"]] = UNATTRIBUTED
    credited.loc[credited["platform"] == ORGANIC, "campaign_id"] = ORGANIC
    credited["campaign_id"] = credited["campaign_id"].fillna(UNATTRIBUTED)

    per_campaign = credited.groupby(["platform", "campaign_id"], sort=True, as_index=False)[
        "share"
    ].sum()
    out = per_campaign.assign(
        date=day,
        assisted_revenue_micros=_largest_remainder(per_campaign["share"].to_numpy(), pool),
    )
    out = out[CONTRIBUTION_COLUMNS].astype(
        {"date": "str", "platform": "str", "campaign_id": "str", "assisted_revenue_micros": "int64"}
    )
    # A campaign whose users' share rounds to 0 micros assisted nothing worth a row.
    kept: pd.DataFrame = out[out["assisted_revenue_micros"] > 0].reset_index(drop=True)
    return kept
