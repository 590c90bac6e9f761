"""[logs] engine = spark through luigi: EventLogs requires EventLogsSpark (a PySparkTask run by
spark-submit in local mode), whose partitions equal the DuckDB path's. Slow (a JVM start):
pytest -m slow tests/tasks/test_logs_spark_task.py (pip install adperf[spark]; Java 17+)."""

from __future__ import annotations

from pathlib import Path

import luigi
import pandas as pd
import pytest

from adperf import lake

from .conftest import END, configure

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _pyspark() -> None:
    # In a fixture, not at import: the default run deselects these slow tests before they
    # could skip (pip install -e '.[spark]' brings pyspark).
    pytest.importorskip("pyspark")


def _extract(root: Path, engine: str) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    configure(root, logs={"engine": engine}, spark={"master": "local[2]"})
    from tasks.extract import EventLogs

    result = luigi.build(
        [EventLogs(date=END)], local_scheduler=True, detailed_summary=True, workers=1
    )
    assert result.status == luigi.LuigiStatusCode.SUCCESS, result.summary_text
    assert ("EventLogsSpark" in result.summary_text) == (engine == "spark")
    iso = END.isoformat()
    events = lake.read_partition(root / "lake", "events", "date", iso)
    edges = lake.read_partition(root / "lake", "match_edges", "date", iso)
    return events, edges, lake.read_meta(root / "lake", "events", "date", iso)


def test_event_logs_on_spark_equal_the_duckdb_path(run_root: Path, tmp_path_factory) -> None:
    import shutil

    other = tmp_path_factory.mktemp("duckdb")
    shutil.copytree(run_root / "world", other / "world")
    try:
        spark_events, spark_edges, spark_meta = _extract(run_root, "spark")
    finally:  # luigi's config is the process's: later tests read [logs] engine too
        configure(run_root, logs={"engine": "duckdb"})
    duck_events, duck_edges, duck_meta = _extract(other, "duckdb")
    configure(run_root)
    assert len(duck_events) > 100 and duck_meta["bad"] > 0
    pd.testing.assert_frame_equal(spark_events, duck_events)
    pd.testing.assert_frame_equal(spark_edges, duck_edges)
    drop = ("dataset",)
    assert {k: v for k, v in spark_meta.items() if k not in drop} == {
        k: v for k, v in duck_meta.items() if k not in drop
    }
