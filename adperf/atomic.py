"""Atomic local writes: a file (bytes, text, JSON) or a whole folder appears complete or not at all.

Every writer of a local file goes through here (STYLE.md rule 4). The content goes to a temp
name in the same folder, is fsynced, and is renamed over the final name; then the folder is
fsynced so the rename itself survives a power cut. A reader sees the old content or the new,
never half; a killed writer leaves only a temp name (`.<name>.tmp-*` for a file, `_tmp-*` for a
folder), which no reader takes for the real thing and the writer's owner may sweep.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

FILE_TMP_MARK = ".tmp-"  # a file's temp name: `.<name>.tmp-<hex>`
FOLDER_TMP_PREFIX = "_tmp-"  # a folder's temp name: `_tmp-<name>-<hex>`; lake readers skip it


def fsync(path: Path) -> None:
    """Flush a file's content, or a folder's entries (names created or renamed in it), to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_tmp_name(path: Path) -> Path:
    """A fresh temp name beside `path` for writing it."""
    return path.with_name(f".{path.name}{FILE_TMP_MARK}{uuid.uuid4().hex}")


def write_bytes(path: Path, data: bytes | memoryview, *, mode: int = 0o644) -> Path:
    """Replace `path` with `data` atomically (temp file, fsync, rename, fsync of the folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = file_tmp_name(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync(path.parent)
    return path


def write_text(path: Path, text: str, *, encoding: str = "utf-8") -> Path:
    """Replace `path` with `text` atomically."""
    return write_bytes(path, text.encode(encoding))


def write_json(
    path: Path,
    payload: Any,
    *,
    indent: int | None = 1,
    sort_keys: bool = True,
    ensure_ascii: bool = False,
    newline: bool = False,
) -> Path:
    """Replace `path` with `payload` as JSON (UTF-8) atomically."""
    text = json.dumps(payload, indent=indent, sort_keys=sort_keys, ensure_ascii=ensure_ascii)
    return write_text(path, text + "\n" if newline else text)


def read_json(path: Path) -> Any:
    """The JSON document in `path`, or None when there is none."""
    path = Path(path)
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def stage_folder(final: Path, *, prefix: str = FOLDER_TMP_PREFIX) -> Path:
    """A new empty temp folder beside `final`, to fill and then `publish_folder`."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    staged = final.parent / f"{prefix}{final.name}-{uuid.uuid4().hex}"
    staged.mkdir()
    return staged


def publish_folder(
    staged: Path, final: Path, *, prefix: str = FOLDER_TMP_PREFIX, sync: bool = True
) -> None:
    """Make the filled `staged` folder `final` atomically, replacing what was there.

    Every file in it is fsynced first, then the folder, then it is renamed into place. A folder
    cannot be renamed over a non-empty one, so an old `final` is moved aside (to a temp name)
    first and removed after: in between, `final` is missing for a moment, never half-written.
    `sync=False` skips the fsyncs, for a folder rebuilt from its inputs after a power cut.
    """
    staged, final = Path(staged), Path(final)
    for root, _dirs, names in os.walk(staged) if sync else ():
        for name in names:
            fsync(Path(root) / name)
        fsync(Path(root))
    if final.exists():
        old = final.parent / f"{prefix}old-{final.name}-{uuid.uuid4().hex}"
        os.rename(final, old)
        os.rename(staged, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(staged, final)
    if sync:
        fsync(final.parent)


def discard_folder(staged: Path) -> None:
    """Remove a staged folder that will not be published."""
    shutil.rmtree(staged, ignore_errors=True)


@contextmanager
def folder(final: Path, *, prefix: str = FOLDER_TMP_PREFIX) -> Iterator[Path]:
    """Write the folder `final` atomically: fill the temp folder this yields; on a normal exit
    it replaces `final`, on an exception it is removed and `final` keeps its old content."""
    staged = stage_folder(final, prefix=prefix)
    try:
        yield staged
        publish_folder(staged, final, prefix=prefix)
    except BaseException:
        discard_folder(staged)
        raise
