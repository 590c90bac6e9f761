"""adperf.atomic: every local write is whole or absent; a failed write keeps the old content."""

import json
import os
from pathlib import Path

import pytest

from adperf import atomic


class Boom(RuntimeError):
    pass


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_write_bytes_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "a.bin"
    atomic.write_bytes(target, b"old")
    atomic.write_bytes(target, b"new content")
    assert target.read_bytes() == b"new content"
    assert _entries(target.parent) == ["a.bin"]
    assert target.stat().st_mode & 0o777 == 0o644 & ~_umask()


def test_write_json_and_read_json_round_trip(tmp_path: Path) -> None:
    target = tmp_path / "m.json"
    atomic.write_json(target, {"b": "é", "a": [1, 2]}, indent=None)
    assert target.read_text(encoding="utf-8") == '{"a": [1, 2], "b": "é"}'
    assert atomic.read_json(target) == {"a": [1, 2], "b": "é"}
    assert atomic.read_json(tmp_path / "missing.json") is None
    atomic.write_json(target, {"b": "é"}, indent=None, ensure_ascii=True, newline=True)
    assert target.read_text() == '{"b": "\\u00e9"}\n'


def test_failure_mid_write_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "state.json"
    atomic.write_json(target, {"v": 1})

    def fail(fd: int) -> None:  # the data is written, the flush to disk fails (a full disk)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", fail)
    with pytest.raises(OSError, match="No space"):
        atomic.write_json(target, {"v": 2})
    assert json.loads(target.read_text()) == {"v": 1}
    assert _entries(tmp_path) == ["state.json"]  # the temp file is gone too


def test_unserializable_payload_keeps_old_file(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    atomic.write_json(target, {"v": 1})
    with pytest.raises(TypeError):
        atomic.write_json(target, {"v": object()})
    assert atomic.read_json(target) == {"v": 1}
    assert _entries(tmp_path) == ["state.json"]


def test_folder_replaces_old_folder_whole(tmp_path: Path) -> None:
    final = tmp_path / "date=2026-12-01"
    with atomic.folder(final) as tmp:
        (tmp / "a.txt").write_text("one")
        (tmp / "b.txt").write_text("two")
    with atomic.folder(final) as tmp:
        assert not final.samefile(tmp)
        (tmp / "a.txt").write_text("three")
    assert _entries(final) == ["a.txt"]
    assert (final / "a.txt").read_text() == "three"
    assert _entries(tmp_path) == ["date=2026-12-01"]


def test_folder_failure_mid_write_keeps_old_folder(tmp_path: Path) -> None:
    final = tmp_path / "report"
    with atomic.folder(final) as tmp:
        (tmp / "a.txt").write_text("old")
    with pytest.raises(Boom), atomic.folder(final) as tmp:
        (tmp / "a.txt").write_text("new, half")
        raise Boom
    assert _entries(final) == ["a.txt"]
    assert (final / "a.txt").read_text() == "old"
    assert _entries(tmp_path) == ["report"]


def test_folder_fsyncs_every_file_before_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(atomic.os, "fsync", spy)
    final = tmp_path / "out"
    with atomic.folder(final) as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "x.parquet").write_bytes(b"x")
        (tmp / "_meta.json").write_bytes(b"{}")
    names = [Path(p).name for p in synced]
    assert "x.parquet" in names and "_meta.json" in names
    assert str(tmp_path) == synced[-1]  # last: the parent, so the rename itself is durable


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_an_unsynced_publish_still_replaces_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    final = tmp_path / "world"
    with atomic.folder(final) as tmp:
        (tmp / "world.json").write_text("old")
    staged = atomic.stage_folder(final, prefix=".world.tmp-")
    (staged / "world.json").write_text("new")

    def no_fsync(fd: int) -> None:
        raise AssertionError("sync=False must not fsync")

    monkeypatch.setattr(atomic.os, "fsync", no_fsync)
    atomic.publish_folder(staged, final, prefix=".world.tmp-", sync=False)
    assert (final / "world.json").read_text() == "new"
    assert _entries(tmp_path) == ["world"]
