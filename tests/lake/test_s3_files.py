"""The files every worker host must see (adperf.files) on a real S3 server and in a folder: a
report folder is published whole, a reader keeps the version it opened, a file added later
joins the current version, a marker is replaced whole."""

from __future__ import annotations

from pathlib import Path

import pytest

from adperf.files import Files, LocalFiles, S3Files, read_json, write_json
from adperf.objstore import S3Bucket

REPORT = "reports/date=2026-11-20"


@pytest.fixture(params=["folder", "s3"])
def files(request: pytest.FixtureRequest, tmp_path: Path) -> Files:
    if request.param == "folder":
        return LocalFiles(tmp_path / "files")
    lake: S3Bucket = request.getfixturevalue("s3_lake")
    return S3Files(lake)


def test_a_folder_is_published_whole_and_a_reader_keeps_its_version(files: Files) -> None:
    assert files.folder(REPORT) is None
    files.publish_folder(REPORT, {"a.txt": b"one", "b.png": b"\x89PNG1"}, {"content_hash": "1"})
    first = files.folder(REPORT)
    assert first is not None and first.meta == {"content_hash": "1"}
    assert sorted(first.files) == ["a.txt", "b.png"]

    files.publish_folder(REPORT, {"a.txt": b"two"}, {"content_hash": "2"})
    second = files.folder(REPORT)
    assert second is not None and second.meta == {"content_hash": "2"}
    assert sorted(second.files) == ["a.txt"] and second.read("a.txt") == b"two"
    if isinstance(files, S3Files):
        # The version opened before the rewrite still reads whole (its objects are kept for
        # the grace period); a folder on disk is replaced under its reader, as before.
        assert first.read("a.txt") == b"one" and first.read("b.png") == b"\x89PNG1"
    with pytest.raises(KeyError):
        second.read("b.png")


def test_a_file_added_later_joins_the_current_version(files: Files) -> None:
    with pytest.raises(FileNotFoundError):
        files.add_to_folder(REPORT, "dashboard.html", b"<html>")
    files.publish_folder(REPORT, {"a.txt": b"one"}, {"content_hash": "1"})
    files.add_to_folder(REPORT, "dashboard.html", b"<html>1")
    files.add_to_folder(REPORT, "dashboard.html", b"<html>2")
    version = files.folder(REPORT)
    assert version is not None and version.meta == {"content_hash": "1"}
    assert version.read("dashboard.html") == b"<html>2" and version.read("a.txt") == b"one"
    # A re-render replaces the folder: the page of the old rendering goes with it.
    files.publish_folder(REPORT, {"a.txt": b"two"}, {"content_hash": "2"})
    version = files.folder(REPORT)
    assert version is not None and "dashboard.html" not in version.files
    if isinstance(files, S3Files):
        # People open the pages at stable keys (a static host of the bucket), as in a folder.
        assert files.read(f"{REPORT}/a.txt") == b"two"
        assert files.read(f"{REPORT}/dashboard.html") == b"<html>2"


def test_a_marker_is_replaced_whole_and_deleted(files: Files) -> None:
    rel = "slack_posts/2026-11-20.json"
    assert read_json(files, rel) is None
    write_json(files, rel, {"pending": True})
    write_json(files, rel, {"complete": True, "ts": "1.2"})
    assert read_json(files, rel) == {"complete": True, "ts": "1.2"}
    files.delete(rel)
    files.delete(rel)  # none: nothing to do
    assert files.read(rel) is None


def test_replaced_objects_are_collected_after_the_grace(
    s3_server,  # type: ignore[no-untyped-def]
    s3_env: dict[str, str],
    s3_prefix: str,
) -> None:
    files = S3Files(s3_server.connect(s3_prefix, stale_seconds=0))
    files.publish_folder(REPORT, {"a.txt": b"one", "b.txt": b"x"}, {"content_hash": "1"})
    files.publish_folder(REPORT, {"a.txt": b"two"}, {"content_hash": "2"})
    bucket = files.bucket
    listing = bucket.client.list_objects_v2(
        Bucket=bucket.location.bucket, Prefix=bucket.location.key(f"{REPORT}/_data/")
    )
    version = files.folder(REPORT)
    assert version is not None
    assert [o["Key"] for o in listing.get("Contents", [])] == list(version.files.values())
