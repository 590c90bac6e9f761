"""source_discrepancy: one day's rows replaced on a re-load, on every warehouse backend."""

from __future__ import annotations

import pandas as pd
import sqlalchemy as sa

from adperf import warehouse
from adperf.transform.watch import WatchSettings, build_source_discrepancy

DAY = "2026-11-27"


def _discrepancy(reported: int) -> pd.DataFrame:
    spend = pd.DataFrame(
        {"platform": ["facebook", "google_ads"], "campaign_id": ["238000000000000001", "18"],
         "campaign_name": ["KR 봄", "Search"], "installs_reported": [reported, 40]}
    )  # fmt: skip
    campaigns = pd.DataFrame(
        {"platform": ["facebook", "google_ads"], "campaign_id": ["238000000000000001", "18"],
         "campaign_name": ["KR 봄", "Search"], "installs": [50, 38]}
    )  # fmt: skip
    return build_source_discrepancy(DAY, spend, campaigns, WatchSettings())


def test_a_reload_replaces_the_days_rows(warehouse_engine: sa.Engine) -> None:
    engine = warehouse_engine
    warehouse.load_day(engine, DAY, {"source_discrepancy": _discrepancy(120)}, marker="watch")
    warehouse.load_day(engine, DAY, {"source_discrepancy": _discrepancy(56)}, marker="watch")
    table = warehouse.read_table(engine, "source_discrepancy").sort_values("campaign_id")
    assert len(table) == 2
    fb = table[table["platform"] == "facebook"].iloc[0]
    assert fb["campaign_id"] == "238000000000000001"  # an 18-digit id stays a string
    assert (fb["installs_platform"], fb["installs_mmp"], fb["difference"]) == (56, 50, 6)
    assert abs(fb["gap"] - 0.12) < 1e-9 and not fb["flagged"]
