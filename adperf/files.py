"""The run's files that every worker host must see, besides lake partitions: a day's rendered
report folder (published whole) and small JSON markers (a day's Slack post).

A marker or a report page under one host's folder is invisible to the others: a task done on
host A would look not done on host B and run twice there (a second Slack post). So these live
where the lake is (docs/lake.md "Workers on several hosts"):

- `LocalFiles`: a folder (`[adperf] files_root`, by default the lake's folder). A report folder
  is published by renaming a staging folder into place; a marker by `os.replace`.
- `S3Files`: the lake's bucket, beside the partitions. A report folder is immutable objects
  plus a `_manifest.json` committed with a conditional PutObject (as a lake partition, by
  `S3Bucket.commit_manifest`); a marker is one object (a PutObject replaces it whole).

What each host may keep for itself (MMP wait markers, logs, temp files) stays in `files_root`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from adperf import atomic
from adperf.objstore import S3Bucket

META_FILE = "_meta.json"


@dataclass(frozen=True)
class FolderVersion:
    """One complete version of a published folder: its meta, where each file is, and how to
    read one (files of one version, never mixed with a later publish)."""

    meta: dict[str, Any]
    files: dict[str, str]
    reader: Callable[[str], bytes]

    def read(self, name: str) -> bytes:
        """One file of this version (KeyError: it has no such file)."""
        return self.reader(self.files[name])


class Files(Protocol):
    """Shared small files; `rel` is a path relative to the root, '/'-separated."""

    def where(self, rel: str) -> str:
        """Where `rel` is (a path or an s3:// address), for messages."""
        ...

    def read(self, rel: str) -> bytes | None:
        """One file's bytes; None when there is none."""
        ...

    def write(self, rel: str, data: bytes) -> None:
        """Replace one file whole (readers see the old or the new bytes, never a mix)."""
        ...

    def delete(self, rel: str) -> None:
        """Remove one file (none: nothing to do)."""
        ...

    def publish_folder(self, rel: str, files: dict[str, bytes], meta: dict[str, Any]) -> None:
        """Replace the folder `rel` whole with `files` and its meta."""
        ...

    def add_to_folder(self, rel: str, name: str, data: bytes) -> None:
        """Add (or replace) one file of the published folder `rel` (it must exist)."""
        ...

    def folder(self, rel: str) -> FolderVersion | None:
        """The folder's current version; None when it was never published."""
        ...


def meta_bytes(meta: dict[str, Any]) -> bytes:
    """A folder's `_meta.json` as written."""
    return json.dumps(meta, sort_keys=True).encode()


def read_json(files: Files, rel: str) -> dict[str, Any] | None:
    """A JSON object written by `write_json`; None when there is none."""
    data = files.read(rel)
    if data is None:
        return None
    found: dict[str, Any] = json.loads(data)
    return found


def write_json(files: Files, rel: str, payload: dict[str, Any]) -> None:
    """Replace a JSON marker whole."""
    files.write(rel, json.dumps(payload, sort_keys=True).encode())


class LocalFiles:
    """Shared files in a folder (one host, or a network file system every host mounts)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"LocalFiles({self.root})"

    def path(self, rel: str) -> Path:
        return self.root / rel

    def where(self, rel: str) -> str:
        return str(self.path(rel))

    def read(self, rel: str) -> bytes | None:
        path = self.path(rel)
        return path.read_bytes() if path.is_file() else None

    def write(self, rel: str, data: bytes) -> None:
        atomic.write_bytes(self.path(rel), data)

    def delete(self, rel: str) -> None:
        self.path(rel).unlink(missing_ok=True)

    def publish_folder(self, rel: str, files: dict[str, bytes], meta: dict[str, Any]) -> None:
        with atomic.folder(self.path(rel)) as tmp:
            for name, content in {**files, META_FILE: meta_bytes(meta)}.items():
                (tmp / name).write_bytes(content)

    def add_to_folder(self, rel: str, name: str, data: bytes) -> None:
        folder = self.path(rel)
        if not (folder / META_FILE).is_file():
            raise FileNotFoundError(f"published folder {folder}")
        atomic.write_bytes(folder / name, data)

    def folder(self, rel: str) -> FolderVersion | None:
        folder = self.path(rel)
        if not (folder / META_FILE).is_file():
            return None
        meta: dict[str, Any] = json.loads((folder / META_FILE).read_text())
        # Not the meta, nor a writer's temp file (`.<name>.tmp-*`, see adperf.atomic).
        names = {
            p.name: str(p)
            for p in folder.iterdir()
            if p.is_file() and p.name != META_FILE and not p.name.startswith(".")
        }
        return FolderVersion(meta, names, lambda path: Path(path).read_bytes())


class S3Files:
    """Shared files in the lake's bucket, under the lake's prefix."""

    def __init__(self, bucket: S3Bucket) -> None:
        self.bucket = bucket

    def __repr__(self) -> str:
        return f"S3Files({self.bucket.location})"

    def _key(self, rel: str) -> str:
        return self.bucket.location.key(rel)

    def where(self, rel: str) -> str:
        return self.bucket.where(rel)

    def read(self, rel: str) -> bytes | None:
        return self._get(self._key(rel), missing_ok=True)

    def _get(self, key: str, *, missing_ok: bool = False) -> bytes | None:
        client = self.bucket.client
        with self.bucket._refusals(f"s3://{self.bucket.location.bucket}/{key}"):
            try:
                reply = client.get_object(Bucket=self.bucket.location.bucket, Key=key)
            except client.exceptions.NoSuchKey:
                if missing_ok:
                    return None
                raise
        data: bytes = reply["Body"].read()
        return data

    def write(self, rel: str, data: bytes) -> None:
        # One PutObject replaces an object whole: a reader gets the old bytes or the new.
        with self.bucket._refusals(self.where(rel)):
            self.bucket.client.put_object(
                Bucket=self.bucket.location.bucket, Key=self._key(rel), Body=data
            )

    def delete(self, rel: str) -> None:
        with self.bucket._refusals(self.where(rel)):
            self.bucket.client.delete_object(Bucket=self.bucket.location.bucket, Key=self._key(rel))

    def _upload(self, rel: str, name: str, data: bytes) -> str:
        """`data` as a new immutable object of folder `rel`; its key."""
        key = self._key(f"{rel}/_data/{uuid.uuid4().hex}/{name}")
        self.bucket.client.put_object(Bucket=self.bucket.location.bucket, Key=key, Body=data)
        return key

    def publish_folder(self, rel: str, files: dict[str, bytes], meta: dict[str, Any]) -> None:
        with self.bucket._refusals(self.where(rel)):
            # The objects first, under names no other writer uses; the manifest last.
            keys = {name: self._upload(rel, name, data) for name, data in files.items()}

            def content(previous: dict[str, Any] | None) -> tuple[dict[str, Any], list[str]]:
                return {"files": keys, "meta": meta}, sorted(_folder_keys(previous))

            self.bucket.commit_manifest(rel, content)
            self.bucket.collect(rel)
            self._views(rel, files)

    def _views(self, rel: str, files: dict[str, bytes]) -> None:
        """Copies for people at stable keys, `<rel>/<name>` (what a static host of the bucket
        serves at `[slack] dashboard_base_url`), written after the commit. adperf never reads
        them: its readers follow the manifest. A copy of a file a re-render dropped stays until
        that file is published again (the dashboard, right after the render)."""
        for name, data in files.items():
            self.write(f"{rel}/{name}", data)

    def add_to_folder(self, rel: str, name: str, data: bytes) -> None:
        with self.bucket._refusals(self.where(rel)):
            key = self._upload(rel, name, data)

            def content(previous: dict[str, Any] | None) -> tuple[dict[str, Any], list[str]]:
                if previous is None or "files" not in previous:
                    raise FileNotFoundError(f"published folder {self.where(rel)}")
                old = previous["files"].get(name)
                files = {**previous["files"], name: key}
                return {"files": files, "meta": previous["meta"]}, [old] if old else []

            self.bucket.commit_manifest(rel, content)
            self.bucket.collect(rel)
            self._views(rel, {name: data})

    def folder(self, rel: str) -> FolderVersion | None:
        manifest = self.bucket.read_manifest(rel)
        if manifest is None:
            return None
        # The objects of a version are immutable: a later publish commits new ones.
        return FolderVersion(dict(manifest["meta"]), dict(manifest["files"]), self._get_object)

    def _get_object(self, key: str) -> bytes:
        data = self._get(key)
        if data is None:  # not with missing_ok=False: NoSuchKey was raised
            raise FileNotFoundError(f"s3://{self.bucket.location.bucket}/{key}")
        return data


def report_folder(day: str) -> str:
    """The shared folder of a day's rendered report (and its dashboard page)."""
    return f"reports/date={day}"


def slack_marker(day: str) -> str:
    """The shared marker of a day's Slack post."""
    return f"slack_posts/{day}.json"


def _folder_keys(manifest: dict[str, Any] | None) -> set[str]:
    return set() if manifest is None else {str(k) for k in manifest.get("files", {}).values()}
