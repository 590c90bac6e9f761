"""Pseudonyms: the fast keyed-HMAC path gives exactly HMAC-SHA256(key, id)[:32 hex]."""

from __future__ import annotations

import hashlib
import hmac
import random

import pyarrow as pa
import pytest

from adperf.pseudonym import (
    PSEUDONYM_HEX_CHARS,
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
    import numpy as np

    digests = hmac_prefixes(pa.array(["a", "b", "c"], pa.string()), b"k")
    got = pseudonym_hex(digests, valid=np.array([True, False, True])).to_pylist()
    assert got == [_reference("a", b"k"), None, _reference("c", b"k")]
    assert pseudonym_hex(digests, valid=np.ones(3, bool)).null_count == 0
