"""Contribution reads the log extract's daily match edges, not 28 days of raw events: the
result is the one the raw events give."""

from __future__ import annotations

from pathlib import Path

import luigi
import pandas as pd

from adperf import lake
from adperf.transform.attribution import build_user_map
from adperf.transform.contribution import build_contribution
from tasks import config
from tasks.base import _window
from tasks.transform import Contribution

from .conftest import END


def test_contribution_from_match_edges_equals_the_raw_events_one(run_root: Path) -> None:
    result = luigi.build(
        [Contribution(date=END)], local_scheduler=True, detailed_summary=True, workers=1
    )
    assert result.status == luigi.LuigiStatusCode.SUCCESS, result.summary_text
    root, iso = run_root / "lake", END.isoformat()
    new = lake.read_partition(root, "contribution", "date", iso)

    # The old way: every event of the window into pandas, one graph edge per match.
    window = [d.isoformat() for d in _window(END, config.contribution().window_days)]
    events = lake.read_partitions(root, "events", "date", window)
    payments = lake.read_partition(root, "payments", "date", iso)
    installs = Contribution(date=END).requires()["installs"].read()
    old = build_contribution(iso, events, payments, build_user_map(installs))

    assert len(new) > 2 and (new["assisted_revenue_micros"] > 0).any()
    assert (new["shapley_assisted_micros"] > 0).any()
    pd.testing.assert_frame_equal(new, old, check_dtype=False)
    # Every match that partners somebody is counted once in the edges.
    edges = lake.read_partitions(root, "match_edges", "date", window)
    assert (
        edges["matches"].sum()
        == (events["peer_pid"].notna() & (events["user_pid"] != events["peer_pid"])).sum()
    )
