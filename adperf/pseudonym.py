"""Keyed HMAC-SHA256 pseudonyms for user ids: one function for MMP, payments and logs.

Pseudonyms made under two keys never match, and a join across them fails silently (every
payer becomes "unattributed"). So each key has a version (a label, never the key), the lake
records it with every partition holding pseudonyms, and readers refuse other versions.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
from collections.abc import Iterable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from adperf.errors import AdperfError

log = logging.getLogger(__name__)


def _native_pseudonymizer() -> Any:
    """The compiled Pseudonymizer class, or None (not built, or ADPERF_PSEUDONYM_NATIVE=0)."""
    if os.environ.get("ADPERF_PSEUDONYM_NATIVE", "1") == "0":
        return None
    try:
        from adperf._pseudonym import Pseudonymizer
    except ImportError:  # pragma: no cover (depends on the install)
        log.warning(
            "adperf._pseudonym is not built (a C compiler and OpenSSL headers are needed at "
            "install: Debian libssl-dev); pseudonyms come from the slower Python path"
        )
        return None
    return Pseudonymizer


# The compiled path (adperf/_pseudonym.c, built by `pip install`): each HMAC ~10x cheaper and
# each distinct id hashed once per IdPseudonymizer. Without it (no C compiler or OpenSSL
# headers at install time) the same values come from Python, several times slower.
# ADPERF_PSEUDONYM_NATIVE=0 forces the Python path (tests compare the two).
_Native: Any = _native_pseudonymizer()

# 128 bits of the HMAC, hex: collision-free at any realistic user count, half the bytes.
PSEUDONYM_HEX_CHARS = 32

#: Columns holding pseudonyms end with this (schema.py: user_pid, device_pid, peer_pid).
PSEUDONYM_SUFFIX = "_pid"
#: The `_meta.json` key of the key version a partition was pseudonymized under.
KEY_VERSION_META = "pseudonym_key_version"
#: The version of partitions written before versions were recorded (the first key).
LEGACY_KEY_VERSION = "1"
_KEY_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}")


class KeyVersionMismatch(AdperfError):
    """A partition was pseudonymized under another key version than the one expected."""

    def __init__(self, partition: str, found: str | None, expected: str) -> None:
        self.partition, self.found, self.expected = partition, found, expected
        was = f"key version {found}" if found else "an unrecorded key version"
        restore = (
            f" or restore ADPERF_HMAC_KEY_VERSION={found} together with the key it names"
            if found
            else ""
        )
        super().__init__(
            f"lake: {partition} was pseudonymized with {was}, this run uses key version "
            f"{expected}; its user pseudonyms cannot be joined with this run's. Fix: re-extract "
            f"those days under the current key (run the report again: luigi takes a partition "
            f"of another key version as not complete and extracts it again){restore}"
        )


class MixedKeyVersions(KeyVersionMismatch):
    """Partitions asked to be read together were pseudonymized under different key versions."""

    def __init__(self, dataset: str, versions: dict[str, str | None]) -> None:
        self.partition, self.found, self.expected, self.versions = dataset, None, "", versions
        shown = ", ".join(f"{k}: {v or 'unrecorded'}" for k, v in sorted(versions.items()))
        AdperfError.__init__(
            self,
            f"lake: the {dataset} partitions asked for were pseudonymized under different key "
            f"versions ({shown}); their user pseudonyms cannot be joined. Fix: re-extract the "
            "days of the older version under the current key (run the report again)",
        )


def check_key_version(version: str, key: bytes | None = None) -> str:
    """`version` if it is a valid key version label (1-32 of A-Z a-z 0-9 . _ -), else ValueError.

    It is written beside the data: it must never be the key itself (checked when `key` given).
    """
    if not _KEY_VERSION.fullmatch(version):
        raise ValueError(
            "the HMAC key version must be 1-32 letters, digits, '.', '_' or '-' (e.g. 1, 2, "
            "2026-11)"
        )
    if key is not None and version.encode("utf-8") == key:
        raise ValueError("the HMAC key version is the key itself: it is stored beside the data")
    return version


def holds_pseudonyms(columns: Iterable[str]) -> bool:
    """True when a table with these column names carries user pseudonyms."""
    return any(str(c).endswith(PSEUDONYM_SUFFIX) for c in columns)


def pseudonymize_one(raw_id: str, key: bytes) -> str:
    """Pseudonym of one raw id (the same as `pseudonymize` gives for it)."""
    digest = hmac.new(key, raw_id.encode("utf-8"), hashlib.sha256).hexdigest()
    return digest[:PSEUDONYM_HEX_CHARS]


def pseudonymize(ids: pa.Array | pa.ChunkedArray, key: bytes) -> pa.Array:
    """Pseudonyms of an id column; nulls and empty strings stay null.

    Hashes each distinct id once (dictionary-encode, hash the uniques, take): ids repeat a lot
    in logs and payments, and HMAC per row costs several times more.
    """
    if not key:
        raise ValueError("pseudonymize: empty HMAC key")
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks() if ids.num_chunks else pa.array([], type=pa.string())
    ids = pc.cast(ids, pa.string())
    ids = pc.if_else(pc.equal(ids, ""), pa.scalar(None, pa.string()), ids)
    return IdPseudonymizer(key).hex(ids)


class IdPseudonymizer:
    """Pseudonyms of id arrays under one key. Nulls stay null; an empty string is an id like
    any other here.

    Compiled (adperf/_pseudonym.c) where built: one hash table of the distinct ids met in any
    call so far, so each is HMAC'd once per object; OpenSSL's SHA-256; the GIL released during
    a call. Otherwise each call dictionary-encodes its array and HMACs its uniques in Python.
    """

    def __init__(self, key: bytes) -> None:
        if not key:
            raise ValueError("pseudonymize: empty HMAC key")
        self._key = key
        self._native = _Native(key, PSEUDONYM_BYTES) if _Native is not None else None

    @property
    def native(self) -> bool:
        return self._native is not None

    def hex(self, ids: pa.Array) -> pa.Array:
        """The pseudonym (32 lowercase hex characters) of each id of a string array."""
        large = pa.types.is_large_string(ids.type)
        if not (large or pa.types.is_string(ids.type)):
            raise TypeError(f"pseudonyms of {ids.type} ids: cast them to strings first")
        valid = None if ids.null_count == 0 else ids.is_valid().to_numpy(zero_copy_only=False)
        if self._native is None:
            encoded = pc.dictionary_encode(pc.fill_null(ids, ""))
            digests = np.frombuffer(hmac_prefixes(encoded.dictionary, self._key), _DIGEST)
            rows = digests[encoded.indices.to_numpy(zero_copy_only=False)].tobytes()
            return pseudonym_hex(rows, valid)
        _, offsets, data = ids.buffers()
        if data is None:  # an array of nulls only, or of empty strings only
            data = pa.py_buffer(b"")
        return _hex_array(self._native.hex(offsets, data, ids.offset, len(ids), large), valid)


# RFC 2104 pads for a 64-byte block hash (SHA-256), as bytes.translate tables.
_BLOCK = 64
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))
PSEUDONYM_BYTES = PSEUDONYM_HEX_CHARS // 2


def hmac_prefixes(ids: pa.Array, key: bytes) -> bytes:
    """HMAC-SHA256 of each id (UTF-8), first PSEUDONYM_BYTES bytes each, concatenated.

    The same values as `pseudonymize_one`, 4-5x faster: the key's inner and outer SHA-256
    states are computed once (RFC 2104) and copied per id, instead of `hmac.new` padding and
    hashing the key again for every id. A null id gets the digest of the empty string.
    """
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_BLOCK, b"\0")
    inner, outer = hashlib.sha256(key.translate(_IPAD)), hashlib.sha256(key.translate(_OPAD))
    new_inner, new_outer = inner.copy, outer.copy
    out: list[bytes] = []
    append = out.append
    for raw in pc.cast(ids, pa.binary()).to_pylist():
        h = new_inner()
        h.update(raw or b"")
        o = new_outer()
        o.update(h.digest())
        append(o.digest()[:PSEUDONYM_BYTES])
    return b"".join(out)


def pseudonym_hex(digests: bytes, valid: np.ndarray | None = None) -> pa.Array:
    """The pseudonyms (lowercase hex) of concatenated `hmac_prefixes` digests, as strings;
    null where the boolean mask `valid` is False (those digests are placeholders)."""
    return _hex_array(digests.hex().encode("ascii"), valid)


# A pseudonym's bytes as one numpy item: rows gather their digests in one step.
_DIGEST = np.dtype((np.void, PSEUDONYM_BYTES))


def _hex_array(hex_chars: bytes, valid: np.ndarray | None) -> pa.Array:
    """A string array of the consecutive PSEUDONYM_HEX_CHARS-character pseudonyms in
    `hex_chars`; null where `valid` is False."""
    n = len(hex_chars) // PSEUDONYM_HEX_CHARS
    offsets = pa.py_buffer(
        np.arange(0, (n + 1) * PSEUDONYM_HEX_CHARS, PSEUDONYM_HEX_CHARS, dtype=np.int32)
    )
    data = pa.py_buffer(hex_chars)
    if valid is None or valid.all():
        return pa.StringArray.from_buffers(n, offsets, data)
    bitmap = pa.py_buffer(np.packbits(valid, bitorder="little"))
    return pa.StringArray.from_buffers(n, offsets, data, bitmap, int(n - valid.sum()))
