"""Where lake partitions are kept: a local folder or an S3 bucket, behind one small interface.

`adperf.lake` encodes a partition (Parquet data + `_meta.json`) in a local staging folder and
hands it to a backend, which makes it visible whole or not at all:

- `LocalFolder`: the staging folder sits beside the partition and is renamed into place.
- `S3Bucket`: object storage has no rename (a "move" is copy + delete per object, not atomic).
  The data is uploaded as an immutable object under a name no other writer uses, and the
  partition's `_manifest.json` (which data object, its meta, a generation number) is written
  last, with a conditional PutObject: `If-None-Match: *` for a new partition, `If-Match: <ETag
  read>` to replace one. A reader reads the manifest, then the data object it names, so it sees
  one complete version. Two writers of one partition: the second commit's precondition fails
  (412), it re-reads the manifest and commits again over the new one, so the partition ends as
  one writer's complete version, never a mix. docs/lake.md says why this and not Iceberg.

Credentials come from boto3's chain (environment, shared config profile, instance role) and
never pass through adperf's code or messages.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Generic, Protocol, TypeVar
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.parquet as pq

from adperf import atomic
from adperf.errors import ConfigError

DATA_FILE = "part-0.parquet"
META_FILE = "_meta.json"
MANIFEST_FILE = "_manifest.json"
TMP_PREFIX = atomic.FOLDER_TMP_PREFIX
# A temp folder or an unreferenced data object older than this is from a dead writer or a
# superseded version no reader still reads (a live writer or reader finishes in minutes).
STALE_SECONDS = 6 * 3600
# CopyObject copies objects up to 5 GiB in one request (AWS's limit).
_COPY_OBJECT_LIMIT = 5 << 30
# Commits lost to another writer of the same partition before giving up (each retry re-reads
# the manifest, so only a writer that keeps losing a race this often fails).
COMMIT_ATTEMPTS = 8


def data_file(i: int) -> str:
    """The name of a local partition's i-th data file (`DATA_FILE` is the 0th)."""
    return f"part-{i}.parquet"


def _concat(tables: list[pa.Table]) -> pa.Table:
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables)


def _decoder(path: str) -> Callable[[], pa.Table]:
    return lambda: pq.read_table(path)


_V = TypeVar("_V")


class DecodedCache(Generic[_V]):
    """Values decoded from immutable files (Arrow tables, schemas) by the identity of the file
    version they came from, the least recently read dropped first once their `size`s pass
    `limit`. The values are immutable, so one can be handed to every reader.

    Per process and thread-safe: a forked luigi worker starts with its parent's entries, which
    stay right because a key names one version of one file (`LocalFolder._file_key`,
    `S3Bucket._object_key`), never a path whose content may change.
    """

    def __init__(self, limit: int, size: Callable[[_V], int]) -> None:
        self.limit, self._size = limit, size
        self._values: OrderedDict[Hashable, _V] = OrderedDict()
        self._used = 0
        self._lock = threading.Lock()

    def get(self, key: Hashable, load: Callable[[], _V]) -> _V:
        """The value cached under `key`, else `load()`'s (kept if it fits)."""
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                return self._values[key]
        value = load()  # outside the lock: other threads read on meanwhile
        size = self._size(value)
        if size > self.limit:
            return value
        with self._lock:
            if key not in self._values:
                self._values[key] = value
                self._used += size
            while self._used > self.limit:
                _, dropped = self._values.popitem(last=False)
                self._used -= self._size(dropped)
        return value

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
            self._used = 0

    @property
    def used(self) -> int:
        """The summed size of the values kept now."""
        return self._used


# Decoded data files kept per process. A daily run reads most partitions of the day before
# again (cohort windows, SpendLatest's pulls, LTV history): about 360 reads a day in the
# sandbox loop, ~0.7 s of decoding. 256 MiB holds a small or medium world's working set; a
# bigger table than that is never kept.
TABLE_CACHE_BYTES = 256 << 20
table_cache = DecodedCache[pa.Table](TABLE_CACHE_BYTES, lambda table: int(table.nbytes))
# Schemas of data files: the key-version check of a partition without pseudonyms reads its
# schema (an old partition recorded no version), ~500 times a sandbox loop day. A few KB each.
SCHEMA_CACHE_ENTRIES = 8192
schema_cache = DecodedCache[pa.Schema](SCHEMA_CACHE_ENTRIES, lambda _: 1)


# The versions of local partitions last seen, by folder: a daily run asks whether ~2,000
# partitions exist (luigi's completeness checks, reads, pipeline_runs' sizes), mostly the same
# ones again, and each answer read and parsed `_meta.json` and probed the data files (~0.15 s
# of a sandbox loop day). Kept while `_version_stamp` is unchanged.
VERSION_CACHE_ENTRIES = 65_536
_versions: dict[str, tuple[tuple[int, ...], dict[str, Any], tuple[str, ...]]] = {}


def _version_stamp(folder: Path) -> tuple[int, ...]:
    """What makes a published partition folder one version: its files are never written again
    (a rewrite renames a new folder in while the old one still exists), so a new version's
    `_meta.json` is a new inode, and its first data file a new inode or, hard-linked from the
    old version (`publish_copies`), an inode whose ctime the link changed. The data files after
    the first are published in the same folder, with the same meta."""
    data, meta = os.stat(folder / DATA_FILE), os.stat(folder / META_FILE)
    return (
        data.st_dev,
        data.st_ino,
        data.st_ctime_ns,
        data.st_size,
        meta.st_ino,
        meta.st_ctime_ns,
        meta.st_size,
    )


class LakeCommitConflict(RuntimeError):
    """A partition's manifest kept changing under this writer's commit."""


class LakeStoreRefused(ConfigError):
    """The object store refused the lake's request for a reason no retry fixes (no such bucket,
    credentials missing or refused). Throttling, 5xx and dropped connections are retried by
    boto3 (standard mode, 5 attempts) and are not this."""


# S3 error codes that say the configuration is wrong, with what to fix.
_REFUSALS = {
    "NoSuchBucket": "create the bucket, or fix the bucket of [adperf] data_root",
    "AccessDenied": "grant the credentials s3:GetObject, PutObject, DeleteObject and "
    "ListBucket on the bucket",
    "InvalidAccessKeyId": "check AWS_ACCESS_KEY_ID (or the [s3] profile) and [s3] endpoint_url",
    "SignatureDoesNotMatch": "check AWS_SECRET_ACCESS_KEY (or the [s3] profile)",
    "ExpiredToken": "renew the session credentials (AWS_SESSION_TOKEN, or the [s3] profile)",
}


@dataclass(frozen=True)
class Version:
    """One complete version of a partition: its meta (None: a local partition written before
    `_meta.json` existed) and where its data files are (local paths or object keys), in row
    order. Usually one; a partition combined from others' files (`Backend.publish_copies`,
    e.g. a day's events from its shards) has one per source file, never re-encoded."""

    meta: dict[str, Any] | None
    files: tuple[str, ...]


class Backend(Protocol):
    """Storage of lake partitions; `part` is the partition's relative path, 'dataset/key=value'."""

    def where(self, part: str) -> str:
        """Where the partition is, for messages (never holds a credential)."""
        ...

    def stage(self, part: str) -> Path:
        """A new empty local folder to write the partition's files into."""
        ...

    def publish(self, part: str, staged: Path) -> None:
        """Make the staged files the partition's one current version, atomically."""
        ...

    def publish_copies(self, part: str, staged: Path, sources: Sequence[Version]) -> None:
        """Publish the staged `_meta.json` with the data files of `sources` (complete versions
        of other partitions of this store), in order, as the partition's one current version,
        atomically. The files are linked or copied inside the store, never decoded."""
        ...

    def discard(self, staged: Path) -> None:
        """Remove a staging folder that will not be published."""
        ...

    def current(self, part: str) -> Version | None:
        """The complete version readers see now; None when there is none."""
        ...

    def read_table(self, version: Version) -> pa.Table:
        """The data of one version."""
        ...

    def read_schema(self, version: Version) -> pa.Schema:
        """The Parquet schema of one version."""
        ...

    def read_data(self, version: Version) -> bytes:
        """The Parquet files of one version, as bytes (one after the other: for hashing)."""
        ...

    def nbytes(self, version: Version) -> int:
        """Bytes stored for one version."""
        ...


def meta_bytes(meta: dict[str, Any]) -> bytes:
    """`_meta.json` as written: the same text on both backends."""
    return json.dumps(meta, sort_keys=True, indent=1, default=str).encode()


class LocalFolder:
    """Partitions as folders under `root`; published by renaming a staging folder beside them."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"LocalFolder({self.root})"

    def path(self, part: str) -> Path:
        return self.root / part

    def where(self, part: str) -> str:
        return str(self.path(part))

    def stage(self, part: str) -> Path:
        final = self.path(part)
        final.parent.mkdir(parents=True, exist_ok=True)
        _clean_stale_tmp(final.parent)
        return atomic.stage_folder(final, prefix=TMP_PREFIX)

    def publish(self, part: str, staged: Path) -> None:
        atomic.publish_folder(staged, self.path(part), prefix=TMP_PREFIX)

    def publish_copies(self, part: str, staged: Path, sources: Sequence[Version]) -> None:
        files = [f for source in sources for f in source.files]
        for i, src in enumerate(files):
            out = staged / data_file(i)
            # A hard link: published files are never written again (a rewrite renames a new
            # folder in), so the link shares bytes that cannot change under it.
            try:
                os.link(src, out)
            except OSError:  # another file system, or links refused: a plain copy
                shutil.copyfile(src, out)
        self.publish(part, staged)

    def discard(self, staged: Path) -> None:
        atomic.discard_folder(staged)

    def current(self, part: str) -> Version | None:
        folder = self.path(part)
        try:
            stamp = _version_stamp(folder)
        except OSError:  # not written (or _meta.json missing: read below, not kept)
            stamp = None
        if stamp is not None:
            known = _versions.get(str(folder))
            if known is not None and known[0] == stamp:
                return Version(dict(known[1]), known[2])
        version = self._read_version(folder)
        if stamp is not None and version is not None and version.meta is not None:
            if len(_versions) >= VERSION_CACHE_ENTRIES:
                _versions.clear()
            _versions[str(folder)] = (stamp, dict(version.meta), version.files)
        return version

    @staticmethod
    def _read_version(folder: Path) -> Version | None:
        if not (folder / DATA_FILE).is_file():
            return None
        try:
            meta = json.loads((folder / META_FILE).read_text())
        except FileNotFoundError:
            meta = None
        files = [str(folder / DATA_FILE)]
        while (folder / data_file(len(files))).is_file():
            files.append(str(folder / data_file(len(files))))
        return Version(meta, tuple(files))

    def read_table(self, version: Version) -> pa.Table:
        return _concat([table_cache.get(self._file_key(f), _decoder(f)) for f in version.files])

    @staticmethod
    def _file_key(path: str) -> Hashable:
        """What makes a published file's content one version: a published file is never
        written again (a rewrite renames a new folder in while the old one still exists, so
        the new file cannot even reuse the old one's inode), hence its inode, mtime and size
        change whenever the bytes at `path` do. (A rewrite renamed in between this stat and
        the read files the new table under the old key, which no later stat of `path` gives.)"""
        st = os.stat(path)
        return ("file", path, st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)

    def read_schema(self, version: Version) -> pa.Schema:
        path = version.files[0]
        return schema_cache.get(self._file_key(path), lambda: pq.read_schema(path))

    def read_data(self, version: Version) -> bytes:
        return b"".join(Path(f).read_bytes() for f in version.files)

    def nbytes(self, version: Version) -> int:
        folder = Path(version.files[0]).parent
        return sum(f.stat().st_size for f in folder.iterdir() if f.is_file())


@dataclass(frozen=True)
class S3Location:
    """`s3://bucket/prefix` split; the prefix has no leading or trailing slash."""

    bucket: str
    prefix: str

    @classmethod
    def parse(cls, url: str) -> S3Location:
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise ValueError(f"not an s3://bucket/prefix URL: {url!r}")
        if parts.username or parts.password or parts.query:
            # A key in the URL would be printed wherever the root is: refuse it, name no part.
            raise ValueError(
                "an s3:// data_root holds only bucket and prefix; give credentials through the "
                "environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or a profile)"
            )
        return cls(parts.netloc, parts.path.strip("/"))

    def key(self, rel: str) -> str:
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


def quiet_sdk_logs() -> None:
    """Keep boto's request logs out of DEBUG output.

    botocore logs every request's headers at DEBUG, the `Authorization` header (which names
    the access key id) included, and luigi workers may run with DEBUG logging: its loggers are
    held at INFO, where they log no headers. urllib3 is left alone (other clients' tests read
    its DEBUG lines): it logs method, host and path, and SigV4 puts no credential in a URL.
    """
    for name in ("botocore", "boto3", "s3transfer"):
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < logging.INFO:
            logger.setLevel(logging.INFO)


class S3Bucket:
    """Partitions as immutable data objects plus a manifest committed by a conditional write.

    Layout under `<prefix>/<dataset>/<key>=<value>/`: `_manifest.json` (the commit: generation,
    current data object, meta, and the data objects it replaced with when) and
    `_data/<writer uuid>.parquet` (one per write; only the manifest's is current). A replaced
    object is deleted `stale_seconds` after its replacement, by a later write of the partition.
    """

    def __init__(
        self, location: S3Location, client: Any, *, stale_seconds: float = STALE_SECONDS
    ) -> None:
        self.location, self.client, self.stale_seconds = location, client, stale_seconds

    @classmethod
    def connect(
        cls, url: str, *, endpoint_url: str = "", region: str = "", profile: str = ""
    ) -> S3Bucket:
        """A bucket from `s3://bucket/prefix`; endpoint and region from the arguments, else
        from boto3's own settings (AWS_ENDPOINT_URL, AWS_REGION, ~/.aws/config)."""
        try:
            import boto3
            from botocore.config import Config
        except ImportError:
            raise ConfigError(
                "[adperf] data_root is s3://…, which needs boto3. Fix: pip install 'adperf[s3]'"
            ) from None

        from botocore.exceptions import ProfileNotFound

        quiet_sdk_logs()
        try:
            session = boto3.session.Session(profile_name=profile or None)
        except ProfileNotFound:
            raise ConfigError(
                f"[s3] profile = {profile} is in no AWS config or credentials file. Fix: add it "
                "there, or empty [s3] profile to use AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"
            ) from None
        client = session.client(
            "s3",
            endpoint_url=endpoint_url or None,
            region_name=region or None,
            # Path-style: works with any S3-compatible server and any bucket name.
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": 5, "mode": "standard"},
            ),
        )
        return cls(S3Location.parse(url), client)

    def __repr__(self) -> str:
        return f"S3Bucket({self.location})"

    def where(self, part: str) -> str:
        return f"s3://{self.location.bucket}/{self.location.key(part)}"

    def stage(self, part: str) -> Path:
        # Staged locally, in one folder of the temp dir: a killed writer's leftovers there are
        # removed by a later write once stale, as in a local lake.
        staging = Path(tempfile.gettempdir()) / "adperf-lake-staging"
        staging.mkdir(exist_ok=True)
        _clean_stale_tmp(staging)
        return Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=staging))

    def discard(self, staged: Path) -> None:
        atomic.discard_folder(staged)

    @contextlib.contextmanager
    def _refusals(self, where: str) -> Iterator[None]:
        """Turn the store's permanent refusals into LakeStoreRefused, naming place and fix."""
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import ClientError, NoCredentialsError

        try:
            yield
        except S3UploadFailedError as exc:
            # upload_file wraps the ClientError of a part (its code only in the message).
            cause = exc.__context__
            code = _code(cause) if isinstance(cause, ClientError) else ""
            if code not in _REFUSALS:
                raise
            raise LakeStoreRefused(
                f"lake {where}: S3 answered {code}. Fix: {_REFUSALS[code]}"
            ) from cause
        except NoCredentialsError:
            raise LakeStoreRefused(
                f"lake {where}: no S3 credentials found. Fix: set "
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or [s3] profile"
            ) from None
        except ClientError as exc:
            code = _code(exc)
            if code not in _REFUSALS:
                raise
            # The SDK's message names operation and code only, never a credential.
            raise LakeStoreRefused(
                f"lake {where}: S3 answered {code}. Fix: {_REFUSALS[code]}"
            ) from exc

    def publish(self, part: str, staged: Path) -> None:
        with self._refusals(self.where(part)):
            self._publish(part, staged)

    def _publish(self, part: str, staged: Path) -> None:
        data_key = self.location.key(f"{part}/_data/{uuid.uuid4().hex}.parquet")
        meta = json.loads((staged / META_FILE).read_text())
        # The data first, under a name only this writer uses: until the manifest names it, no
        # reader looks at it, so a writer killed here leaves an invisible orphan (collected
        # below by a later write of the partition).
        self.client.upload_file(str(staged / DATA_FILE), self.location.bucket, data_key)
        self._commit(part, data_key, meta)
        self.discard(staged)
        self.collect(part)

    def publish_copies(self, part: str, staged: Path, sources: Sequence[Version]) -> None:
        with self._refusals(self.where(part)):
            meta = json.loads((staged / META_FILE).read_text())
            writer = uuid.uuid4().hex
            keys = []
            for i, src in enumerate(f for source in sources for f in source.files):
                # A copy inside the store (no bytes through this process), under this
                # partition's own prefix: the source partition's later rewrites collect its
                # objects, never these.
                key = self.location.key(f"{part}/_data/{writer}-{i}.parquet")
                self._copy(src, key)
                keys.append(key)
            self._commit(part, keys, meta)
            self.discard(staged)
            self.collect(part)

    def _copy(self, src: str, key: str) -> None:
        bucket = self.location.bucket
        size = int(self.client.head_object(Bucket=bucket, Key=src)["ContentLength"])
        if size <= _COPY_OBJECT_LIMIT:
            source = {"Bucket": bucket, "Key": src}
            self.client.copy_object(Bucket=bucket, Key=key, CopySource=source)
        else:  # CopyObject takes up to 5 GiB; the managed copy goes part by part
            self.client.copy({"Bucket": bucket, "Key": src}, bucket, key)

    def _commit(self, part: str, data_keys: str | list[str], meta: dict[str, Any]) -> None:
        """Commit the partition's manifest naming `data_keys` as its current objects: one
        (`data`, as every partition written whole) or several in row order (`parts`)."""
        fields: dict[str, Any] = {"meta": meta}
        if isinstance(data_keys, str):
            fields["data"] = data_keys
        else:
            # Not `data` with a list: a reader that knows only `data` fails loudly on this
            # manifest rather than reading one file of several.
            fields["parts"] = list(data_keys)

        def content(previous: dict[str, Any] | None) -> tuple[dict[str, Any], list[str]]:
            return fields, sorted(live_keys(previous))

        self.commit_manifest(part, content)

    def commit_manifest(
        self,
        part: str,
        content: Callable[[dict[str, Any] | None], tuple[dict[str, Any], list[str]]],
    ) -> None:
        """Write `part`'s next manifest with a conditional PutObject, retried over other
        writers' commits. `content(previous manifest or None)` returns the new manifest's
        fields (`data` or `files`, and `meta`) and the keys of objects it replaces, which stay
        readable `stale_seconds` from now."""
        from botocore.exceptions import ClientError

        key = self.location.key(f"{part}/{MANIFEST_FILE}")
        for _ in range(COMMIT_ATTEMPTS):
            found = self._manifest(part)
            previous: dict[str, Any] = found[0] if found else {"generation": 0, "retired": []}
            fields, replaced = content(found[0] if found else None)
            # The version replaced stays readable for `stale_seconds` from now (a reader may
            # have just read the old manifest); `collect` deletes it after that.
            # Entries past twice the grace were collected after an earlier commit: dropped, so
            # the list stays short (an object left by a killed collect is found by its age).
            horizon, live = time.time() - 2 * self.stale_seconds, live_keys(fields)
            retired = [r for r in previous["retired"] if r[0] not in live and r[1] >= horizon]
            retired += [[k, time.time()] for k in replaced if k not in live]
            body = json.dumps(
                {
                    "format": 1,
                    "generation": int(previous["generation"]) + 1,
                    **fields,
                    "retired": retired,
                },
                sort_keys=True,
                default=str,
            ).encode()
            # If-None-Match: * creates only; If-Match replaces only the version read above.
            condition = {"IfNoneMatch": "*"} if found is None else {"IfMatch": found[1]}
            try:
                self.client.put_object(
                    Bucket=self.location.bucket,
                    Key=key,
                    Body=body,
                    ContentType="application/json",
                    **condition,
                )
                return
            except ClientError as exc:
                # 412: another writer committed since the read; 409: its commit is in flight.
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if status not in (409, 412):
                    raise
        raise LakeCommitConflict(
            f"lake partition {self.where(part)}: {COMMIT_ATTEMPTS} commits in a row lost to "
            "other writers of the same partition; run the task again once they have finished"
        )

    def read_manifest(self, part: str) -> dict[str, Any] | None:
        """The current manifest of `part` (None: never committed), permanent refusals named."""
        with self._refusals(self.where(part)):
            found = self._manifest(part)
        return None if found is None else found[0]

    def _manifest(self, part: str) -> tuple[dict[str, Any], str] | None:
        """(manifest, its ETag), or None when the partition was never committed."""
        try:
            reply = self.client.get_object(
                Bucket=self.location.bucket, Key=self.location.key(f"{part}/{MANIFEST_FILE}")
            )
        except self.client.exceptions.NoSuchKey:
            return None
        manifest: dict[str, Any] = json.loads(reply["Body"].read())
        manifest.setdefault("retired", [])
        return manifest, str(reply["ETag"])

    def collect(self, part: str) -> None:
        """Delete the partition's data objects no reader can need: versions replaced more than
        `stale_seconds` ago, and objects no manifest ever named (dead writers') that old."""
        found = self._manifest(part)
        if found is None:
            return
        manifest, cutoff = found[0], time.time() - self.stale_seconds
        live = live_keys(manifest)
        retired = {str(k): float(at) for k, at in manifest["retired"]}
        paginator = self.client.get_paginator("list_objects_v2")
        prefix = self.location.key(f"{part}/_data/")
        for page in paginator.paginate(Bucket=self.location.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                name = obj["Key"]
                if name in live:
                    continue
                # A retired object counts from its retirement; any other from its upload (a
                # live writer's upload is recent, so it is not taken for a dead one's).
                since = retired.get(name, obj["LastModified"].timestamp())
                if since < cutoff:
                    self.client.delete_object(Bucket=self.location.bucket, Key=name)

    def current(self, part: str) -> Version | None:
        with self._refusals(self.where(part)):
            found = self._manifest(part)
        if found is None:
            return None
        manifest = found[0]
        files = manifest["parts"] if "parts" in manifest else [manifest["data"]]
        return Version(dict(manifest["meta"]), tuple(str(f) for f in files))

    @contextlib.contextmanager
    def _download(self, key: str) -> Iterator[IO[bytes]]:
        """One data object in a temp file (in memory up to 64 MB). Ranged GETs of an immutable
        object: a rewrite commits a new object and never changes this one."""
        with tempfile.SpooledTemporaryFile(max_size=64 << 20) as out:
            with self._refusals(f"s3://{self.location.bucket}/{key}"):
                self.client.download_fileobj(self.location.bucket, key, out)
            out.seek(0)
            yield out

    def read_data(self, version: Version) -> bytes:
        chunks = []
        for key in version.files:
            with self._download(key) as data:
                chunks.append(data.read())
        return b"".join(chunks)

    def read_table(self, version: Version) -> pa.Table:
        return _concat(
            [table_cache.get(self._object_key(k), self._loader(k)) for k in version.files]
        )

    def _loader(self, key: str) -> Callable[[], pa.Table]:
        def load() -> pa.Table:
            with self._download(key) as data:
                return pq.read_table(data)

        return load

    def _object_key(self, key: str) -> Hashable:
        """What names one version of a data object: its key, which no other write uses (a
        writer's uuid: `_publish`, `publish_copies`), in this bucket of this endpoint."""
        endpoint = str(getattr(getattr(self.client, "meta", None), "endpoint_url", ""))
        return ("s3", endpoint, self.location.bucket, key)

    def read_schema(self, version: Version) -> pa.Schema:
        key = version.files[0]

        def load() -> pa.Schema:
            with self._download(key) as data:
                return pq.read_schema(data)

        return schema_cache.get(self._object_key(key), load)

    def nbytes(self, version: Version) -> int:
        total = 0
        for key in version.files:
            with self._refusals(f"s3://{self.location.bucket}/{key}"):
                head = self.client.head_object(Bucket=self.location.bucket, Key=key)
            total += int(head["ContentLength"])
        return total


def live_keys(manifest: dict[str, Any] | None) -> set[str]:
    """The data objects a manifest names: a partition's one `data`, or a folder's `files`."""
    if manifest is None:
        return set()
    if "files" in manifest:
        return {str(k) for k in manifest["files"].values()}
    if "parts" in manifest:
        return {str(k) for k in manifest["parts"]}
    return {str(manifest["data"])}


def _code(exc: Any) -> str:
    """The S3 error code of a botocore ClientError."""
    return str(exc.response.get("Error", {}).get("Code", ""))


def _clean_stale_tmp(folder: Path) -> None:
    now = time.time()
    for child in folder.glob(f"{TMP_PREFIX}*"):
        try:
            if now - child.stat().st_mtime > STALE_SECONDS:
                shutil.rmtree(child, ignore_errors=True)
        except FileNotFoundError:
            continue
