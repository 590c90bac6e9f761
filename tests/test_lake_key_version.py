"""The HMAC key version is recorded with every partition holding pseudonyms; readers refuse
another version and never combine two."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from adperf import lake
from adperf.pseudonym import (
    KEY_VERSION_META,
    KeyVersionMismatch,
    MixedKeyVersions,
    check_key_version,
    pseudonymize_one,
)
from adperf.schema import PAYMENTS

from .test_lake import _payments

DAY, NEXT = "2026-11-27", "2026-11-28"
KEY = b"unit-test-hmac-key-0123456789abcdef"


def _meta(root: Path, dataset: str, day: str) -> dict:  # type: ignore[type-arg]
    return json.loads(
        (lake.partition_path(root, dataset, "date", day) / lake.META_FILE).read_text()
    )


def test_the_version_is_recorded_for_pseudonyms_only(tmp_path: Path) -> None:
    df = _payments()
    df["user_pid"] = pseudonymize_one("user-42", KEY)
    lake.write_partition(tmp_path, PAYMENTS, "date", DAY, df, key_version="2")
    lake.write_frame(tmp_path, "campaign_report", "date", DAY, pd.DataFrame({"spend": [1.0]}))
    assert _meta(tmp_path, "payments", DAY)[KEY_VERSION_META] == "2"
    assert KEY_VERSION_META not in _meta(tmp_path, "campaign_report", DAY)
    assert lake.partition_key_version(tmp_path, "payments", "date", DAY) == (True, "2")
    assert lake.partition_key_version(tmp_path, "campaign_report", "date", DAY) == (False, None)
    # The key is never written, in any form but the pseudonyms it made.
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert KEY not in path.read_bytes(), path


def test_another_version_is_not_complete_and_is_refused(tmp_path: Path) -> None:
    lake.write_partition(tmp_path, PAYMENTS, "date", DAY, _payments(), key_version="1")
    assert lake.partition_exists(tmp_path, "payments", "date", DAY, key_version="1")
    assert not lake.partition_exists(tmp_path, "payments", "date", DAY, key_version="2")
    assert lake.partition_exists(tmp_path, "payments", "date", DAY)  # no version asked
    assert len(lake.read_partition(tmp_path, "payments", "date", DAY, key_version="1")) == 2
    with pytest.raises(KeyVersionMismatch) as err:
        lake.read_partition(tmp_path, "payments", "date", DAY, key_version="2")
    text = str(err.value)
    assert f"payments/date={DAY}" in text and "key version 1" in text and "key version 2" in text
    assert "Fix:" in text and "ADPERF_HMAC_KEY_VERSION=1" in text


def test_partitions_of_two_versions_are_never_read_together(tmp_path: Path) -> None:
    lake.write_partition(tmp_path, PAYMENTS, "date", DAY, _payments(), key_version="1")
    lake.write_partition(tmp_path, PAYMENTS, "date", NEXT, _payments(3), key_version="2")
    with pytest.raises(MixedKeyVersions, match=f"date={DAY}: 1, date={NEXT}: 2") as err:
        lake.read_partitions(tmp_path, "payments", "date", [DAY, NEXT])
    assert isinstance(err.value, KeyVersionMismatch)  # one name to catch
    with pytest.raises(KeyVersionMismatch, match=f"payments/date={DAY}"):
        lake.read_partitions(tmp_path, "payments", "date", [NEXT, DAY], key_version="2")
    assert len(lake.read_partitions(tmp_path, "payments", "date", [NEXT], key_version="2")) == 3


def test_derived_frames_without_pseudonyms_read_under_any_version(tmp_path: Path) -> None:
    lake.write_frame(tmp_path, "cohort_roas", "date", DAY, pd.DataFrame({"roas": [1.5]}))
    assert lake.partition_exists(tmp_path, "cohort_roas", "date", DAY, key_version="7")
    got = lake.read_partition(tmp_path, "cohort_roas", "date", DAY, key_version="7")
    assert got["roas"].tolist() == [1.5]


def test_pseudonyms_written_without_a_version_match_none(tmp_path: Path) -> None:
    lake.write_partition(tmp_path, PAYMENTS, "date", DAY, _payments())
    assert _meta(tmp_path, "payments", DAY)[KEY_VERSION_META] is None
    for version in ("1", "demo"):
        assert not lake.partition_exists(tmp_path, "payments", "date", DAY, key_version=version)
    with pytest.raises(KeyVersionMismatch, match="an unrecorded key version"):
        lake.read_partition(tmp_path, "payments", "date", DAY, key_version="1")


def test_partitions_from_before_versions_count_as_version_1(tmp_path: Path) -> None:
    lake.write_partition(tmp_path, PAYMENTS, "date", DAY, _payments(), key_version="1")
    meta_path = lake.partition_path(tmp_path, "payments", "date", DAY) / lake.META_FILE
    meta = json.loads(meta_path.read_text())
    del meta[KEY_VERSION_META]
    meta_path.write_text(json.dumps(meta))  # as written before this change
    assert lake.partition_key_version(tmp_path, "payments", "date", DAY) == (True, "1")
    assert lake.partition_exists(tmp_path, "payments", "date", DAY, key_version="1")
    assert not lake.partition_exists(tmp_path, "payments", "date", DAY, key_version="2")


@pytest.mark.parametrize("version", ["", " 1", "1/2", "a" * 33, "ключ", "-1"])
def test_a_bad_version_label_is_refused(version: str) -> None:
    with pytest.raises(ValueError, match="key version"):
        check_key_version(version)


def test_the_version_may_not_be_the_key_itself() -> None:
    with pytest.raises(ValueError, match="the key itself") as err:
        check_key_version("s3cret-key", b"s3cret-key")
    assert "s3cret" not in str(err.value)
    assert check_key_version("2026-11_b.2", KEY) == "2026-11_b.2"


def test_partition_size_measures_only_what_partition_exists_accepts(tmp_path: Path) -> None:
    lake.write_partition(tmp_path, PAYMENTS, "date", DAY, _payments(3), key_version="1")
    lake.write_frame(tmp_path, "campaign_report", "date", DAY, pd.DataFrame({"spend": [1.0]}))
    nbytes = lake.partition_nbytes(tmp_path, "payments", "date", DAY)
    assert lake.partition_size(tmp_path, "payments", "date", DAY) == (3, nbytes)
    assert lake.partition_size(tmp_path, "payments", "date", DAY, key_version="1") == (3, nbytes)
    # Another key version: not there for the pipeline, so not measured either.
    assert not lake.partition_exists(tmp_path, "payments", "date", DAY, key_version="2")
    assert lake.partition_size(tmp_path, "payments", "date", DAY, key_version="2") is None
    assert lake.partition_size(tmp_path, "payments", "date", NEXT) is None
    size = lake.partition_size(tmp_path, "campaign_report", "date", DAY, key_version="2")
    assert size == (1, lake.partition_nbytes(tmp_path, "campaign_report", "date", DAY))
