"""Luigi targets over the lake and the warehouse."""

from __future__ import annotations

from pathlib import Path

import luigi
import pandas as pd
import pyarrow as pa

from adperf import lake, warehouse
from adperf.files import Files, FolderVersion, read_json, write_json
from tasks import config


class LakePartition(luigi.Target):
    """One lake partition; it exists once it was completely written (a folder renamed into
    place, or an object store manifest committed: adperf.objstore)."""

    def __init__(self, root: lake.Root, folder: str, key: str, value: str) -> None:
        local = isinstance(root, str) and not root.startswith("s3://")
        self.root: lake.Root = Path(str(root)) if local else root
        self.folder, self.key, self.value = folder, key, value

    @property
    def path(self) -> Path:
        """The partition's folder (a local lake only)."""
        if not isinstance(self.root, Path):
            raise TypeError(f"{self!r} is in an object store, not a folder")
        return lake.partition_path(self.root, self.folder, self.key, self.value)

    @property
    def where(self) -> str:
        """The partition's folder or s3:// address."""
        return lake.partition_where(self.root, self.folder, self.key, self.value)

    def nbytes(self) -> int:
        """Bytes stored for the partition (it must exist)."""
        return lake.partition_nbytes(self.root, self.folder, self.key, self.value)

    def size(self) -> tuple[int, int] | None:
        """(rows, bytes) of the partition when it exists (as `exists` says), else None."""
        return lake.partition_size(
            self.root, self.folder, self.key, self.value, key_version=config.hmac_key_version()
        )

    def exists(self) -> bool:
        # A partition pseudonymized under another HMAC key version is not complete: after a key
        # rotation luigi extracts it again instead of joining old pseudonyms with new ones.
        version = config.hmac_key_version()
        return lake.partition_exists(
            self.root, self.folder, self.key, self.value, key_version=version
        )

    def read(self) -> pd.DataFrame:
        version = config.hmac_key_version()  # KeyVersionMismatch for another version
        return lake.read_partition(
            self.root, self.folder, self.key, self.value, key_version=version
        )

    def read_arrow(self) -> pa.Table:
        """The partition as an Arrow table (KeyVersionMismatch for another key version)."""
        version = config.hmac_key_version()
        return lake.read_arrow(self.root, self.folder, self.key, self.value, key_version=version)

    def meta(self) -> dict:  # type: ignore[type-arg]
        return lake.read_meta(self.root, self.folder, self.key, self.value)

    def __repr__(self) -> str:
        return f"LakePartition({self.where})"


class WarehouseDay(luigi.Target):
    """A report day loaded into the warehouse (its marker row, written with the rows); with
    `marker`, that partial load of the day (adperf.warehouse.load_day)."""

    def __init__(self, url: str, day: str, marker: str | None = None) -> None:
        self.url, self.day, self.marker = url, day, marker

    def exists(self) -> bool:
        # No try/except: an unreachable warehouse must fail the run, not look like "not loaded".
        engine = warehouse.make_engine(self.url)
        try:
            return warehouse.is_loaded(engine, self.day, self.marker)
        finally:
            engine.dispose()


class JsonFile(luigi.Target):
    """A JSON file written atomically (temp file + os.replace) by its producer."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def exists(self) -> bool:
        return self.path.is_file()


class SharedFile(luigi.Target):
    """A JSON marker every worker host sees (adperf.files: files_root, or the lake's bucket)."""

    def __init__(self, files: Files, rel: str) -> None:
        self.files, self.rel = files, rel

    def exists(self) -> bool:
        return self.files.read(self.rel) is not None

    def read_json(self) -> dict | None:  # type: ignore[type-arg]
        return read_json(self.files, self.rel)

    def write_json(self, payload: dict) -> None:  # type: ignore[type-arg]
        write_json(self.files, self.rel, payload)

    def delete(self) -> None:
        self.files.delete(self.rel)

    def __repr__(self) -> str:
        return f"SharedFile({self.files.where(self.rel)})"


class SharedFolder(luigi.Target):
    """A published folder every worker host sees (with `name`: that file of it)."""

    def __init__(self, files: Files, rel: str, name: str | None = None) -> None:
        self.files, self.rel, self.name = files, rel, name

    def exists(self) -> bool:
        version = self.files.folder(self.rel)
        return version is not None and (self.name is None or self.name in version.files)

    def version(self) -> FolderVersion:
        """The folder's current version (FileNotFoundError: never published)."""
        version = self.files.folder(self.rel)
        if version is None:
            raise FileNotFoundError(f"published folder {self.files.where(self.rel)}")
        return version

    def meta(self) -> dict | None:  # type: ignore[type-arg]
        version = self.files.folder(self.rel)
        return None if version is None else version.meta

    def __repr__(self) -> str:
        return f"SharedFolder({self.files.where(self.rel)}{'/' + self.name if self.name else ''})"
