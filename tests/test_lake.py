import os
import shutil

import pandas as pd
import pyarrow as pa
import pytest

from adperf import lake, objstore
from adperf.errors import SchemaError
from adperf.pseudonym import KeyVersionMismatch, MixedKeyVersions
from adperf.schema import PAYMENTS


def _payments(n: int = 2) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "date": ["2026-11-27"] * n,
            "payment_id": [str(10**17 + i) for i in range(n)],
            "user_pid": ["a" * 32] * n,
            "created_at": pd.to_datetime(["2026-11-27 01:00:00"] * n, utc=True),
            "kind": ["purchase"] * n,
            "amount_original_micros": [1_990_000] * n,
            "currency_original": ["USD"] * n,
            "fx_rate": [1.0] * n,
            "amount_micros": [1_990_000] * n,
        }
    )


def test_write_then_read_round_trips_exactly(tmp_path):
    lake.write_partition(tmp_path, PAYMENTS, "date", "2026-11-27", _payments(), meta={"x": 1})
    back = lake.read_partition(tmp_path, "payments", "date", "2026-11-27")
    assert back["payment_id"].tolist() == [str(10**17), str(10**17 + 1)]
    assert back["amount_micros"].sum() == 3_980_000
    assert lake.read_meta(tmp_path, "payments", "date", "2026-11-27")["rows"] == 2
    assert lake.partition_exists(tmp_path, "payments", "date", "2026-11-27")


def test_rewrite_replaces_and_leaves_no_temp(tmp_path):
    lake.write_partition(tmp_path, PAYMENTS, "date", "2026-11-27", _payments(2))
    lake.write_partition(tmp_path, PAYMENTS, "date", "2026-11-27", _payments(5))
    assert len(lake.read_partition(tmp_path, "payments", "date", "2026-11-27")) == 5
    assert [p.name for p in (tmp_path / "payments").iterdir()] == ["date=2026-11-27"]


def test_failed_write_leaves_nothing_that_looks_complete(tmp_path):
    bad = _payments().drop(columns=["kind"])
    with pytest.raises(SchemaError, match="missing columns \\['kind'\\]"):
        lake.write_partition(tmp_path, PAYMENTS, "date", "2026-11-27", bad)
    assert not lake.partition_exists(tmp_path, "payments", "date", "2026-11-27")


def test_left_over_temp_folder_is_ignored_and_stale_ones_cleaned(tmp_path):
    folder = tmp_path / "payments"
    stale = folder / f"{lake.TMP_PREFIX}date=2026-11-27-dead"
    stale.mkdir(parents=True)
    (stale / lake.DATA_FILE).write_bytes(b"half a file")
    old = 1_000_000_000
    os.utime(stale, (old, old))
    assert not lake.partition_exists(tmp_path, "payments", "date", "2026-11-27")
    lake.write_partition(tmp_path, PAYMENTS, "date", "2026-11-28", _payments())
    assert not stale.exists()


def test_same_rows_give_identical_bytes(tmp_path):
    a = lake.write_partition(tmp_path / "a", PAYMENTS, "date", "2026-11-27", _payments())
    b = lake.write_partition(tmp_path / "b", PAYMENTS, "date", "2026-11-27", _payments())
    assert (a / lake.DATA_FILE).read_bytes() == (b / lake.DATA_FILE).read_bytes()


def test_nulls_in_required_column_rejected(tmp_path):
    df = _payments()
    df.loc[0, "user_pid"] = None
    with pytest.raises(SchemaError, match="user_pid has 1 nulls"):
        lake.write_partition(tmp_path, PAYMENTS, "date", "2026-11-27", df)


# ------------------------------------------------------------------- write_batches, read_ahead


def _batches(n: int, each: int = 3):
    from adperf.schema import to_table

    table = to_table(_payments(n * each), PAYMENTS)
    return table.schema, table.to_batches(max_chunksize=each)


def test_write_batches_writes_what_write_table_writes(tmp_path):
    schema, batches = _batches(4)
    counts = {"lines": 0}

    def source():
        for b in batches:
            counts["lines"] += b.num_rows  # a source finishing its counts as it goes
            yield b

    path = lake.write_batches(
        tmp_path, "payments", "date", "2026-11-27", schema, source(), meta=counts,
        key_version="1",
    )  # fmt: skip
    back = lake.read_partition(tmp_path, "payments", "date", "2026-11-27")
    lake.write_table(tmp_path, "whole", "date", "2026-11-27", pa.Table.from_batches(batches))
    pd.testing.assert_frame_equal(
        back, lake.read_partition(tmp_path, "whole", "date", "2026-11-27")
    )
    assert len(back) == 12 and back["payment_id"].tolist() == _payments(12)["payment_id"].tolist()
    meta = lake.read_meta(tmp_path, "payments", "date", "2026-11-27")
    assert meta["rows"] == 12 and meta["lines"] == 12  # meta read after the last batch
    assert meta["pseudonym_key_version"] == "1"
    assert path == lake.partition_path(tmp_path, "payments", "date", "2026-11-27")


def test_write_batches_of_a_failing_source_leaves_nothing_and_stops_it(tmp_path):
    import threading

    schema, batches = _batches(4)
    lake.write_batches(tmp_path, "payments", "date", "2026-11-27", schema, batches[:1])
    made: list[int] = []

    def source():
        for i, b in enumerate(batches):
            if i == 2:
                raise ValueError("logs: the source broke at batch 2")
            made.append(i)
            yield b

    with pytest.raises(ValueError, match="broke at batch 2"):
        lake.write_batches(tmp_path, "payments", "date", "2026-11-27", schema, source())
    # The partition written before is still the complete one; no temp folder is left.
    assert len(lake.read_partition(tmp_path, "payments", "date", "2026-11-27")) == 3
    assert [p.name for p in (tmp_path / "payments").iterdir()] == ["date=2026-11-27"]
    assert not any(t.name == "adperf-read-ahead" for t in threading.enumerate())
    assert made == [0, 1]


def test_read_ahead_stops_its_producer_when_the_consumer_stops():
    import threading

    produced: list[int] = []

    def items():
        for i in range(1000):
            produced.append(i)
            yield i

    ahead = lake.read_ahead(items(), depth=2)
    assert [next(ahead), next(ahead)] == [0, 1]
    ahead.close()  # the consumer gives up (an error in the writer, a break)
    assert not any(t.name == "adperf-read-ahead" for t in threading.enumerate())
    assert len(produced) < 10  # at most a few items ahead, never the whole source
    assert list(lake.read_ahead(iter([]))) == []


def test_combine_publishes_the_sources_files_as_one_partition_in_order(tmp_path):
    for i, n in enumerate((2, 0, 3)):
        df = _payments(n).assign(payment_id=[f"{i}-{k}" for k in range(n)])
        lake.write_partition(
            tmp_path, PAYMENTS, "date", f"s{i}", df, key_version="1", allow_empty=True
        )
    sources = [("payments", "date", f"s{i}") for i in range(3)]
    lake.combine(
        tmp_path, "payments", "date", "2026-11-27", sources, meta={"x": 1}, key_version="1"
    )
    back = lake.read_partition(tmp_path, "payments", "date", "2026-11-27", key_version="1")
    assert back["payment_id"].tolist() == ["0-0", "0-1", "2-0", "2-1", "2-2"]
    meta = lake.read_meta(tmp_path, "payments", "date", "2026-11-27")
    assert (meta["rows"], meta["x"], meta["pseudonym_key_version"]) == (5, 1, "1")
    folder = lake.partition_path(tmp_path, "payments", "date", "2026-11-27")
    assert sorted(p.name for p in folder.iterdir()) == [
        "_meta.json", "part-0.parquet", "part-1.parquet", "part-2.parquet"
    ]  # fmt: skip
    # A source rewritten later leaves the combined partition as it was (its own links).
    lake.write_partition(tmp_path, PAYMENTS, "date", "s0", _payments(9), key_version="1")
    assert len(lake.read_partition(tmp_path, "payments", "date", "2026-11-27")) == 5
    # Sources of another key version are refused, and nothing is published.
    lake.write_partition(tmp_path, PAYMENTS, "date", "s9", _payments(1), key_version="2")
    with pytest.raises(KeyVersionMismatch):
        lake.combine(
            tmp_path,
            "payments",
            "date",
            "d2",
            [*sources, ("payments", "date", "s9")],
            key_version="1",
        )
    with pytest.raises(MixedKeyVersions):
        lake.combine(tmp_path, "payments", "date", "d2", [*sources, ("payments", "date", "s9")])
    assert not lake.partition_exists(tmp_path, "payments", "date", "d2")
    assert not any(p.name.startswith(lake.TMP_PREFIX) for p in (tmp_path / "payments").iterdir())


# ------------------------------------------------------------------- the read cache


def _count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Patch the Parquet decoder the backends use; returns the list of files it decoded."""
    decoded: list[str] = []
    real = objstore.pq.read_table

    def counting(source, *args, **kwargs):  # type: ignore[no-untyped-def]
        decoded.append(str(source))
        return real(source, *args, **kwargs)

    monkeypatch.setattr(objstore.pq, "read_table", counting)
    return decoded


def test_a_partition_read_again_is_not_decoded_again(tmp_path, monkeypatch):
    lake.write_partition(tmp_path, PAYMENTS, "date", "2026-11-27", _payments(3))
    lake.write_partition(tmp_path, PAYMENTS, "date", "2026-11-28", _payments(2))
    decoded = _count_decodes(monkeypatch)
    first = lake.read_partition(tmp_path, "payments", "date", "2026-11-27")
    again = lake.read_arrow(tmp_path, "payments", "date", "2026-11-27")
    both = lake.read_partitions(tmp_path, "payments", "date", ["2026-11-27", "2026-11-28"])
    assert len(decoded) == 2  # each file once, although the first was read three times
    assert again.num_rows == len(first) == 3 and len(both) == 5
    assert first.equals(again.to_pandas())


def test_a_rewritten_partition_is_read_anew_never_from_the_cache(tmp_path, monkeypatch):
    old = _payments(3)
    new = _payments(3).assign(payment_id=[str(2 * 10**17 + i) for i in range(3)])
    lake.write_partition(tmp_path, PAYMENTS, "date", "2026-11-27", old)
    decoded = _count_decodes(monkeypatch)
    assert (
        lake.read_partition(tmp_path, "payments", "date", "2026-11-27")["payment_id"].tolist()
        == old["payment_id"].tolist()
    )
    # Same rows count, same bytes' length: only the file's identity tells the versions apart.
    lake.write_partition(tmp_path, PAYMENTS, "date", "2026-11-27", new)
    got = lake.read_partition(tmp_path, "payments", "date", "2026-11-27")
    assert got["payment_id"].tolist() == new["payment_id"].tolist()
    assert len(decoded) == 2
    # Read from a new root object (as another task would): still the new rows, not decoded again.
    got = lake.read_partition(tmp_path / ".", "payments", "date", "2026-11-27")
    assert got["payment_id"].tolist() == new["payment_id"].tolist() and len(decoded) == 2


def test_the_table_cache_keeps_the_latest_tables_within_its_bytes():
    sizes = {0: 1000, 1: 2000, 2: 3000, 3: 9000}
    tables = {k: pa.table({"x": pa.array(range(n), pa.int64())}) for k, n in sizes.items()}
    cache = objstore.DecodedCache[pa.Table](tables[1].nbytes + tables[2].nbytes, lambda t: t.nbytes)
    loads: list[int] = []

    def load(k: int) -> pa.Table:
        loads.append(k)
        return tables[k]

    for k in (0, 1, 0, 2):  # 0 is read again after 1, so 1 is the least recent when 2 comes
        assert cache.get(("t", k), lambda k=k: load(k)) is tables[k]
    assert loads == [0, 1, 2] and cache.used == tables[0].nbytes + tables[2].nbytes
    assert cache.get(("t", 1), lambda: load(1)) is tables[1] and loads[-1] == 1  # was dropped
    assert cache.used <= cache.limit
    cache.get(("t", 3), lambda: load(3))  # bigger than the whole cache: returned, never kept
    assert cache.get(("t", 3), lambda: load(3)) is tables[3] and loads[-2:] == [3, 3]


def test_the_key_version_check_reads_a_files_schema_once(tmp_path, monkeypatch):
    # A partition without pseudonyms records no key version: its schema says it holds none.
    lake.write_frame(tmp_path, "campaign_report", "date", "2026-11-27", pd.DataFrame({"a": [1]}))
    schemas: list[str] = []
    real = objstore.pq.read_schema
    monkeypatch.setattr(objstore.pq, "read_schema", lambda path: schemas.append(path) or real(path))
    for _ in range(3):
        assert lake.partition_exists(
            tmp_path, "campaign_report", "date", "2026-11-27", key_version="1"
        )
    assert len(schemas) == 1
    lake.write_frame(
        tmp_path, "campaign_report", "date", "2026-11-27", pd.DataFrame({"a_pid": ["x"]})
    )
    assert not lake.partition_exists(
        tmp_path, "campaign_report", "date", "2026-11-27", key_version="1"
    )


def test_frame_of_partitions_is_what_pandas_concatenation_of_each_gives(tmp_path):
    def each(tables: list[pa.Table]) -> pd.DataFrame:
        return pd.concat([t.to_pandas() for t in tables], ignore_index=True)

    lake.write_partition(tmp_path, PAYMENTS, "date", "a", _payments(3))
    lake.write_partition(tmp_path, PAYMENTS, "date", "b", _payments(0), allow_empty=True)
    lake.write_partition(tmp_path, PAYMENTS, "date", "c", _payments(2))
    frames = {
        "x": pd.DataFrame({"name": [None, None], "n": [1, 2], "v": [0.5, 1.5]}),
        "y": pd.DataFrame({"name": ["a", None], "n": [3, 4], "v": [2.5, None]}),
        "z": pd.DataFrame({"name": ["b"], "n": [5.5], "v": [1.0]}),  # n: a float here
    }
    for value, df in frames.items():
        lake.write_frame(tmp_path, "derived", "date", value, df)
    cases = [
        [("payments", v) for v in "abc"],
        [("derived", "x"), ("derived", "y")],  # an all-null column beside strings
        [("derived", v) for v in "xyz"],  # types Arrow does not unify: pandas concatenates
    ]
    for case in cases:
        tables = [lake.read_arrow(tmp_path, d, "date", v) for d, v in case]
        got = lake.frame_of(tables)
        pd.testing.assert_frame_equal(got, each(tables))
        assert len(got) == sum(t.num_rows for t in tables) > 0
    assert lake.frame_of([]).empty


# ------------------------------------------------------------------- the version cache


def _count_meta_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Patch the JSON parser the local backend reads `_meta.json` with; returns what it read."""
    read: list[str] = []
    real = objstore.json.loads

    def counting(text, *args, **kwargs):  # type: ignore[no-untyped-def]
        read.append(text)
        return real(text, *args, **kwargs)

    monkeypatch.setattr(objstore.json, "loads", counting)
    return read


def test_a_partition_asked_again_is_not_read_again(tmp_path, monkeypatch):
    lake.write_partition(tmp_path, PAYMENTS, "date", "2026-11-27", _payments(3), meta={"x": 1})
    read = _count_meta_reads(monkeypatch)
    for _ in range(3):
        assert lake.partition_exists(tmp_path, "payments", "date", "2026-11-27")
        assert lake.partition_size(tmp_path, "payments", "date", "2026-11-27")[0] == 3
    meta = lake.read_meta(tmp_path, "payments", "date", "2026-11-27")
    meta["x"] = 2  # a caller's copy: the next answer is the file's again
    assert lake.read_meta(tmp_path, "payments", "date", "2026-11-27")["x"] == 1
    assert len(read) <= 1  # once, or never when the write's own answer was kept


def test_a_rewritten_or_removed_partition_is_seen_at_once(tmp_path):
    day = ("payments", "date", "2026-11-27")
    lake.write_partition(tmp_path, PAYMENTS, "date", day[2], _payments(2), meta={"x": 1})
    assert lake.read_meta(tmp_path, *day)["x"] == 1
    # Same rows, same meta length: only the files' identities tell the versions apart.
    lake.write_partition(tmp_path, PAYMENTS, "date", day[2], _payments(2), meta={"x": 2})
    assert lake.read_meta(tmp_path, *day)["x"] == 2
    # Combined from sources (hard links to their files): the new version's files and meta.
    for i, n in enumerate((1, 4)):
        lake.write_partition(tmp_path, PAYMENTS, "date", f"s{i}", _payments(n))
    lake.combine(tmp_path, "payments", "date", day[2], [("payments", "date", "s0")])
    assert lake.partition_size(tmp_path, *day)[0] == 1
    lake.combine(
        tmp_path, "payments", "date", day[2], [("payments", "date", f"s{i}") for i in (0, 1)]
    )
    assert len(lake.read_partition(tmp_path, *day)) == 5
    assert lake.partition_size(tmp_path, *day)[0] == 5
    shutil.rmtree(lake.partition_path(tmp_path, *day))
    assert not lake.partition_exists(tmp_path, *day)


def test_a_partition_read_again_is_an_equal_frame_of_its_own(tmp_path):
    lake.write_partition(tmp_path, PAYMENTS, "date", "2026-11-27", _payments(3))
    first = lake.read_partition(tmp_path, "payments", "date", "2026-11-27")
    first.loc[0, "payment_id"] = "changed"  # a reader's own frame: the next one is the file's
    first["amount_micros"] += 1
    again = lake.read_partition(tmp_path, "payments", "date", "2026-11-27")
    table = lake.read_arrow(tmp_path, "payments", "date", "2026-11-27")
    pd.testing.assert_frame_equal(again, table.to_pandas(), check_exact=True)
    assert again.dtypes.equals(table.to_pandas().dtypes)
    assert again["payment_id"].tolist() == [str(10**17 + i) for i in range(3)]
    assert again is not lake.read_partition(tmp_path, "payments", "date", "2026-11-27")
    assert id(table) in lake._frames  # kept (a small table without nested columns)
    # Rewritten: the new version's rows, never the kept frame of the old one.
    lake.write_partition(tmp_path, PAYMENTS, "date", "2026-11-27", _payments(5))
    assert len(lake.read_partition(tmp_path, "payments", "date", "2026-11-27")) == 5
