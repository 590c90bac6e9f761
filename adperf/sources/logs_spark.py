"""Server logs → EVENTS rows with Spark, for days too big for one machine ([logs] engine = spark).

The same extract as `adperf.sources.logs.DayEvents`, distributed: Spark's text reader splits
the day's files (a gzip whole; a plain file in blocks, each line read by the block it starts
in, the rule of `plan_pieces`), and each batch of lines is classified by the very DuckDB
statement of the DuckDB path (`_LINES`: malformed, out of the day, another event, kept) and
its ids pseudonymized by the same `IdPseudonymizer` with the same key. Exact repeats are
dropped keeping the first in file order (file, block, line: Spark's `_metadata` columns), the
kept rows come back in file order and the counts are the DuckDB path's, so the two engines
write the same partitions (tests/sources/test_logs_spark.py, slow).

Limits: a gzip with a truncated tail fails the Spark job (Hadoop's codec raises; the DuckDB
path keeps its readable lines), and the kept rows are collected to the driver, which writes
the partitions through `adperf.lake` (matches only: a few percent of a day's bytes).
Only this module imports pyspark (`pip install adperf[spark]`).
"""

from __future__ import annotations

import datetime as dt
import tempfile
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from adperf.errors import SourceError
from adperf.pseudonym import IdPseudonymizer
from adperf.schema import EVENTS
from adperf.sources.logs import (
    _LINES,
    _STATUS_COUNTS,
    DEFAULT_MAX_BAD_FRACTION,
    KEPT,
    KEPT_EVENTS,
    _check_bad_share,
    _repeat_str,
    log_files,
)
from adperf.timeutil import day_bounds_utc

# What the executors hand back per line: its status, the kept fields (pseudonymized), and
# where it was (file, block, position) for file order.
_CLASSIFIED = pa.schema(
    [
        ("status", pa.int32()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("event", pa.string()),
        ("user_pid", pa.string()),
        ("peer_pid", pa.string()),
        ("premium", pa.bool_()),
        ("file", pa.string()),
        ("block", pa.int64()),
        ("pos", pa.int64()),
    ]
)
_FIELDS = ["ts", "event", "user_pid", "peer_pid", "premium"]


def fetch_events_spark(
    spark: Any,
    path_pattern: str,
    *,
    day: dt.date,
    timezone: str,
    hmac_key: bytes,
    max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION,
    events: Collection[str] | None = KEPT_EVENTS,
) -> tuple[pa.Table, dict[str, int]]:
    """The day's EVENTS rows (file order) and counts, computed by `spark` (a SparkSession)."""
    from pyspark.sql import functions as F

    if not hmac_key:
        raise ValueError("logs: empty HMAC key")
    files = log_files(path_pattern, day)
    if not files:
        raise SourceError(
            "logs",
            day.isoformat(),
            f"no file matches {path_pattern!r}",
            "check [logs] path, or wait until the day's logs are rotated",
        )
    start, end = day_bounds_utc(day, day, timezone)
    params: dict[str, Any] = {
        "start": start.replace(tzinfo=dt.UTC),
        "end": end.replace(tzinfo=dt.UTC),
        "all_events": events is None,
        "events": sorted(events) if events else [""],
    }
    # Lines split on '\n' only (Hadoop's default also splits on a lone '\r'); DuckDB reads
    # a '\r\n' ending as the line's end and skips lines of whitespace only, so they go here.
    lines = (
        spark.read.option("lineSep", "\n")
        .text([str(p) for p in files])
        .select(
            F.col("value"),
            F.col("_metadata.file_path").alias("file"),
            F.col("_metadata.file_block_start").alias("block"),
            F.monotonically_increasing_id().alias("pos"),
        )
        .where(F.col("value").rlike("[^ \t\r]"))
    )
    classify = _Classifier(hmac_key, params)
    rows = lines.mapInArrow(classify, _spark_schema()).cache()
    try:
        counts = {"lines": 0, "bad": 0, "out_of_day": 0, "other_events": 0}
        for status, n in rows.groupBy("status").count().collect():
            counts["lines"] += n
            if status != KEPT:
                counts[_STATUS_COUNTS[status]] += n
        counts |= {"duplicates": 0, "files": len(files), "truncated_files": 0}
        _check_bad_share(counts, day, max_bad_fraction)
        # One row per distinct kept line, at its first place in file order (paths sort as
        # `log_files` sorts them: the files' names are the glob's sorted matches).
        first = F.min(F.struct("file", "block", "pos")).alias("at")
        kept = rows.where(F.col("status") == KEPT).groupBy(*_FIELDS)
        distinct = kept.agg(first, F.count(F.lit(1)).alias("n"))
        table = distinct.orderBy("at").select(*_FIELDS, "n").toArrow()
    finally:
        rows.unpersist()
    counts["duplicates"] = int(pc.sum(table["n"]).as_py() or 0) - table.num_rows
    out = pa.table(
        {
            "date": _repeat_str(day.isoformat(), table.num_rows),
            **{f: table[f] for f in _FIELDS},
        }
    )
    return out.cast(EVENTS.schema), counts


def _spark_schema() -> Any:
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(_CLASSIFIED)


class _Classifier:
    """The executor side: batches of lines → `_CLASSIFIED` batches (picklable; the key goes
    with the job's closure, never through Spark's configuration or environment)."""

    def __init__(self, hmac_key: bytes, params: dict[str, Any]) -> None:
        self.hmac_key, self.params = hmac_key, params

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        ids = IdPseudonymizer(self.hmac_key)
        con = duckdb.connect()
        try:
            con.execute("SET TimeZone = 'UTC'")
            con.execute("SET preserve_insertion_order = true")
            with tempfile.TemporaryDirectory(prefix="adperf-logs-spark-") as tmp:
                part = Path(tmp) / "lines.jsonl"
                for batch in batches:
                    if batch.num_rows:
                        yield self._classify(con, ids, batch, part)
        finally:
            con.close()

    def _classify(
        self, con: Any, ids: IdPseudonymizer, batch: pa.RecordBatch, part: Path
    ) -> pa.RecordBatch:
        # The lines' bytes as they were (invalid UTF-8 included: binary, never decoded), one
        # a line, into a file DuckDB's read_json reads as the DuckDB path reads a log file.
        raw = pc.binary_join_element_wise(batch.column(0).cast(pa.binary()), b"\n", b"")
        raw = raw.cast(pa.large_binary())
        _, offsets, data = raw.buffers()
        first, last = np.frombuffer(offsets, dtype=np.int64)[[raw.offset, raw.offset + len(raw)]]
        part.write_bytes(memoryview(data)[int(first) : int(last)])
        got = con.sql(_LINES, params={**self.params, "path": str(part)}).to_arrow_table()
        if got.num_rows != batch.num_rows:
            raise RuntimeError(
                f"logs (spark): DuckDB read {got.num_rows} lines of a batch of {batch.num_rows}"
            )
        return pa.RecordBatch.from_arrays(
            [
                pc.cast(got["status"], pa.int32()).combine_chunks(),
                pc.cast(got["ts"], pa.timestamp("us", tz="UTC")).combine_chunks(),
                got["event"].combine_chunks(),
                ids.hex(_large(got["user_id"])),
                ids.hex(_large(got["peer_id"])),
                got["premium"].combine_chunks(),
                batch.column(1),
                batch.column(2),
                batch.column(3),
            ],
            schema=_CLASSIFIED,
        )


def _large(ids: pa.ChunkedArray) -> pa.Array:
    return pc.cast(ids.combine_chunks(), pa.large_string())
