"""bench.logs_scale's object-store column: a small day extracted with the lake in the S3 bucket
gives the rows of the local folder, and the table names both lakes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from bench.logs_data import log_day_files
from bench.logs_scale import REPO, S3Target, one_run_argv, run_key, table
from bench.profiles import REPORT_DAY

from .conftest import REGION, S3Server


def _run(lake: Path, glob: str, workers: int, s3: S3Target | None) -> dict:  # type: ignore[type-arg]
    lake.mkdir()
    out = lake / "result.json"
    subprocess.run(one_run_argv(lake, glob, workers, out, False, s3), cwd=REPO, check=True)
    return json.loads(out.read_text())  # type: ignore[no-any-return]


def test_the_s3_lake_extracts_the_rows_of_the_folder(
    tmp_path: Path, s3_server: S3Server, s3_env: dict[str, str], s3_prefix: str
) -> None:
    log_day_files(tmp_path / "logs", REPORT_DAY, events=20_000, users=2_000, files=4)
    glob = str(tmp_path / "logs" / "{date}-*.jsonl.gz")
    s3 = S3Target(s3_server.url(s3_prefix), s3_server.endpoint, REGION)
    local = _run(tmp_path / "local", glob, 1, None)
    remote = _run(tmp_path / "s3", glob, 2, s3)
    assert local["lake"] == "local" and remote["lake"] == "s3"
    assert local["lines"] == remote["lines"] == 20_000
    assert local["rows"] == remote["rows"] > 7_000
    # The bucket holds the run's partitions, under a prefix of its own.
    store = s3_server.connect(s3_prefix)
    listing = store.client.list_objects_v2(Bucket=store.location.bucket, Prefix=f"{s3_prefix}/")
    keys = [o["Key"] for o in listing.get("Contents", [])]
    assert any("/events/date=" in k and k.endswith("/_manifest.json") for k in keys), keys

    result = {
        "profile": "small", "events": 20_000, "files": 4,
        "runs": {run_key("local", 1): [local], run_key("s3", 2): [remote]},
    }  # fmt: skip
    rows = table(result).splitlines()[2:]
    assert [r.split("|")[4].strip() for r in rows] == ["local", "s3"]
    assert [r.split("|")[5].strip() for r in rows] == ["1", "2"]
