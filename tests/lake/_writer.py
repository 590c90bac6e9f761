"""A lake writer process the S3 tests SIGKILL or race: writes one partition of `rows` rows,
all tagged TAG, as several record batches, to an s3:// lake.

python _writer.py ENDPOINT URL MODE TAG ROWS READY_FILE [BARRIER_DIR PARTIES]

Credentials come from the environment (boto3's chain). Modes:
  clean     write the partition and exit
  batches   stop (write READY_FILE, sleep) after the first batch was encoded
  uploaded  stop after the data object was uploaded, before the manifest commit
  race      before the commit, wait until PARTIES writers reached it (files in BARRIER_DIR)
At a stop the test kills the process with SIGKILL: the kill lands exactly there.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from adperf import lake
from adperf.objstore import S3Bucket

DATASET, KEY, DAY = "tagged", "date", "2026-11-20"
SCHEMA = pa.schema([("tag", pa.string()), ("i", pa.int64()), ("payload", pa.string())])
BATCH = 5_000


def _stop_here(ready: Path) -> None:
    ready.write_text("ready")
    time.sleep(600)  # the test kills us now
    raise SystemExit("not killed")


def batches(tag: str, rows: int, stop_after_first: Path | None) -> Iterator[pa.RecordBatch]:
    for start in range(0, rows, BATCH):
        n = min(BATCH, rows - start)
        ids = list(range(start, start + n))
        payload = [f"{tag}-{i:09d}" for i in ids]
        columns = [pa.array([tag] * n), pa.array(ids, pa.int64()), pa.array(payload)]
        yield pa.record_batch(columns, schema=SCHEMA)
        if stop_after_first is not None:
            _stop_here(stop_after_first)


def main() -> None:
    endpoint, url, mode, tag, rows, ready = sys.argv[1:7]
    store = S3Bucket.connect(url, endpoint_url=endpoint, region="us-east-1")
    real_commit = store._commit

    def commit(*args: Any, **kw: Any) -> None:
        if mode == "uploaded":
            _stop_here(Path(ready))
        if mode == "race":
            barrier, parties = Path(sys.argv[7]), int(sys.argv[8])
            (barrier / tag).write_text("here")
            deadline = time.monotonic() + 120
            while len(list(barrier.iterdir())) < parties:
                assert time.monotonic() < deadline, "the other writers never came"
                time.sleep(0.005)
        real_commit(*args, **kw)

    store._commit = commit  # type: ignore[method-assign]
    stop = Path(ready) if mode == "batches" else None
    lake.write_batches(
        store, DATASET, KEY, DAY, SCHEMA, batches(tag, int(rows), stop), meta={"tag": tag}
    )
    if mode == "race":
        Path(ready).write_text("committed")


if __name__ == "__main__":
    main()
