"""Pseudonyms: the fast keyed-HMAC path gives exactly HMAC-SHA256(key, id)[:32 hex]."""

from __future__ import annotations

import hashlib
import hmac
import os
import random

import numpy as np
import pyarrow as pa
import pytest

from adperf.pseudonym import (
    PSEUDONYM_HEX_CHARS,
    IdPseudonymizer,
    hmac_prefixes,
    pseudonym_hex,
    pseudonymize,
    pseudonymize_one,
)


def _reference(raw: str, key: bytes) -> str:
    return hmac.new(key, raw.encode("utf-8"), hashlib.sha256).hexdigest()[:PSEUDONYM_HEX_CHARS]


def _random_ids(n: int) -> list[str]:
    rng = random.Random(20261128)
    alphabet = "abcdefXYZ0123456789-_,\"' \n가나다한국어ü€😀"
    return ["".join(rng.choices(alphabet, k=rng.randint(1, 40))) for _ in range(n)]


# Keys shorter than, equal to and longer than SHA-256's 64-byte block (hashed first, RFC 2104).
KEYS = [b"k", b"test-hmac-key", b"x" * 64, bytes(range(100))]


@pytest.mark.parametrize("key", KEYS)
def test_hmac_prefixes_equal_hmac_new(key: bytes) -> None:
    ids = [*_random_ids(300), "", "user-001", "사용자-한글", "\x00nul"]
    got = pseudonym_hex(hmac_prefixes(pa.array(ids, pa.string()), key)).to_pylist()
    assert got == [_reference(i, key) for i in ids]


@pytest.mark.parametrize("key", KEYS)
def test_pseudonymize_matches_reference_and_keeps_nulls(key: bytes) -> None:
    ids = [*_random_ids(200), None, "", "dup", "dup", "é"]
    got = pseudonymize(pa.array(ids, pa.string()), key).to_pylist()
    want = [_reference(i, key) if i else None for i in ids]
    assert got == want
    assert all(pseudonymize_one(i, key) == w for i, w in zip(ids, want, strict=True) if i)


def test_pseudonymize_chunked_and_empty() -> None:
    chunked = pa.chunked_array([["a", "b"], ["a"]], pa.string())
    assert pseudonymize(chunked, b"k").to_pylist() == [_reference(x, b"k") for x in "aba"]
    assert pseudonymize(pa.chunked_array([], pa.string()), b"k").to_pylist() == []
    assert pseudonym_hex(hmac_prefixes(pa.array([], pa.string()), b"k")).to_pylist() == []


def test_empty_key_is_refused() -> None:
    with pytest.raises(ValueError, match="empty HMAC key"):
        pseudonymize(pa.array(["a"]), b"")


def test_pseudonym_hex_leaves_rows_null_where_not_valid() -> None:
    digests = hmac_prefixes(pa.array(["a", "b", "c"], pa.string()), b"k")
    got = pseudonym_hex(digests, valid=np.array([True, False, True])).to_pylist()
    assert got == [_reference("a", b"k"), None, _reference("c", b"k")]
    assert pseudonym_hex(digests, valid=np.ones(3, bool)).null_count == 0


# --------------------------------------------------------------- IdPseudonymizer, both paths


def _require_native() -> None:
    """Skip without the compiled module; in CI (CI=true) it must have been built: fail."""
    import adperf.pseudonym as pseudonym

    if pseudonym._Native is None:
        if os.environ.get("CI") == "true":
            pytest.fail("adperf._pseudonym is not built (pip install -e . compiles it)")
        pytest.skip("adperf._pseudonym is not built here")


@pytest.fixture(params=["compiled", "python"])
def path(request, monkeypatch) -> str:
    """IdPseudonymizer on the compiled path (adperf/_pseudonym.c) and on the Python one."""
    import adperf.pseudonym as pseudonym

    if request.param == "python":
        monkeypatch.setattr(pseudonym, "_Native", None)
    else:
        _require_native()
    return str(request.param)


@pytest.mark.parametrize("key", KEYS)
def test_id_pseudonymizer_equals_hmac_new(path: str, key: bytes) -> None:
    # Short and long ids (past the 36 bytes kept beside a digest), empty, non-ASCII, NUL.
    ids = [*_random_ids(500), "", "user-001", "사용자-한글", "\x00nul", "x" * 37, "y" * 300]
    p = IdPseudonymizer(key)
    assert p.native == (path == "compiled")
    assert p.hex(pa.array(ids, pa.string())).to_pylist() == [_reference(i, key) for i in ids]
    # Met again, in a later call and another layout: the same values.
    again = pa.array(list(reversed(ids)), pa.large_string())
    assert p.hex(again).to_pylist() == [_reference(i, key) for i in reversed(ids)]


def test_id_pseudonymizer_keeps_nulls_and_reads_slices(path: str) -> None:
    ids = pa.array(["a", None, "b", "a", None, "c"], pa.string())
    p = IdPseudonymizer(b"k")
    got = p.hex(ids)
    assert got.to_pylist() == [_reference(x, b"k") if x else None for x in ids.to_pylist()]
    assert got.null_count == 2
    # An array that starts inside its buffers (a slice) reads its own values only.
    assert p.hex(ids.slice(2, 3)).to_pylist() == [
        _reference("b", b"k"),
        _reference("a", b"k"),
        None,
    ]
    assert p.hex(pa.array([None, None], pa.string())).to_pylist() == [None, None]
    assert p.hex(pa.array([], pa.string())).to_pylist() == []


def test_id_pseudonymizer_hashes_each_distinct_id_once_as_its_table_grows() -> None:
    _require_native()
    # 200k distinct ids: the table starts at 1k slots and grows (re-placing every id) 9 times.
    ids = pa.array([f"usr_{i:07d}" for i in range(200_000)], pa.string())
    p = IdPseudonymizer(b"key")
    first = p.hex(ids)
    assert p._native.distinct() == 200_000
    assert p.hex(ids.take(pa.array(range(199_999, -1, -7)))).equals(
        first.take(pa.array(range(199_999, -1, -7)))
    )
    assert p._native.distinct() == 200_000  # nothing new met, nothing hashed again
    sample = [0, 65_535, 131_072, 199_999]
    assert [first[i].as_py() for i in sample] == [
        _reference(f"usr_{i:07d}", b"key") for i in sample
    ]


def test_compiled_module_refuses_what_is_not_an_arrow_string_layout() -> None:
    import adperf.pseudonym as pseudonym

    _require_native()
    native = pseudonym._Native(b"k", 16)
    offsets = np.array([0, 3, 2], dtype=np.int32).tobytes()  # decreasing: not Arrow
    with pytest.raises(ValueError, match="not an Arrow string layout"):
        native.hex(offsets, b"abc", 0, 2, False)
    with pytest.raises(ValueError, match="too short"):
        native.hex(np.array([0, 3], dtype=np.int32).tobytes(), b"abc", 0, 2, False)
    past_end = np.array([0, 9], dtype=np.int32).tobytes()  # beyond the data buffer
    with pytest.raises(ValueError, match="not an Arrow string layout"):
        native.hex(past_end, b"abc", 0, 1, False)
    with pytest.raises(ValueError, match="empty key"):
        pseudonym._Native(b"", 16)
    with pytest.raises(RuntimeError, match="already initialized"):
        native.__init__(b"another key", 16)  # its table holds the first key's digests
    with pytest.raises(RuntimeError, match="__init__"):
        pseudonym._Native.__new__(pseudonym._Native).hex(b"\0" * 8, b"", 0, 1, False)
