"""A day's log shards merged in the object store: the events partition is the shards' own
objects (copied inside the bucket, never re-encoded), and the day equals one shard's read."""

from __future__ import annotations

from pathlib import Path

import pytest

from adperf import lake
from adperf.objstore import S3Bucket
from adperf.sources.logs import (
    MATCH_EDGES,
    DayEvents,
    edges_per_pair,
    merge_shard_partitions,
    shard_folder,
    write_day,
)
from bench.logs_data import log_day_files
from bench.profiles import REPORT_DAY, TIMEZONE

from .test_s3_lake import _manifest

KEY = b"shard-test-key"


def _read(root: lake.Root, shards: int, pattern: str) -> str:
    """The day read by `shards` shards into `root` (one: the unsharded write), merged there."""
    for shard in range(shards):
        with DayEvents(
            pattern, day=REPORT_DAY, timezone=TIMEZONE, hmac_key=KEY, shard=shard, shards=shards
        ) as events:
            write_day(root, events, key_version="1")
    return merge_shard_partitions(root, REPORT_DAY, shards, key_version="1") if shards > 1 else ""


@pytest.mark.parametrize("shards", [2, 3])
def test_shards_merged_in_the_bucket_equal_one_read_of_the_day(
    s3_lake: S3Bucket, tmp_path: Path, shards: int
) -> None:
    log_day_files(tmp_path / "logs", REPORT_DAY, events=20_000, users=2_000, files=6)
    pattern = str(tmp_path / "logs" / "{date}-*.jsonl.gz")
    _read(tmp_path / "whole", 1, pattern)
    how = _read(s3_lake, shards, pattern)
    assert how == "combined"  # generated lines never repeat
    day = REPORT_DAY.isoformat()
    got, want = (
        lake.read_arrow(root, "events", "date", day, key_version="1")
        for root in (s3_lake, tmp_path / "whole")
    )
    assert got.num_rows > 5_000 and got.equals(want)
    got, want = (
        lake.read_arrow(root, MATCH_EDGES, "date", day, key_version="1")
        for root in (s3_lake, tmp_path / "whole")
    )
    # The shards' partial edges: the same matches per pair as one read's edges.
    assert got.num_rows >= want.num_rows > 5_000
    assert edges_per_pair(got).equals(edges_per_pair(want))
    meta, want = (
        lake.read_meta(root, "events", "date", day) for root in (s3_lake, tmp_path / "whole")
    )
    assert meta == want  # counts, rows and key version, as one read records them
    # The events are the shards' objects, one per shard that read any bytes.
    parts = _manifest(s3_lake, "events", day)["parts"]
    read_any = [
        lake.read_meta(s3_lake, shard_folder("events", k, shards), "date", day)["lines"] > 0
        for k in range(shards)
    ]
    assert len(parts) == shards and all(read_any)
