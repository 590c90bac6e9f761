"""The lake on a real S3 server (SeaweedFS): partitions appear whole or not at all, a rewrite is
one commit, concurrent writers end with one writer's version, readers never see a mix."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from adperf import lake
from adperf.errors import ConfigError
from adperf.objstore import MANIFEST_FILE, LakeStoreRefused, S3Bucket, S3Location
from adperf.pseudonym import KeyVersionMismatch, MixedKeyVersions
from adperf.schema import PAYMENTS

from ..test_lake import _payments
from .conftest import ACCESS_KEY, CREDENTIALS, SECRET_KEY, S3Server

REPO = Path(__file__).resolve().parents[2]
WRITER = Path(__file__).with_name("_writer.py")
DATASET, DAY = "tagged", "2026-11-20"


def _manifest(store: S3Bucket, dataset: str, day: str) -> dict:  # type: ignore[type-arg]
    key = store.location.key(f"{dataset}/date={day}/{MANIFEST_FILE}")
    body = store.client.get_object(Bucket=store.location.bucket, Key=key)["Body"].read()
    return json.loads(body)  # type: ignore[no-any-return]


def _data_objects(store: S3Bucket, dataset: str, day: str) -> list[str]:
    prefix = store.location.key(f"{dataset}/date={day}/_data/")
    reply = store.client.list_objects_v2(Bucket=store.location.bucket, Prefix=prefix)
    return sorted(obj["Key"] for obj in reply.get("Contents", []))


def _writer(
    server: S3Server, prefix: str, mode: str, tag: str, rows: int, ready: Path, *extra: str
) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ADPERF_"))}
    args = [server.endpoint, server.url(prefix), mode, tag, str(rows), str(ready), *extra]
    return subprocess.Popen(
        [sys.executable, str(WRITER), *args],
        cwd=REPO,
        env=env | CREDENTIALS,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _kill_at(proc: subprocess.Popen[str], ready: Path, mode: str) -> None:
    """Wait until the writer stopped at `mode`, then SIGKILL it."""
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            if proc.poll() is not None:
                pytest.fail(f"writer ended before {mode}: {proc.stderr.read()[-3000:]}")  # type: ignore[union-attr]
            assert time.monotonic() < deadline, f"writer never reached {mode}"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()  # type: ignore[union-attr]


def _finish(proc: subprocess.Popen[str]) -> None:
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-3000:]


def _tagged(store: S3Bucket) -> tuple[set[str], int, dict]:  # type: ignore[type-arg]
    df = lake.read_partition(store, DATASET, "date", DAY)
    return set(df["tag"]), len(df), lake.read_meta(store, DATASET, "date", DAY)


# ---------------------------------------------------------------------------------- basics


def test_a_partition_reads_back_as_from_a_local_lake(s3_lake: S3Bucket, tmp_path: Path) -> None:
    assert not lake.partition_exists(s3_lake, "payments", "date", DAY)
    with pytest.raises(FileNotFoundError, match=f"s3://.*/payments/date={DAY}"):
        lake.read_partition(s3_lake, "payments", "date", DAY)
    for root in (s3_lake, tmp_path):
        lake.write_partition(root, PAYMENTS, "date", DAY, _payments(7), key_version="1")
        lake.write_frame(root, "campaign_report", "date", DAY, pd.DataFrame({"spend": [1.5]}))
    assert lake.partition_exists(s3_lake, "payments", "date", DAY, key_version="1")
    for dataset in ("payments", "campaign_report"):
        got = lake.read_partition(s3_lake, dataset, "date", DAY)
        pd.testing.assert_frame_equal(got, lake.read_partition(tmp_path, dataset, "date", DAY))
        assert lake.read_meta(s3_lake, dataset, "date", DAY) == lake.read_meta(
            tmp_path, dataset, "date", DAY
        )
        for name in (lake.DATA_FILE, lake.META_FILE):  # the same bytes: the same report hash
            assert lake.read_file(s3_lake, dataset, "date", DAY, name) == lake.read_file(
                tmp_path, dataset, "date", DAY, name
            )
    where = lake.partition_where(s3_lake, "payments", "date", DAY)
    assert where == f"{s3_lake.location}/payments/date={DAY}"
    assert lake.partition_nbytes(s3_lake, "payments", "date", DAY) == len(
        lake.read_file(s3_lake, "payments", "date", DAY, lake.DATA_FILE) or b""
    )


def test_a_rewrite_replaces_the_day_in_one_commit(
    s3_lake: S3Bucket, s3_server: S3Server, s3_prefix: str
) -> None:
    lake.write_partition(s3_lake, PAYMENTS, "date", DAY, _payments(3), key_version="1")
    first = _manifest(s3_lake, "payments", DAY)
    lake.write_partition(s3_lake, PAYMENTS, "date", DAY, _payments(5), key_version="1")
    second = _manifest(s3_lake, "payments", DAY)
    assert len(lake.read_partition(s3_lake, "payments", "date", DAY)) == 5
    assert (first["generation"], second["generation"]) == (1, 2)
    assert second["meta"]["rows"] == 5 and second["data"] != first["data"]
    # The replaced object stays for readers that read the old manifest, until its grace ends.
    assert [r[0] for r in second["retired"]] == [first["data"]]
    assert _data_objects(s3_lake, "payments", DAY) == sorted([first["data"], second["data"]])
    hasty = s3_server.connect(s3_prefix, stale_seconds=0)  # every grace over: collected
    lake.write_partition(hasty, PAYMENTS, "date", DAY, _payments(4), key_version="1")
    third = _manifest(s3_lake, "payments", DAY)
    assert third["generation"] == 3
    assert _data_objects(s3_lake, "payments", DAY) == [third["data"]]
    assert len(lake.read_partition(s3_lake, "payments", "date", DAY)) == 4


def test_a_data_object_read_again_is_not_downloaded_again_and_a_rewrite_is_seen(
    s3_lake: S3Bucket, s3_server: S3Server, s3_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = _payments(3)
    new = _payments(3).assign(payment_id=[f"new-{i}" for i in range(3)])
    lake.write_partition(s3_lake, PAYMENTS, "date", DAY, old, key_version="1")
    fetched: list[str] = []
    download = S3Bucket._download

    def counting(self: S3Bucket, key: str):  # type: ignore[no-untyped-def]
        fetched.append(key)
        return download(self, key)

    monkeypatch.setattr(S3Bucket, "_download", counting)
    for _ in range(2):
        got = lake.read_partition(s3_lake, "payments", "date", DAY)
        assert got["payment_id"].tolist() == old["payment_id"].tolist()
    assert fetched == [_manifest(s3_lake, "payments", DAY)["data"]]
    # Another process's writer (another client) replaces the day: its new object is read.
    other = s3_server.connect(s3_prefix)
    lake.write_partition(other, PAYMENTS, "date", DAY, new, key_version="1")
    got = lake.read_partition(s3_lake, "payments", "date", DAY)
    assert got["payment_id"].tolist() == new["payment_id"].tolist()
    assert fetched[1:] == [_manifest(s3_lake, "payments", DAY)["data"]]


def test_combine_copies_the_sources_objects_into_one_commit(
    s3_lake: S3Bucket, s3_server: S3Server, s3_prefix: str, tmp_path: Path
) -> None:
    sources = []
    for i, n in enumerate((2, 3)):
        df = _payments(n).assign(payment_id=[f"{i}-{k}" for k in range(n)])
        for root in (s3_lake, tmp_path):
            lake.write_partition(root, PAYMENTS, "date", f"s{i}", df, key_version="1")
        sources.append(("payments", "date", f"s{i}"))
    for root in (s3_lake, tmp_path):
        lake.combine(root, "payments", "date", DAY, sources, meta={"x": 1}, key_version="1")
    got = lake.read_partition(s3_lake, "payments", "date", DAY, key_version="1")
    pd.testing.assert_frame_equal(got, lake.read_partition(tmp_path, "payments", "date", DAY))
    assert got["payment_id"].tolist() == ["0-0", "0-1", "1-0", "1-1", "1-2"]
    assert lake.read_meta(s3_lake, "payments", "date", DAY) == lake.read_meta(
        tmp_path, "payments", "date", DAY
    )
    assert lake.read_file(s3_lake, "payments", "date", DAY, lake.DATA_FILE) == lake.read_file(
        tmp_path, "payments", "date", DAY, lake.DATA_FILE
    )  # both files' bytes, in order, on either backend
    manifest = _manifest(s3_lake, "payments", DAY)
    assert "data" not in manifest and len(manifest["parts"]) == 2
    assert _data_objects(s3_lake, "payments", DAY) == sorted(manifest["parts"])
    assert lake.partition_nbytes(s3_lake, "payments", "date", DAY) == sum(
        lake.partition_nbytes(s3_lake, *s) for s in sources
    )
    # Copies of its own: the sources rewritten and their old objects collected, it still reads.
    hasty = s3_server.connect(s3_prefix, stale_seconds=0)
    for _, _, value in sources:
        for _ in range(2):
            lake.write_partition(hasty, PAYMENTS, "date", value, _payments(1), key_version="1")
    assert len(lake.read_partition(s3_lake, "payments", "date", DAY)) == 5
    # A combine over it (e.g. the day merged again) is one more commit, the old parts retired.
    lake.combine(hasty, "payments", "date", DAY, sources, key_version="1")
    assert len(lake.read_partition(s3_lake, "payments", "date", DAY)) == 2
    assert _manifest(s3_lake, "payments", DAY)["generation"] == 2


def test_the_server_refuses_a_stale_or_duplicate_commit(s3_lake: S3Bucket) -> None:
    """The design rests on the server honouring If-None-Match / If-Match on PutObject."""
    from botocore.exceptions import ClientError

    bucket, key = s3_lake.location.bucket, s3_lake.location.key("probe/_manifest.json")
    s3_lake.client.put_object(Bucket=bucket, Key=key, Body=b"1", IfNoneMatch="*")
    etag = s3_lake.client.head_object(Bucket=bucket, Key=key)["ETag"]
    with pytest.raises(ClientError) as err:
        s3_lake.client.put_object(Bucket=bucket, Key=key, Body=b"2", IfNoneMatch="*")
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    s3_lake.client.put_object(Bucket=bucket, Key=key, Body=b"3", IfMatch=etag)
    with pytest.raises(ClientError) as err:
        s3_lake.client.put_object(Bucket=bucket, Key=key, Body=b"4", IfMatch=etag)
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert s3_lake.client.get_object(Bucket=bucket, Key=key)["Body"].read() == b"3"


def test_the_key_version_check_holds_on_s3(s3_lake: S3Bucket) -> None:
    lake.write_partition(s3_lake, PAYMENTS, "date", DAY, _payments(), key_version="1")
    lake.write_partition(s3_lake, PAYMENTS, "date", "2026-11-21", _payments(3), key_version="2")
    lake.write_partition(s3_lake, PAYMENTS, "date", "2026-11-22", _payments())  # unrecorded
    assert lake.partition_key_version(s3_lake, "payments", "date", DAY) == (True, "1")
    assert lake.partition_exists(s3_lake, "payments", "date", DAY, key_version="1")
    assert not lake.partition_exists(s3_lake, "payments", "date", DAY, key_version="2")
    assert not lake.partition_exists(s3_lake, "payments", "date", "2026-11-22", key_version="1")
    with pytest.raises(KeyVersionMismatch, match=f"payments/date={DAY}"):
        lake.read_partition(s3_lake, "payments", "date", DAY, key_version="2")
    with pytest.raises(MixedKeyVersions, match=f"date={DAY}: 1, date=2026-11-21: 2"):
        lake.read_partitions(s3_lake, "payments", "date", [DAY, "2026-11-21"])
    lake.write_frame(s3_lake, "cohort_roas", "date", DAY, pd.DataFrame({"roas": [1.5]}))
    assert lake.partition_exists(s3_lake, "cohort_roas", "date", DAY, key_version="7")


def test_an_s3_root_never_carries_credentials() -> None:
    with pytest.raises(ValueError, match="environment") as err:
        S3Location.parse(f"s3://{ACCESS_KEY}:{SECRET_KEY}@bucket/lake")
    assert ACCESS_KEY not in str(err.value) and SECRET_KEY not in str(err.value)
    with pytest.raises(ValueError, match="endpoint"):
        lake.partition_exists("s3://bucket/lake", "payments", "date", DAY)
    assert S3Location.parse("s3://bucket/a/b/") == S3Location("bucket", "a/b")


def test_a_missing_bucket_is_a_config_error_naming_it(
    s3_server: S3Server, s3_env: dict[str, str]
) -> None:
    store = S3Bucket.connect(
        "s3://adperf-no-such-bucket/lake", endpoint_url=s3_server.endpoint, region="us-east-1"
    )
    with pytest.raises(ConfigError, match="s3://adperf-no-such-bucket/lake/payments/date=.*"
                       "NoSuchBucket. Fix: create the bucket"):  # fmt: skip
        lake.write_partition(store, PAYMENTS, "date", DAY, _payments(), key_version="1")
    with pytest.raises(LakeStoreRefused, match="NoSuchBucket"):
        lake.partition_exists(store, "payments", "date", DAY)


def test_missing_credentials_and_profiles_are_config_errors(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance role to ask for
    store = s3_server.connect("nobody")
    with pytest.raises(LakeStoreRefused, match="no S3 credentials found. Fix: set AWS_ACCESS"):
        lake.partition_exists(store, "payments", "date", DAY)
    with pytest.raises(ConfigError, match=r"\[s3\] profile = adperf-nope is in no AWS config"):
        S3Bucket.connect(s3_server.url("x"), endpoint_url=s3_server.endpoint, profile="adperf-nope")


# ------------------------------------------------------------------------- kills and races


def test_a_commit_that_lost_a_race_commits_over_the_winner(s3_lake: S3Bucket) -> None:
    """Writer A read the manifest; B committed; A's If-Match fails (412), A reads again and
    commits over B's version: the chain keeps every version, none is lost or mixed."""
    lake.write_partition(s3_lake, PAYMENTS, "date", DAY, _payments(2), key_version="1")
    other = S3Bucket(s3_lake.location, s3_lake.client)
    real = s3_lake._manifest
    calls: list[int] = []

    def manifest_then_b_commits(part: str):  # type: ignore[no-untyped-def]
        found = real(part)
        calls.append(1)
        if part.startswith("payments/") and len(calls) == 1:  # A's first read, then B's write
            lake.write_partition(other, PAYMENTS, "date", DAY, _payments(3), key_version="1")
        return found

    s3_lake._manifest = manifest_then_b_commits  # type: ignore[method-assign]
    lake.write_partition(s3_lake, PAYMENTS, "date", DAY, _payments(4), key_version="1")
    final = _manifest(s3_lake, "payments", DAY)
    assert final["generation"] == 3 and final["meta"]["rows"] == 4
    assert len(final["retired"]) == 2  # the first version and B's, both kept for readers
    assert len(lake.read_partition(s3_lake, "payments", "date", DAY)) == 4


@pytest.mark.parametrize("before", ["nothing", "a version"])
@pytest.mark.parametrize("mode", ["batches", "uploaded"])
def test_a_sigkilled_writer_leaves_no_visible_partial_data(
    s3_server: S3Server, s3_env: dict[str, str], s3_prefix: str, tmp_path: Path, mode: str,
    before: str,
) -> None:  # fmt: skip
    store = s3_server.connect(s3_prefix)
    if before == "a version":
        _write(store, "old", 4_000)
    ready = tmp_path / "ready"
    _kill_at(_writer(s3_server, s3_prefix, mode, "new", 20_000, ready), ready, mode)
    if before == "nothing":
        assert not lake.partition_exists(store, DATASET, "date", DAY)
    else:
        tags, rows, meta = _tagged(store)
        assert tags == {"old"} and rows == 4_000 and meta["tag"] == "old"
    orphans = _data_objects(store, DATASET, DAY)
    # Killed after its upload, the writer left its whole data object: present, not visible.
    assert len(orphans) == (1 if before == "a version" else 0) + (mode == "uploaded")
    # The re-run: the same rows as a clean run elsewhere, byte for byte; the orphan collected
    # (once stale: here at once).
    _write(s3_server.connect(s3_prefix, stale_seconds=0), "new", 20_000)
    clean = s3_server.connect(s3_prefix + "-clean")
    _write(clean, "new", 20_000)
    assert lake.read_file(store, DATASET, "date", DAY, lake.DATA_FILE) == lake.read_file(
        clean, DATASET, "date", DAY, lake.DATA_FILE
    )
    assert _tagged(store) == ({"new"}, 20_000, lake.read_meta(clean, DATASET, "date", DAY))
    assert _data_objects(store, DATASET, DAY) == [_manifest(store, DATASET, DAY)["data"]]


def _write(store: S3Bucket, tag: str, rows: int) -> None:
    """What a clean run of _writer.py writes, in this process."""
    from . import _writer

    batches = _writer.batches(tag, rows, None)
    lake.write_batches(store, DATASET, "date", DAY, _writer.SCHEMA, batches, meta={"tag": tag})


def test_concurrent_writers_of_one_partition_end_with_one_complete_version(
    s3_server: S3Server, s3_env: dict[str, str], s3_prefix: str, tmp_path: Path
) -> None:
    sizes = {"a": 30_000, "b": 10_000, "c": 20_000}
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    procs = [
        _writer(s3_server, s3_prefix, "race", tag, n, tmp_path / tag, str(barrier), "3")
        for tag, n in sizes.items()
    ]
    for proc in procs:
        _finish(proc)
    store = s3_server.connect(s3_prefix)
    tags, rows, meta = _tagged(store)
    assert len(tags) == 1, f"a mix of writers: {tags}"
    (tag,) = tags
    assert rows == sizes[tag] and meta["tag"] == tag and meta["rows"] == rows
    manifest = _manifest(store, DATASET, DAY)
    # Every writer committed exactly once, each over the version before it (412 → re-read).
    assert manifest["generation"] == 3 and len(manifest["retired"]) == 2
    assert len(_data_objects(store, DATASET, DAY)) == 3


def test_a_reader_during_a_rewrite_reads_the_whole_old_version(s3_lake: S3Bucket) -> None:
    lake.write_partition(s3_lake, PAYMENTS, "date", DAY, _payments(3), key_version="1")
    # The reader has read the manifest; the writer now commits a new version of the day.
    seen = lake.current_version(s3_lake, "payments", "date", DAY)
    assert seen is not None
    lake.write_partition(s3_lake, PAYMENTS, "date", DAY, _payments(6), key_version="1")
    old = s3_lake.read_table(seen).to_pandas()
    assert len(old) == 3 and seen.meta is not None and seen.meta["rows"] == 3
    assert len(lake.read_partition(s3_lake, "payments", "date", DAY)) == 6


def test_readers_during_many_rewrites_see_only_whole_versions(s3_lake: S3Bucket) -> None:
    sizes = {"small": 700, "large": 7_000}
    failures: list[BaseException] = []
    reads: list[tuple[frozenset[str], int, int]] = []
    done = threading.Event()

    def frame(tag: str) -> pd.DataFrame:
        return pd.DataFrame({"tag": [tag] * sizes[tag], "i": range(sizes[tag])})

    lake.write_frame(s3_lake, "tagged", "date", DAY, frame("small"), meta={"tag": "small"})

    def read() -> None:
        try:
            while not done.is_set():
                version = lake.current_version(s3_lake, "tagged", "date", DAY)
                assert version is not None and version.meta is not None
                df = s3_lake.read_table(version).to_pandas()
                reads.append((frozenset(df["tag"]), len(df), int(version.meta["rows"])))
        except BaseException as exc:  # noqa: BLE001 (handed to the test thread)
            failures.append(exc)

    readers = [threading.Thread(target=read) for _ in range(2)]
    for t in readers:
        t.start()
    try:
        for k in range(12):
            tag = "large" if k % 2 == 0 else "small"
            lake.write_frame(s3_lake, "tagged", "date", DAY, frame(tag), meta={"tag": tag})
    finally:
        done.set()
        for t in readers:
            t.join()
    assert not failures, failures
    assert reads
    for tags, rows, meta_rows in reads:
        assert len(tags) == 1 and rows == sizes[next(iter(tags))] == meta_rows


# ------------------------------------------------------------------------------ secrets


def test_credentials_reach_no_log_line_and_no_message(
    s3_server: S3Server,
    s3_env: dict[str, str],
    s3_prefix: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)
    store = s3_server.connect(s3_prefix)
    assert logging.getLogger("botocore").getEffectiveLevel() == logging.INFO
    lake.write_partition(store, PAYMENTS, "date", DAY, _payments(), key_version="1")
    lake.read_partition(store, "payments", "date", DAY, key_version="1")
    messages = []
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY[::-1])  # a wrong secret: refused
    wrong = s3_server.connect(s3_prefix)
    with pytest.raises(
        LakeStoreRefused, match="SignatureDoesNotMatch. Fix: check AWS_SECRET"
    ) as err:
        lake.read_partition(wrong, "payments", "date", DAY)
    messages += [str(err.value), str(err.value.__cause__)]
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    with pytest.raises(KeyVersionMismatch) as mismatch:
        lake.read_partition(store, "payments", "date", DAY, key_version="2")
    messages.append(str(mismatch.value))
    messages.append(repr(store))
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for secret in (ACCESS_KEY, SECRET_KEY, SECRET_KEY[::-1]):
        assert secret not in logged
        assert not any(secret in m for m in messages)
    # The capture is not blind: botocore at DEBUG does print the key id (Authorization header).
    caplog.clear()
    logging.getLogger("botocore").setLevel(logging.DEBUG)
    try:
        lake.partition_exists(store, "payments", "date", DAY)
    finally:
        logging.getLogger("botocore").setLevel(logging.INFO)
    assert ACCESS_KEY in "\n".join(r.getMessage() for r in caplog.records)
