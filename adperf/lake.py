"""The lake: one Parquet partition per (dataset, period), written atomically.

Layout: `<root>/<dataset>/<key>=<value>/part-0.parquet` plus `_meta.json` (row counts and
quarantine counts of the run that wrote it). A partition combined from others (`combine`: a
day's events from its shards) has their files as `part-0.parquet`, `part-1.parquet`, … in row
order, taken as they are (no decode, no re-encode). `root` is a local folder (a `Path`) or an
object store (`adperf.objstore.S3Bucket`, for `data_root = s3://bucket/prefix`); every function
here works on both through `adperf.objstore.Backend`. In a folder, a partition is complete
exactly when its folder exists: it is written in a temp folder beside it and renamed into
place, so a killed writer leaves only a `_tmp-*` folder, which readers ignore and the next
write of the dataset removes. In a bucket, a partition is complete when its manifest, written
last with a conditional PutObject, names its data objects (docs/lake.md).

A partition holding user pseudonyms (`*_pid` columns) records the HMAC key version it was
pseudonymized under (`pseudonym_key_version` in `_meta.json`); given the current version,
`partition_exists` takes one of another version as missing and the readers refuse it
(`KeyVersionMismatch`), so data of two keys is re-extracted, never joined.
"""

from __future__ import annotations

import queue
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeAlias, TypeVar

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

# Re-exported: the file names and temp prefix of a partition are part of the lake's contract.
from adperf.objstore import DATA_FILE as DATA_FILE
from adperf.objstore import META_FILE as META_FILE
from adperf.objstore import STALE_SECONDS as STALE_TMP_SECONDS  # noqa: F401 (re-exported)
from adperf.objstore import TMP_PREFIX as TMP_PREFIX
from adperf.objstore import Backend, LocalFolder, Version, meta_bytes
from adperf.pseudonym import (
    KEY_VERSION_META,
    LEGACY_KEY_VERSION,
    KeyVersionMismatch,
    MixedKeyVersions,
    holds_pseudonyms,
)
from adperf.schema import Dataset, to_table

# Where the lake is: a local folder, or an object store (an S3Bucket, or any other Backend).
Root: TypeAlias = Path | str | Backend


# How every partition is encoded. zstd level 1: of zstd's levels the fastest that still
# compresses (hex pseudonyms to about half; negative levels leave them as they are).
_PARQUET: dict[str, Any] = {
    "compression": "zstd",
    "compression_level": 1,
    "write_statistics": True,
}


def backend(root: Root) -> Backend:
    """The storage behind a lake root: a folder for a path, else the object store given."""
    if isinstance(root, str | Path):
        if str(root).startswith("s3://"):
            raise ValueError(
                "an s3:// lake root needs its endpoint and region: pass "
                "adperf.objstore.S3Bucket.connect(url, ...) (tasks: config.data_root())"
            )
        return LocalFolder(Path(root))
    return root


def _part(dataset: str, key: str, value: str) -> str:
    return f"{dataset}/{key}={value}"


def partition_path(root: Path, dataset: str, key: str, value: str) -> Path:
    """The folder of one partition of a local lake; it follows from its name alone."""
    return Path(root) / _part(dataset, key, value)


def partition_where(root: Root, dataset: str, key: str, value: str) -> str:
    """Where one partition is (a folder or an s3:// address), for messages."""
    return backend(root).where(_part(dataset, key, value))


def current_version(root: Root, dataset: str, key: str, value: str) -> Version | None:
    """The complete version of a partition readers see now (None: not written)."""
    return backend(root).current(_part(dataset, key, value))


def partition_exists(
    root: Root, dataset: str, key: str, value: str, *, key_version: str | None = None
) -> bool:
    """True when the partition was completely written (and, given `key_version`, holds no
    pseudonyms or was pseudonymized under that key version)."""
    store = backend(root)
    version = store.current(_part(dataset, key, value))
    if version is None:
        return False
    if key_version is None:
        return True
    holds, found = _key_version(store, version)
    return not holds or found == key_version


def partition_key_version(
    root: Root, dataset: str, key: str, value: str
) -> tuple[bool, str | None]:
    """(holds pseudonyms, the key version they were made under; None when unrecorded)."""
    store = backend(root)
    version = store.current(_part(dataset, key, value))
    if version is None:
        raise FileNotFoundError(f"lake partition {store.where(_part(dataset, key, value))}")
    return _key_version(store, version)


def _key_version(store: Backend, version: Version) -> tuple[bool, str | None]:
    meta = version.meta or {}
    if KEY_VERSION_META in meta:
        found = meta[KEY_VERSION_META]
        return True, None if found is None else str(found)
    # Written before versions were recorded: pseudonyms then came from the first key.
    if holds_pseudonyms(store.read_schema(version).names):
        return True, LEGACY_KEY_VERSION
    return False, None


def check_key_version(root: Root, dataset: str, key: str, value: str, expected: str) -> None:
    """Raise KeyVersionMismatch unless the partition holds no pseudonyms or was pseudonymized
    under the `expected` key version."""
    holds, found = partition_key_version(root, dataset, key, value)
    if holds and found != expected:
        raise KeyVersionMismatch(f"{dataset}/{key}={value}", found, expected)


def _check_version(
    store: Backend, version: Version, name: str, expected: str | None
) -> tuple[bool, str | None]:
    holds, found = _key_version(store, version)
    if expected is not None and holds and found != expected:
        raise KeyVersionMismatch(name, found, expected)
    return holds, found


def _one_key_version(
    store: Backend,
    dataset: str,
    found: dict[str, Version],
    expected: str | None,
    prefix: str = "",
) -> dict[str, str | None]:
    """The key version each of `found` (partition label → version) holding pseudonyms was
    made under: each must be `expected` when given (KeyVersionMismatch, naming `prefix` +
    label), and all the same (MixedKeyVersions): data of two keys is never combined."""
    recorded: dict[str, str | None] = {}
    for label, version in found.items():
        holds, made_under = _check_version(store, version, prefix + label, expected)
        if holds:
            recorded[label] = made_under
    if len(set(recorded.values())) > 1:
        raise MixedKeyVersions(dataset, recorded)
    return recorded


def write_partition(
    root: Root,
    dataset: Dataset,
    key: str,
    value: str,
    df: pd.DataFrame,
    *,
    meta: dict[str, Any] | None = None,
    allow_empty: bool = False,
    folder: str | None = None,
    key_version: str | None = None,
) -> Path | str:
    """Check `df` against `dataset` and write it as one partition, atomically (replaces any).

    `folder` overrides the dataset's folder (e.g. 'ad_spend/platform=facebook');
    `key_version` is the HMAC key version of the pseudonyms in `df` (see `write_table`).
    """
    table = to_table(df, dataset, allow_empty=allow_empty)
    return write_table(
        root, folder or dataset.name, key, value, table, meta=meta, key_version=key_version
    )


def write_frame(
    root: Root,
    folder: str,
    key: str,
    value: str,
    df: pd.DataFrame,
    *,
    meta: dict[str, Any] | None = None,
    key_version: str | None = None,
) -> Path | str:
    """Write a derived (transform) frame as one partition, atomically."""
    table = pa.Table.from_pandas(df.reset_index(drop=True), preserve_index=False)
    return write_table(root, folder, key, value, table, meta=meta, key_version=key_version)


def write_table(
    root: Root,
    dataset: str,
    key: str,
    value: str,
    table: pa.Table,
    *,
    meta: dict[str, Any] | None = None,
    key_version: str | None = None,
) -> Path | str:
    """Write an Arrow table as one partition, published whole (a rename or a manifest commit).

    A table with pseudonym columns (`*_pid`) records `key_version` in `_meta.json` as
    `pseudonym_key_version`; without one it is recorded as null, which no reader accepts.
    """

    def data(path: Path) -> int:
        pq.write_table(table, path, **_PARQUET)
        return int(table.num_rows)

    return _write(root, dataset, key, value, table.column_names, data, meta, key_version)


def write_batches(
    root: Root,
    dataset: str,
    key: str,
    value: str,
    schema: pa.Schema,
    batches: Iterable[pa.RecordBatch],
    *,
    meta: dict[str, Any] | None = None,
    key_version: str | None = None,
) -> Path | str:
    """Write record batches as one partition (as `write_table`), each encoded as it comes.

    `batches` is read one thread ahead of the writer: a source that makes its batches with
    the GIL released (DuckDB, the compiled pseudonyms) works while Parquet encodes the
    previous one. `meta` is read after the last batch (a source may finish its counts then).
    """

    def data(path: Path) -> int:
        rows = 0
        with pq.ParquetWriter(path, schema, **_PARQUET) as out:
            for batch in read_ahead(batches):
                out.write_batch(batch)
                rows += batch.num_rows
        return rows

    return _write(root, dataset, key, value, schema.names, data, meta, key_version)


def _write(
    root: Root,
    dataset: str,
    key: str,
    value: str,
    columns: list[str],
    data: Callable[[Path], int],
    meta: dict[str, Any] | None,
    key_version: str | None,
) -> Path | str:
    """Publish one partition: `data` writes the Parquet file (returns its rows) in a staging
    folder, `_meta.json` is written beside it, and the backend publishes both at once.
    Returns where the partition is: its folder (a local lake) or its s3:// address."""
    store, part = backend(root), _part(dataset, key, value)

    def fill(tmp: Path) -> dict[str, Any]:
        # Deterministic bytes for the same rows: no write timestamps in the file.
        rows = data(tmp / DATA_FILE)
        info = {"dataset": dataset, key: value, "rows": rows, **(meta or {})}
        if holds_pseudonyms(columns):
            info[KEY_VERSION_META] = key_version
        return info

    return _publish_staged(store, part, fill, lambda tmp: store.publish(part, tmp))


def _publish_staged(
    store: Backend,
    part: str,
    fill: Callable[[Path], dict[str, Any]],
    publish: Callable[[Path], None],
) -> Path | str:
    """Stage a partition: `fill` writes its data files (if any) into the staging folder and
    returns its meta, written as `_meta.json`; `publish` makes the folder the partition's
    version. Nothing is left staged on an error. Returns where the partition is: its folder
    (a local lake) or its s3:// address."""
    tmp = store.stage(part)
    try:
        (tmp / META_FILE).write_bytes(meta_bytes(fill(tmp)))
        publish(tmp)
    except BaseException:
        store.discard(tmp)
        raise
    return store.path(part) if isinstance(store, LocalFolder) else store.where(part)


def combine(
    root: Root,
    dataset: str,
    key: str,
    value: str,
    sources: Sequence[tuple[str, str, str]],
    *,
    meta: dict[str, Any] | None = None,
    key_version: str | None = None,
) -> Path | str:
    """Publish one partition whose rows are those of complete partitions `sources` ((dataset,
    key, value) each, same schema), in order, without decoding them: their data files become
    its data files (linked or copied inside the store), committed whole as any write.

    Sources holding pseudonyms must all be of `key_version` (KeyVersionMismatch otherwise),
    which the combined partition records; rows are the sources' recorded rows summed.
    """
    store, part = backend(root), _part(dataset, key, value)
    if not sources:
        raise ValueError(f"lake.combine: no sources for {part}")
    found = {_part(*source): _require(store, *source) for source in sources}
    recorded = _one_key_version(store, dataset, found, key_version)
    rows = 0
    for name, version in found.items():
        if version.meta is None or "rows" not in version.meta:
            raise ValueError(f"lake.combine: {name} records no row count")
        rows += int(version.meta["rows"])

    def fill(_: Path) -> dict[str, Any]:
        info = {"dataset": dataset, key: value, "rows": rows, **(meta or {})}
        if recorded:
            info[KEY_VERSION_META] = next(iter(recorded.values()))
        return info

    return _publish_staged(
        store, part, fill, lambda tmp: store.publish_copies(part, tmp, list(found.values()))
    )


_T = TypeVar("_T")


def read_ahead(items: Iterable[_T], depth: int = 2) -> Iterator[_T]:
    """`items`, produced on a helper thread up to `depth` ahead of the consumer.

    An exception of the producer is raised here; when the consumer stops early (an error,
    a break), the producer is stopped and waited for before this returns, so nothing it
    uses (a database connection) is closed under it.
    """
    handoff: queue.Queue[tuple[str, Any]] = queue.Queue(depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                handoff.put(("item", item))
            handoff.put(("end", None))
        except BaseException as exc:  # noqa: BLE001 (handed to the consumer, raised there)
            handoff.put(("error", exc))

    thread = threading.Thread(target=produce, name="adperf-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            kind, item = handoff.get()
            if kind == "end":
                return
            if kind == "error":
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue; let it end
            try:
                handoff.get_nowait()
            except queue.Empty:
                thread.join(0.05)


def read_partition(
    root: Root, dataset: str, key: str, value: str, *, key_version: str | None = None
) -> pd.DataFrame:
    """Read one complete partition as a DataFrame; given `key_version`, refuse a partition
    pseudonymized under another one (KeyVersionMismatch)."""
    return _frame_of_one(read_arrow(root, dataset, key, value, key_version=key_version))


# The DataFrame conversions of small decoded tables, by table (the decoded-table cache hands
# out the same table object for a file read again): ~390 single-partition reads a sandbox loop
# day, mostly of partitions read the day before too, and converting a small table costs ~1 ms
# of fixed work where a copy of its frame costs ~0.05 ms. Each reader gets its own deep copy.
# Tables with nested columns are converted every time (their cells are mutable objects that a
# copy would share). Kept while their table lives; past FRAME_CACHE_BYTES (of the tables'
# Arrow bytes) the entries of dead tables are dropped, then, if still past it, all.
FRAME_CACHE_TABLE_BYTES = 1 << 20
FRAME_CACHE_BYTES = 32 << 20
_frames: dict[int, tuple[weakref.ref[pa.Table], pd.DataFrame, int]] = {}
_frames_bytes = 0  # the kept tables' summed nbytes
_frames_lock = threading.Lock()


def _frame_of_one(table: pa.Table) -> pd.DataFrame:
    """`table.to_pandas()`, from a kept conversion of the same table when it is small."""
    global _frames_bytes
    size = int(table.nbytes)
    if size > FRAME_CACHE_TABLE_BYTES or any(pa.types.is_nested(f.type) for f in table.schema):
        whole: pd.DataFrame = table.to_pandas()
        return whole
    with _frames_lock:
        kept = _frames.get(id(table))
    if kept is not None and kept[0]() is table:
        return kept[1].copy(deep=True)
    frame: pd.DataFrame = table.to_pandas()
    with _frames_lock:
        if _frames_bytes + size > FRAME_CACHE_BYTES:
            for key in [k for k, (ref, _, _) in _frames.items() if ref() is None]:
                del _frames[key]
            _frames_bytes = sum(n for _, _, n in _frames.values())
            if _frames_bytes + size > FRAME_CACHE_BYTES:
                _frames.clear()
                _frames_bytes = 0
        replaced = _frames.get(id(table))
        _frames_bytes += size - (replaced[2] if replaced else 0)
        _frames[id(table)] = (weakref.ref(table), frame, size)
    return frame.copy(deep=True)


def read_arrow(
    root: Root, dataset: str, key: str, value: str, *, key_version: str | None = None
) -> pa.Table:
    """One complete partition as an Arrow table (no pandas on the way), on either backend;
    given `key_version`, refuse a partition pseudonymized under another one."""
    store = backend(root)
    version = _require(store, dataset, key, value)
    # Meta and data of one version: a rewrite committed meanwhile is not mixed in.
    _check_version(store, version, f"{dataset}/{key}={value}", key_version)
    return store.read_table(version)


def read_partitions(
    root: Root, dataset: str, key: str, values: list[str], *, key_version: str | None = None
) -> pd.DataFrame:
    """Read and concatenate several partitions of one dataset (all must exist).

    Partitions pseudonymized under different key versions are never combined
    (MixedKeyVersions); given `key_version`, each must be of that version (KeyVersionMismatch).
    """
    if not values:
        raise ValueError(f"read_partitions: no partitions of {dataset} requested")
    store = backend(root)
    found = {f"{key}={v}": _require(store, dataset, key, v) for v in values}
    _one_key_version(store, dataset, found, key_version, prefix=f"{dataset}/")
    tables = [store.read_table(version) for version in found.values()]
    frame: pd.DataFrame = pa.concat_tables(tables, promote_options="default").to_pandas()
    return frame


def frame_of(tables: Sequence[pa.Table]) -> pd.DataFrame:
    """Tables (partitions read with `read_arrow`) as one DataFrame, rows in order, exactly as
    pandas concatenates their conversions (`pd.concat`, ignore_index).

    Tables of one schema (metadata included, no dictionary column) are converted once, as
    their Arrow concatenation: the conversion's fixed cost is most of reading a small
    partition, and converting each gives the same columns. Others go through pandas, whose
    concatenation decides their types (an all-null column beside strings is `object`, where
    Arrow would make it `str`)."""
    if not tables:
        return pd.DataFrame()
    first = tables[0].schema
    same = all(t.schema.equals(first, check_metadata=True) for t in tables[1:])
    if same and not any(pa.types.is_dictionary(f.type) for f in first):
        whole: pd.DataFrame = pa.concat_tables(tables).to_pandas()
        return whole
    frame: pd.DataFrame = pd.concat([t.to_pandas() for t in tables], ignore_index=True)
    return frame


def read_meta(root: Root, dataset: str, key: str, value: str) -> dict[str, Any]:
    """The `_meta.json` of one partition."""
    version = _require(backend(root), dataset, key, value)
    if version.meta is None:
        raise FileNotFoundError(f"{META_FILE} of lake partition {dataset}/{key}={value}")
    return dict(version.meta)


def read_file(root: Root, dataset: str, key: str, value: str, name: str) -> bytes | None:
    """The bytes of one file of a complete partition (`DATA_FILE` or `META_FILE`); None when
    the partition or that file is missing."""
    store = backend(root)
    version = store.current(_part(dataset, key, value))
    if version is None:
        return None
    if name == META_FILE:
        return None if version.meta is None else meta_bytes(version.meta)
    if name == DATA_FILE:
        return store.read_data(version)
    raise ValueError(f"a lake partition has no file {name!r}")


def partition_size(
    root: Root, dataset: str, key: str, value: str, *, key_version: str | None = None
) -> tuple[int, int] | None:
    """(rows recorded in its meta, bytes stored) of one partition, read from one version; None
    when it is not complete (as `partition_exists`, given `key_version`)."""
    store = backend(root)
    version = store.current(_part(dataset, key, value))
    if version is None:
        return None
    if key_version is not None:
        holds, found = _key_version(store, version)
        if holds and found != key_version:
            return None
    return int((version.meta or {}).get("rows", 0)), store.nbytes(version)


def partition_nbytes(root: Root, dataset: str, key: str, value: str) -> int:
    """Bytes stored for one complete partition."""
    store = backend(root)
    return store.nbytes(_require(store, dataset, key, value))


def _require(store: Backend, dataset: str, key: str, value: str) -> Version:
    part = _part(dataset, key, value)
    version = store.current(part)
    if version is None:
        raise FileNotFoundError(f"lake partition {store.where(part)} was not written (yet)")
    return version
