"""The lake: one Parquet partition per (dataset, period), written atomically.

Layout: `<root>/<dataset>/<key>=<value>/part-0.parquet` plus `_meta.json` (row counts and
quarantine counts of the run that wrote it). A partition is complete exactly when its folder
exists: it is written in a temp folder beside it and renamed into place, so a killed writer
leaves only a `_tmp-*` folder, which readers ignore and the next write of the dataset removes.

A partition holding user pseudonyms (`*_pid` columns) records the HMAC key version it was
pseudonymized under (`pseudonym_key_version` in `_meta.json`); given the current version,
`partition_exists` takes one of another version as missing and the readers refuse it
(`KeyVersionMismatch`), so data of two keys is re-extracted, never joined.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from adperf.pseudonym import (
    KEY_VERSION_META,
    LEGACY_KEY_VERSION,
    KeyVersionMismatch,
    MixedKeyVersions,
    holds_pseudonyms,
)
from adperf.schema import Dataset, to_table

TMP_PREFIX = "_tmp-"
DATA_FILE = "part-0.parquet"
META_FILE = "_meta.json"
# A temp folder older than this is from a dead writer (a live one finishes in minutes).
STALE_TMP_SECONDS = 6 * 3600


# How every partition is encoded. zstd level 1: of zstd's levels the fastest that still
# compresses (hex pseudonyms to about half; negative levels leave them as they are).
_PARQUET: dict[str, Any] = {
    "compression": "zstd",
    "compression_level": 1,
    "write_statistics": True,
}


def partition_path(root: Path, dataset: str, key: str, value: str) -> Path:
    """The folder of one partition; it follows from its name alone."""
    return Path(root) / dataset / f"{key}={value}"


def partition_exists(
    root: Path, dataset: str, key: str, value: str, *, key_version: str | None = None
) -> bool:
    """True when the partition was completely written (and, given `key_version`, holds no
    pseudonyms or was pseudonymized under that key version)."""
    if not (partition_path(root, dataset, key, value) / DATA_FILE).is_file():
        return False
    if key_version is None:
        return True
    holds, found = partition_key_version(root, dataset, key, value)
    return not holds or found == key_version


def partition_key_version(
    root: Path, dataset: str, key: str, value: str
) -> tuple[bool, str | None]:
    """(holds pseudonyms, the key version they were made under; None when unrecorded)."""
    folder = partition_path(root, dataset, key, value)
    meta = json.loads((folder / META_FILE).read_text()) if (folder / META_FILE).is_file() else {}
    if KEY_VERSION_META in meta:
        found = meta[KEY_VERSION_META]
        return True, None if found is None else str(found)
    # Written before versions were recorded: pseudonyms then came from the first key.
    if holds_pseudonyms(pq.read_schema(folder / DATA_FILE).names):
        return True, LEGACY_KEY_VERSION
    return False, None


def check_key_version(root: Path, dataset: str, key: str, value: str, expected: str) -> None:
    """Raise KeyVersionMismatch unless the partition holds no pseudonyms or was pseudonymized
    under the `expected` key version."""
    holds, found = partition_key_version(root, dataset, key, value)
    if holds and found != expected:
        raise KeyVersionMismatch(f"{dataset}/{key}={value}", found, expected)


def write_partition(
    root: Path,
    dataset: Dataset,
    key: str,
    value: str,
    df: pd.DataFrame,
    *,
    meta: dict[str, Any] | None = None,
    allow_empty: bool = False,
    folder: str | None = None,
    key_version: str | None = None,
) -> Path:
    """Check `df` against `dataset` and write it as one partition, atomically (replaces any).

    `folder` overrides the dataset's folder (e.g. 'ad_spend/platform=facebook');
    `key_version` is the HMAC key version of the pseudonyms in `df` (see `write_table`).
    """
    table = to_table(df, dataset, allow_empty=allow_empty)
    return write_table(
        root, folder or dataset.name, key, value, table, meta=meta, key_version=key_version
    )


def write_frame(
    root: Path,
    folder: str,
    key: str,
    value: str,
    df: pd.DataFrame,
    *,
    meta: dict[str, Any] | None = None,
    key_version: str | None = None,
) -> Path:
    """Write a derived (transform) frame as one partition, atomically."""
    table = pa.Table.from_pandas(df.reset_index(drop=True), preserve_index=False)
    return write_table(root, folder, key, value, table, meta=meta, key_version=key_version)


def write_table(
    root: Path,
    dataset: str,
    key: str,
    value: str,
    table: pa.Table,
    *,
    meta: dict[str, Any] | None = None,
    key_version: str | None = None,
) -> Path:
    """Write an Arrow table as one partition through a temp folder and a rename.

    A table with pseudonym columns (`*_pid`) records `key_version` in `_meta.json` as
    `pseudonym_key_version`; without one it is recorded as null, which no reader accepts.
    """

    def data(path: Path) -> int:
        pq.write_table(table, path, **_PARQUET)
        return int(table.num_rows)

    return _write(root, dataset, key, value, table.column_names, data, meta, key_version)


def write_batches(
    root: Path,
    dataset: str,
    key: str,
    value: str,
    schema: pa.Schema,
    batches: Iterable[pa.RecordBatch],
    *,
    meta: dict[str, Any] | None = None,
    key_version: str | None = None,
) -> Path:
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
    root: Path,
    dataset: str,
    key: str,
    value: str,
    columns: list[str],
    data: Callable[[Path], int],
    meta: dict[str, Any] | None,
    key_version: str | None,
) -> Path:
    """Publish one partition: `data` writes the Parquet file (returns its rows) in a temp
    folder, `_meta.json` is written beside it, and the folder is renamed into place."""
    final = partition_path(root, dataset, key, value)
    final.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale_tmp(final.parent)
    tmp = final.parent / f"{TMP_PREFIX}{key}={value}-{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        # Deterministic bytes for the same rows: no write timestamps in the file.
        rows = data(tmp / DATA_FILE)
        info = {"dataset": dataset, key: value, "rows": rows, **(meta or {})}
        if holds_pseudonyms(columns):
            info[KEY_VERSION_META] = key_version
        (tmp / META_FILE).write_text(json.dumps(info, sort_keys=True, indent=1, default=str))
        _fsync_dir(tmp)
        if final.exists():
            # os.rename cannot replace a non-empty folder: move the old one aside first.
            old = final.parent / f"{TMP_PREFIX}old-{key}={value}-{uuid.uuid4().hex}"
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)
        _fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


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
    root: Path, dataset: str, key: str, value: str, *, key_version: str | None = None
) -> pd.DataFrame:
    """Read one complete partition as a DataFrame; given `key_version`, refuse a partition
    pseudonymized under another one (KeyVersionMismatch)."""
    if key_version is not None:
        check_key_version(root, dataset, key, value, key_version)
    frame: pd.DataFrame = pq.read_table(
        partition_path(root, dataset, key, value) / DATA_FILE
    ).to_pandas()
    return frame


def read_partitions(
    root: Path, dataset: str, key: str, values: list[str], *, key_version: str | None = None
) -> pd.DataFrame:
    """Read and concatenate several partitions of one dataset (all must exist).

    Partitions pseudonymized under different key versions are never combined
    (MixedKeyVersions); given `key_version`, each must be of that version (KeyVersionMismatch).
    """
    if key_version is not None:
        for v in values:
            check_key_version(root, dataset, key, v, key_version)
    recorded = {v: partition_key_version(root, dataset, key, v) for v in values}
    versions = {f"{key}={v}": found for v, (holds, found) in recorded.items() if holds}
    if len(set(versions.values())) > 1:
        raise MixedKeyVersions(dataset, versions)
    tables = [pq.read_table(partition_path(root, dataset, key, v) / DATA_FILE) for v in values]
    if not tables:
        raise ValueError(f"read_partitions: no partitions of {dataset} requested")
    frame: pd.DataFrame = pa.concat_tables(tables, promote_options="default").to_pandas()
    return frame


def read_meta(root: Path, dataset: str, key: str, value: str) -> dict[str, Any]:
    """The `_meta.json` of one partition."""
    text = (partition_path(root, dataset, key, value) / META_FILE).read_text()
    result: dict[str, Any] = json.loads(text)
    return result


def _clean_stale_tmp(folder: Path) -> None:
    now = time.time()
    for child in folder.glob(f"{TMP_PREFIX}*"):
        try:
            if now - child.stat().st_mtime > STALE_TMP_SECONDS:
                shutil.rmtree(child, ignore_errors=True)
        except FileNotFoundError:
            continue


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
