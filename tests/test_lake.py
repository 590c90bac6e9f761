import os

import pandas as pd
import pytest

from adperf import lake
from adperf.errors import SchemaError
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
