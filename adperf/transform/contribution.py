"""Behavioural contribution: who made the day's revenue possible without paying for it.

A premium match needs a partner; the partner did not pay, but without them there was nothing to
buy. Two views, both rolled up to the campaigns that acquired the users:

- PageRank (`assisted_revenue_micros`): a share of the day's revenue of matched payers ("the
  pool") is credited to non-payers in proportion to their personalized PageRank score over the
  window's match graph, teleporting to payers in proportion to their revenue.
- Shapley (`shapley_*`): each payer's revenue of the day is split among the participants of
  their premium matches that day (see `match_shapley`), and the same game played by the
  campaigns that acquired the participants gives a Shapley channel attribution.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from decimal import ROUND_HALF_EVEN, Decimal

import numpy as np
import pandas as pd
import scipy.sparse as sp

from adperf.errors import AdperfError
from adperf.vocabulary import INSTALL_BUCKETS, UNATTRIBUTED

# scipy's compiled CSR routines (private sparsetools; `_csr`, `_matvec`): the public API is used
# instead should a later scipy move them.
try:
    from scipy.sparse._sparsetools import coo_tocsr, csr_matvec
except ImportError:  # pragma: no cover
    coo_tocsr = csr_matvec = None

CONTRIBUTION_COLUMNS = [
    "date",
    "platform",
    "campaign_id",
    "assisted_revenue_micros",
    "shapley_assisted_micros",
    "shapley_channel_micros",
]
_VALUES = CONTRIBUTION_COLUMNS[3:]
#: Players above which `shapley_values` refuses to enumerate coalitions (2**n of them).
MAX_EXACT_PLAYERS = 16
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

    out_weight = np.bincount(src, weights=w, minlength=n)
    dangling = np.flatnonzero(out_weight == 0)
    inv_out = np.divide(1.0, out_weight, out=np.zeros(n), where=out_weight != 0)
    # The row-stochastic transition matrix, built transposed (dst x src) in one step so each
    # iteration is one sparse mat-vec.
    transition_t = _csr(dst, src, w * inv_out[src], n)
    # Each step writes into the same few arrays: a fresh process otherwise pays page faults
    # for every temporary of every step (glibc maps large arrays anew each time).
    teleport = (1.0 - damping) * p
    scaled, diff = np.empty(n), np.empty(n)
    with ThreadPoolExecutor(max_workers=2) as pool:
        step = _MatVec(transition_t, pool)
        # Start from the teleport vector, not uniform: nodes unreachable from its support then
        # stay at exactly 0 instead of keeping a d**k residue of the starting mass.
        x, x_new = p.copy(), np.empty(n)
        for _ in range(max_iter):
            step(x, out=x_new)  # x_new = T x
            x_new += np.multiply(p, x[dangling].sum(), out=scaled)
            x_new *= damping
            x_new += teleport
            # Renormalize against float drift: the iteration preserves total mass in theory.
            x_new /= x_new.sum()
            if np.abs(np.subtract(x_new, x, out=diff), out=diff).sum() < tol:
                return x_new
            x, x_new = x_new, x
    raise PageRankNotConverged(
        f"pagerank: L1 change still >= {tol} after {max_iter} iterations on {n} nodes. "
        "Fix: raise max_iter or tol, or lower damping"
    )


def _csr(rows: np.ndarray, cols: np.ndarray, data: np.ndarray, n: int) -> sp.csr_matrix:
    """An n x n CSR matrix of (rows, cols, data); a repeated (row, col) stays two entries.

    scipy's own COO -> CSR conversion groups the rows in one counting pass, then sorts each
    row and sums repeats, which the mat-vec does not need (half of the 1.1 s it takes for 10M
    edges). That first pass is `coo_tocsr` of scipy's compiled sparsetools, a private module:
    should a later scipy move it, the public constructor (same product) is used.
    """
    if coo_tocsr is None or len(data) >= np.iinfo(np.int32).max or n >= np.iinfo(np.int32).max:
        return sp.csr_matrix((data, (rows, cols)), shape=(n, n))
    indptr = np.empty(n + 1, dtype=np.int32)
    indices = np.empty(len(data), dtype=np.int32)
    values = np.empty(len(data), dtype=np.float64)
    coo_tocsr(n, n, len(data), rows.astype(np.int32), cols.astype(np.int32), data, indptr,
              indices, values)  # fmt: skip
    return sp.csr_matrix((values, indices, indptr), shape=(n, n))


class _MatVec:
    """`matrix @ x` with the rows split between two threads when the matrix is large.

    scipy's CSR mat-vec runs on one core and releases the GIL: two halves of the rows run
    side by side (56 -> 33 ms a step for 10M edges on 2 cores). Each row's sum is computed
    exactly as in one piece, so the result is the same to the bit.
    """

    _MIN_NNZ = 1_000_000

    def __init__(self, matrix: sp.csr_matrix, pool: ThreadPoolExecutor) -> None:
        self._parts = [matrix] if matrix.nnz < self._MIN_NNZ else _halves(matrix)
        self._pool = pool

    def __call__(self, x: np.ndarray, out: np.ndarray) -> None:
        """out = matrix @ x."""
        if len(self._parts) == 1:
            _matvec(self._parts[0], x, out)
            return
        cut = self._parts[0].shape[0]
        halves = [(self._parts[0], out[:cut]), (self._parts[1], out[cut:])]
        list(self._pool.map(lambda part: _matvec(part[0], x, part[1]), halves))


def _matvec(matrix: sp.csr_matrix, x: np.ndarray, out: np.ndarray) -> None:
    """out = matrix @ x without a new array: scipy's compiled CSR mat-vec (private
    sparsetools, as `_csr`), which adds into `out`; the public product when it moved."""
    if csr_matvec is None:  # pragma: no cover (scipy moved its private module)
        out[:] = matrix @ x
        return
    out[:] = 0.0
    rows, cols = matrix.shape
    csr_matvec(rows, cols, matrix.indptr, matrix.indices, matrix.data, x, out)


def _empty() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "date": pd.Series(dtype="str"),
            "platform": pd.Series(dtype="str"),
            "campaign_id": pd.Series(dtype="str"),
            **{c: pd.Series(dtype="int64") for c in _VALUES},
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
    """Assisted revenue of `day` per acquiring (platform, campaign_id), in micros, from the
    window's raw events (one graph edge per match; for notebooks and as the reference of
    `build_contribution_from_edges`, which the pipeline uses).

    `assisted_revenue_micros`: the pool, partner_share x the day's positive net revenue of payers
    with at least one match in `events`' match graph, goes to non-payers by revenue-personalized
    PageRank; the column sums to the pool. `shapley_assisted_micros` / `shapley_channel_micros`:
    see `build_shapley`. One row per campaign with any non-zero value.
    """
    _check_share(day, partner_share)
    parts = [
        _pagerank_credit(events, _day_revenue(day, payments), user_map, partner_share),
        build_shapley(day, events, payments, user_map, partner_share),
    ]
    return _combine(day, parts)


def build_contribution_from_edges(
    day: str,
    edges: pd.DataFrame,
    payments: pd.DataFrame,
    user_map: pd.DataFrame,
    partner_share: float = 0.2,
) -> pd.DataFrame:
    """`build_contribution` from the window's daily match edges (columns date, user_pid,
    peer_pid, premium, matches: matches per pair and day, as the log extract writes them)
    instead of its raw events: the same graph, each pair's matches weighed at once."""
    _check_share(day, partner_share)
    revenue = _day_revenue(day, payments)
    weight = np.where(edges["premium"].to_numpy(dtype=bool), PREMIUM_MATCH_WEIGHT, 1.0)
    pagerank_part = _pagerank_from_pairs(
        edges["user_pid"],
        edges["peer_pid"],
        weight * edges["matches"].to_numpy(dtype="float64"),
        revenue,
        user_map,
        partner_share,
    )
    paid = edges[
        (edges["date"] == day)
        & edges["premium"].to_numpy(dtype=bool)
        & edges["user_pid"].isin(revenue.index)
    ]
    pairs = paid.groupby(["user_pid", "peer_pid"])["matches"].sum().rename("w").reset_index()
    shares = _shapley_shares(pairs, revenue, partner_share)
    parts = [pagerank_part, _shapley_per_campaign(day, shares, payments, user_map, partner_share)]
    return _combine(day, parts)


def _check_share(day: str, partner_share: float) -> None:
    if not 0 <= partner_share <= 0.5:
        raise ValueError(
            f"contribution for {day}: partner_share {partner_share} is not in [0, 0.5]. "
            "Fix: set [contribution] partner_share (a partner's Shapley share of a paid match is "
            "at most half of it)"
        )


def _combine(day: str, parts: list[pd.DataFrame]) -> pd.DataFrame:
    """The PageRank and Shapley columns per campaign as one CONTRIBUTION_COLUMNS frame."""
    keyed = [p.set_index(["platform", "campaign_id"]) for p in parts if len(p)]
    if not keyed:
        return _empty()
    out = pd.concat(keyed, axis=1).reindex(columns=_VALUES).fillna(0).astype("int64")
    out = out[(out != 0).any(axis=1)].sort_index().reset_index()
    out.insert(0, "date", day)
    result: pd.DataFrame = out[CONTRIBUTION_COLUMNS].astype(
        {"date": "str", "platform": "str", "campaign_id": "str"}
    )
    return result


def _day_revenue(day: str, payments: pd.DataFrame) -> pd.Series:
    """Net revenue per payer on `day`, positive only (refunds are negative on their own day)."""
    day_payments = payments[payments["date"] == day]
    revenue = day_payments.groupby("user_pid")["amount_micros"].sum()
    return revenue[revenue > 0]


def _channels(user_map: pd.DataFrame, users: pd.Index) -> pd.DataFrame:
    """(platform, campaign_id) that acquired each user: organic or restricted (a bucket each),
    or unattributed when unknown."""
    mapping = user_map.drop_duplicates("user_pid").set_index("user_pid")
    out = pd.DataFrame(index=users)
    out["platform"] = mapping["platform"].reindex(users).astype("object")
    out["campaign_id"] = mapping["campaign_id"].reindex(users).astype("object")
    unknown = out["platform"].isna()
    out.loc[unknown, ["platform", "campaign_id"]] = UNATTRIBUTED
    bucket = out["platform"].isin(INSTALL_BUCKETS)  # organic, restricted: no campaign
    out.loc[bucket, "campaign_id"] = out.loc[bucket, "platform"]
    out["campaign_id"] = out["campaign_id"].fillna(UNATTRIBUTED)
    return out


def _per_campaign(
    shares: pd.Series, channels: pd.DataFrame, total: int, column: str
) -> pd.DataFrame:
    """Float shares per user → integer micros per campaign summing exactly to `total`."""
    frame = channels.loc[shares.index].assign(share=shares.to_numpy())
    grouped = frame.groupby(["platform", "campaign_id"], sort=True)["share"].sum()
    return pd.DataFrame(
        {
            "platform": grouped.index.get_level_values(0),
            "campaign_id": grouped.index.get_level_values(1),
            column: _largest_remainder(grouped.to_numpy(), total),
        }
    )


def _pagerank_credit(
    events: pd.DataFrame, revenue: pd.Series, user_map: pd.DataFrame, partner_share: float
) -> pd.DataFrame:
    """assisted_revenue_micros per campaign: the pool by revenue-personalized PageRank."""
    matches = events[
        (events["event"] == "match")
        & events["peer_pid"].notna()
        & (events["user_pid"] != events["peer_pid"])  # a self-match partners nobody
    ]
    # Premium matches (paid) count double.
    premium = matches["premium"].astype("boolean").fillna(False).to_numpy(dtype=bool)
    w = np.where(premium, PREMIUM_MATCH_WEIGHT, 1.0)
    return _pagerank_from_pairs(
        matches["user_pid"], matches["peer_pid"], w, revenue, user_map, partner_share
    )


def _pagerank_from_pairs(
    users: pd.Series,
    peers: pd.Series,
    w: np.ndarray,
    revenue: pd.Series,
    user_map: pd.DataFrame,
    partner_share: float,
) -> pd.DataFrame:
    """assisted_revenue_micros per campaign from weighted match pairs (user, peer, weight)."""
    if len(users) == 0 or revenue.empty:
        return _empty()
    # Undirected graph, passed both ways. Ids become integer codes once (factorize), and
    # repeated pairs are summed by the CSR build.
    ends = pd.concat([users, peers], ignore_index=True).astype("str")
    codes, uniques = pd.factorize(ends, sort=True)
    k = len(users)
    a, b = codes[:k], codes[k:]
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
    shares = pd.Series(pool * partner_scores[partner] / partner_scores.sum(), index=nodes[partner])
    return _per_campaign(
        shares, _channels(user_map, nodes[partner]), pool, "assisted_revenue_micros"
    )


# ---------------------------------------------------------------- Shapley


def shapley_values(n_players: int, value: Callable[[frozenset[int]], float]) -> np.ndarray:
    """Exact Shapley value of players 0..n-1 of the game `value` (coalition → worth).

    phi_i = sum over S not holding i of |S|! (n-|S|-1)! / n! x (v(S + i) - v(S)): every
    coalition is enumerated, so n is capped at MAX_EXACT_PLAYERS. Used to check `match_shapley`.
    """
    if not 0 <= n_players <= MAX_EXACT_PLAYERS:
        raise ValueError(f"shapley_values: {n_players} players; at most {MAX_EXACT_PLAYERS}")
    phi = np.zeros(n_players)
    weight = [
        math.factorial(k) * math.factorial(n_players - k - 1) / math.factorial(n_players)
        for k in range(n_players)
    ]
    for i in range(n_players):
        others = [j for j in range(n_players) if j != i]
        for k in range(n_players):
            for coalition in itertools.combinations(others, k):
                s = frozenset(coalition)
                phi[i] += weight[k] * (value(s | {i}) - value(s))
    return phi


def match_value(
    coalition: frozenset[str], payer: str, partner_matches: dict[str, int], revenue: float, s: float
) -> float:
    """Worth of a coalition of a paid match's participants (the game `match_shapley` solves).

    Without the payer nothing was paid. The payer alone would still have paid (1 - 2s) of the
    revenue; the rest needed the partners, each in proportion to their premium matches with the
    payer that day: v(S) = R [payer in S] (1 - 2s + 2s sum_{p in S} w_p / W).
    """
    if payer not in coalition:
        return 0.0
    total = sum(partner_matches.values())
    present = sum(w for p, w in partner_matches.items() if p in coalition)
    return revenue * (1 - 2 * s + 2 * s * present / total)


def match_shapley(
    day: str, events: pd.DataFrame, payments: pd.DataFrame, partner_share: float
) -> pd.DataFrame:
    """Shapley shares of each paid match's revenue among its participants, in micros (float).

    A paid match is a payer's positive net revenue R of `day` with the payer's premium matches
    that day; in the game `match_value` the Shapley value is closed-form (a dictator game plus
    one two-player unanimity game per partner): partner p gets s R w_p / W, the payer (1 - s) R.
    Rows (payer_pid, participant_pid, role, share_micros); the shares of a payer sum to R.
    """
    revenue = _day_revenue(day, payments)
    premium = events["premium"].astype("boolean").fillna(False).to_numpy(dtype=bool)
    paid = events[
        premium
        & (events["date"] == day)
        & (events["event"] == "match")
        & events["peer_pid"].notna()
        & (events["user_pid"] != events["peer_pid"])
        & events["user_pid"].isin(revenue.index)
    ]
    pairs = paid.groupby(["user_pid", "peer_pid"]).size().rename("w").reset_index()
    return _shapley_shares(pairs, revenue, partner_share)


def _shapley_shares(pairs: pd.DataFrame, revenue: pd.Series, partner_share: float) -> pd.DataFrame:
    """`match_shapley`'s rows from the day's paid pairs (user_pid, peer_pid, w: premium matches)."""
    if pairs.empty:
        return pd.DataFrame(
            {
                "payer_pid": pd.Series(dtype="str"),
                "participant_pid": pd.Series(dtype="str"),
                "role": pd.Series(dtype="str"),
                "share_micros": pd.Series(dtype="float64"),
            }
        )
    w = pairs
    w["W"] = w.groupby("user_pid")["w"].transform("sum")
    w["R"] = revenue.reindex(w["user_pid"]).to_numpy(dtype="float64")
    partners = pd.DataFrame(
        {
            "payer_pid": w["user_pid"],
            "participant_pid": w["peer_pid"],
            "role": "partner",
            "share_micros": partner_share * w["R"] * w["w"] / w["W"],
        }
    )
    payer_revenue = revenue.reindex(w["user_pid"].unique()).astype("float64")
    payers = pd.DataFrame(
        {
            "payer_pid": payer_revenue.index,
            "participant_pid": payer_revenue.index,
            "role": "payer",
            "share_micros": (1 - partner_share) * payer_revenue.to_numpy(),
        }
    )
    both = pd.concat([payers, partners], ignore_index=True)
    return both.sort_values(["payer_pid", "role", "participant_pid"], kind="mergesort").reset_index(
        drop=True
    )


def build_shapley(
    day: str,
    events: pd.DataFrame,
    payments: pd.DataFrame,
    user_map: pd.DataFrame,
    partner_share: float = 0.2,
) -> pd.DataFrame:
    """Shapley credit of `day` per acquiring (platform, campaign_id), in micros.

    `shapley_assisted_micros`: the partners' shares of the paid matches (`match_shapley`), by
    the campaign that acquired each partner; sums to partner_share x the matched revenue.
    `shapley_channel_micros`: the match game played by campaigns (a campaign brings the
    participants it acquired); since the game is a sum of dictator and pair games, a campaign's
    Shapley value is the sum of its participants' shares. Sums to the matched revenue.
    """
    shares = match_shapley(day, events, payments, partner_share)
    return _shapley_per_campaign(day, shares, payments, user_map, partner_share)


def _shapley_per_campaign(
    day: str,
    shares: pd.DataFrame,
    payments: pd.DataFrame,
    user_map: pd.DataFrame,
    partner_share: float,
) -> pd.DataFrame:
    """`build_shapley`'s columns from `match_shapley`'s rows."""
    if shares.empty:
        return _empty()
    matched = int(_day_revenue(day, payments).reindex(shares["payer_pid"].unique()).sum())
    by_user = shares.groupby("participant_pid")["share_micros"].sum()
    partner = shares[shares["role"] == "partner"].groupby("participant_pid")["share_micros"].sum()
    channels = _channels(user_map, pd.Index(by_user.index))
    channel = _per_campaign(by_user, channels, matched, "shapley_channel_micros")
    assisted = _per_campaign(
        partner, channels, _pool_micros(partner_share, matched), "shapley_assisted_micros"
    )
    return channel.merge(assisted, on=["platform", "campaign_id"], how="outer")


def _halves(matrix: sp.csr_matrix) -> list[sp.csr_matrix]:
    """The top and bottom halves of a CSR matrix's rows, sharing its arrays (no copy)."""
    half = matrix.shape[0] // 2
    cut = int(matrix.indptr[half])
    top = sp.csr_matrix(
        (matrix.data[:cut], matrix.indices[:cut], matrix.indptr[: half + 1]),
        shape=(half, matrix.shape[1]),
    )
    bottom = sp.csr_matrix(
        (matrix.data[cut:], matrix.indices[cut:], matrix.indptr[half:] - cut),
        shape=(matrix.shape[0] - half, matrix.shape[1]),
    )
    return [top, bottom]
