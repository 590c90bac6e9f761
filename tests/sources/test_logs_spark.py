"""[logs] engine = spark: the same pseudonyms, counts and quarantine as the DuckDB path, on the
same files, in Spark local mode. Slow (a JVM start): pytest -m slow tests/sources/test_logs_spark.py
(needs `pip install adperf[spark]` and Java 17+)."""

from __future__ import annotations

import gzip
import os
import sys
from collections.abc import Iterator

import pyarrow as pa
import pytest

from adperf.pseudonym import pseudonymize_one
from adperf.schema import EVENTS
from adperf.sources.logs import fetch_events

from .test_logs import DAY, KEY, MALFORMED, _line

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _pyspark() -> None:
    # In a fixture, not at import: the default run deselects these slow tests before they
    # could skip (pip install -e '.[spark]' brings pyspark).
    pytest.importorskip("pyspark")


@pytest.fixture(scope="module")
def spark() -> Iterator[object]:
    from pyspark.sql import SparkSession

    # The workers run this interpreter (adperf, duckdb), not the first python3 on PATH: without
    # it the test passes only inside an activated venv. PySpark reads it from the environment.
    previous = os.environ.get("PYSPARK_PYTHON")
    os.environ["PYSPARK_PYTHON"] = sys.executable

    session = (
        SparkSession.builder.master("local[2]")
        .appName("adperf-test")
        .config("spark.ui.enabled", "false")
        # Small blocks: the plain file is read as several splits, cut mid-line.
        .config("spark.sql.files.maxPartitionBytes", "4096")
        .config("spark.sql.files.openCostInBytes", "0")
        .getOrCreate()
    )
    try:
        yield session
    finally:
        session.stop()
        if previous is None:
            os.environ.pop("PYSPARK_PYTHON", None)
        else:
            os.environ["PYSPARK_PYTHON"] = previous


def test_spark_gives_the_duckdb_paths_rows_pseudonyms_and_counts(tmp_path, spark) -> None:
    from adperf.sources.logs_spark import fetch_events_spark

    body = [
        _line(
            f"2026-11-27T12:{i // 60 % 60:02d}:{i % 60:02d}+09:00",
            user=f"usr_{i % 37}",
            peer_id=f"usr_{(i * 7) % 41}",
            props={"premium": [True, False, None][i % 3], "pad": "p" * (i % 70)},
        )
        for i in range(400)
    ]
    body[120] = _line("2026-11-28T12:00:00+09:00")  # out of day
    body[130] = _line("2026-11-27T12:00:00+09:00", event="session_start")
    body[140] = b"   \n"  # whitespace only: not a line
    body[150] = body[150].replace(b"\n", b"\r\n")  # a CRLF ending
    plain = b"".join(body[:250]) + b"".join(MALFORMED) + body[3]  # a repeat
    (tmp_path / "2026-11-27-a.jsonl").write_bytes(plain)
    (tmp_path / "2026-11-27-b.jsonl.gz").write_bytes(gzip.compress(b"".join(body[250:]) + body[3]))
    pattern = str(tmp_path / "2026-11-27-*")
    options = {"day": DAY, "timezone": "Asia/Seoul", "hmac_key": KEY, "max_bad_fraction": 0.1}

    whole, counts = fetch_events(pattern, **options)
    table, spark_counts = fetch_events_spark(spark, pattern, **options)

    assert counts["bad"] == len(MALFORMED) and counts["duplicates"] == 2
    assert spark_counts == counts
    got = table.to_pandas()
    got["premium"] = got["premium"].astype("boolean")
    assert table.schema == EVENTS.schema
    assert got["user_pid"].iloc[0] == pseudonymize_one("usr_0", KEY)  # file order, same key
    import pandas as pd

    pd.testing.assert_frame_equal(got, whole)
    assert isinstance(table, pa.Table) and len(got) == len(whole) > 380
