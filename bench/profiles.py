"""Benchmark scale profiles: the input sizes of each measured stage."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

# The report day of every profile: fixed, so cached inputs stay valid across runs.
REPORT_DAY = dt.date(2026, 11, 20)
TIMEZONE = "Asia/Seoul"
SEED = 7


@dataclass(frozen=True)
class BenchProfile:
    """Sizes of one benchmark scale; `world` is the sandbox world profile of the pipeline stages."""

    name: str
    world: str
    log_events: int  # server events on the report day (one gzip JSONL file)
    log_users: int
    graph_nodes: int  # PageRank: users of the match graph
    graph_edges: int  # distinct undirected matches (passed both ways to PageRank)
    ltv_customers: int  # customers with a payment in the last year, daily units
    repeats: int = 3
    networkx_repeats: int = 3
    networkx_cap_s: float = 1800.0  # one networkx run past this is stopped and reported as '>cap'


PROFILES: dict[str, BenchProfile] = {
    p.name: p
    for p in (
        BenchProfile("small", "tiny", 20_000, 2_000, 5_000, 20_000, 5_000),
        BenchProfile("medium", "medium", 1_000_000, 200_000, 200_000, 1_000_000, 200_000),
        BenchProfile(
            "large",
            "large",
            5_000_000,
            1_000_000,
            1_000_000,
            5_000_000,
            1_000_000,
            networkx_repeats=1,
        ),
    )
}
