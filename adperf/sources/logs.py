"""Server logs (JSON lines, gzip or plain) → pseudonymized events of one report day.

Parser: DuckDB's `read_json` with `ignore_errors`, measured fastest of the candidates on one
generated day (2,000,000 events, 227 MB of JSON, 31 MB gzip, ~0.1% malformed lines; 2 shared
cores; parse + timestamp conversion, before pseudonymization):

    candidate                                  s    rows/s   MB/s of JSON
    duckdb read_json on the .gz (kept)       0.70   2.9 M      325
    duckdb on a Python-decompressed copy     1.55   1.3 M      147
    orjson, one loads per line               3.66   0.55 M      62
    stdlib json, one loads per line          8.87   0.23 M      26
    pyarrow.json, whole file                 0.51   -            -   fails at the first bad line
    pyarrow.json, 20k-line blocks, orjson    3.23   0.6 M       71   every block held a bad line
      per line for a block that fails                                 and fell back (no ts parse)
    polars read_ndjson, same blocks          3.02   0.7 M       75   likewise

Everything after the parse happens in the same pass: one DuckDB statement per file reads the
gzip once, converts `ts`, classifies each line (malformed, out of the day, another event,
kept) and stores only the kept lines' fields (plus a hash of them) in a temporary table; the
counts are one GROUP BY over it, exact duplicates are looked for among equal hashes only, and
the kept rows come out as Arrow in file order. Ids are pseudonymized once per distinct id
(users and peers together) with the key's HMAC states computed once, and the result is the
EVENTS Arrow table, written to Parquet by pyarrow without a pandas round trip.

DuckDB gives one row per non-blank line, all-null when the line is not JSON (bad syntax, bad
UTF-8, a cut line), so malformed lines are counted exactly without a second pass. A gzip with a
truncated (or corrupt) tail makes DuckDB fail the whole file; that file alone is decompressed
here as far as it goes and the readable lines are parsed from a temporary copy.
"""

from __future__ import annotations

import datetime as dt
import glob
import tempfile
import zlib
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from adperf.errors import SchemaError, SourceError
from adperf.pseudonym import PSEUDONYM_BYTES as _PSEUDONYM_BYTES
from adperf.pseudonym import PSEUDONYM_HEX_CHARS
from adperf.pseudonym import hmac_prefixes as _hmac_prefixes  # key states computed once
from adperf.pseudonym import pseudonym_hex as _hex  # noqa: F401 (tests/sources/test_logs.py)
from adperf.schema import EVENTS
from adperf.timeutil import day_bounds_utc

DEFAULT_MAX_BAD_FRACTION = 0.01
#: The events adperf uses (contribution's match graph); other events are counted, not kept.
KEPT_EVENTS: tuple[str, ...] = ("match",)
# Hex characters of the pseudonym that pick a user's shard: stable across runs and machines.
_SHARD_HEX_CHARS = 8
_DECOMPRESS_CHUNK = 1 << 20

# What each line is, in the order the checks apply (the first that holds wins).
BAD, OUT_OF_DAY, OTHER_EVENT, KEPT = 0, 1, 2, 3

# Only module constants below: every value (path, day bounds, events) is a bound parameter.
# `ts` is typed in the column spec: a value that is no timestamp (a word, a number) becomes NULL
# in that field only (ignore_errors), and the line counts as malformed.
# One statement per file, streamed to Arrow (parallel, in file order): a temporary DuckDB table
# filled with INSERT was measured to run on one thread where this runs on all. Only the kept
# lines' fields are returned (other lines as status + nulls), with a hash of those fields.
_READ = (
    "SELECT status, "
    "CASE WHEN status = 3 THEN ts END AS ts, CASE WHEN status = 3 THEN event END AS event, "
    "CASE WHEN status = 3 THEN user_id END AS user_id, "
    "CASE WHEN status = 3 THEN peer_id END AS peer_id, "
    "CASE WHEN status = 3 THEN premium END AS premium, "
    "CASE WHEN status = 3 THEN hash(ts, event, user_id, peer_id, premium) END AS h "
    "FROM (SELECT CASE "
    "WHEN ts IS NULL OR event IS NULL OR event = '' OR user_id IS NULL OR user_id = '' THEN 0 "
    "WHEN ts < $start OR ts >= $end THEN 1 "
    "WHEN NOT ($all_events OR list_contains($events, event)) THEN 2 "
    "ELSE 3 END::UTINYINT AS status, ts, event, user_id, nullif(peer_id, '') AS peer_id, "
    "props.premium AS premium "
    "FROM read_json($path, format = 'newline_delimited', ignore_errors = true, columns = "
    "{ts: 'TIMESTAMPTZ', event: 'VARCHAR', user_id: 'VARCHAR', peer_id: 'VARCHAR', "
    "props: 'STRUCT(premium BOOLEAN)'}))"
)
_COUNTS = "SELECT status, count(*) FROM lines GROUP BY status"
# Kept lines whose hash repeats: the only candidates for exact duplicates (usually none).
_REPEATS = (
    "SELECT rowid, ts, event, user_id, peer_id, premium FROM lines WHERE status = 3 AND h IN "
    "(SELECT h FROM lines WHERE status = 3 GROUP BY h HAVING count(*) > 1)"
)
# Without ORDER BY, DuckDB returns a filtered scan in insertion (= file) order
# (preserve_insertion_order, on by default).
# Each kept line's ids as DuckDB's 64-bit hash, and the distinct ids with theirs: the rows
# find their id's pseudonym through the hash (pandas' integer hash table), so the id strings
# are neither copied per row nor hashed again in Arrow. DISTINCT is exact on the strings, so
# two ids sharing one hash show up as a repeated hash; then the strings decide (`_encode_ids`).
_KEPT = (
    "SELECT ts, event, premium, hash(user_id) AS user_h, hash(peer_id) AS peer_h, "
    "peer_id IS NOT NULL AS has_peer FROM lines WHERE status = 3"
)
_KEPT_ROWIDS = (
    "SELECT rowid, ts, event, premium, hash(user_id) AS user_h, hash(peer_id) AS peer_h, "
    "peer_id IS NOT NULL AS has_peer FROM lines WHERE status = 3"
)
_KEPT_IDS = (
    "SELECT ts, event, premium, hash(user_id) AS user_h, hash(peer_id) AS peer_h, "
    "peer_id IS NOT NULL AS has_peer, user_id, peer_id FROM lines WHERE status = 3"
)
_KEPT_IDS_ROWIDS = (
    "SELECT rowid, ts, event, premium, hash(user_id) AS user_h, hash(peer_id) AS peer_h, "
    "peer_id IS NOT NULL AS has_peer, user_id, peer_id FROM lines WHERE status = 3"
)
_DISTINCT_IDS = (
    "SELECT id, hash(id) AS h FROM (SELECT user_id AS id FROM lines WHERE status = 3 "
    "UNION SELECT peer_id FROM lines WHERE status = 3 AND peer_id IS NOT NULL)"
)
_DEDUP_KEYS = ["ts", "event", "user_id", "peer_id", "premium"]


def log_files(path_pattern: str, day: dt.date) -> list[Path]:
    """The files of one day: `[logs] path` is a glob in which `{date}` is the report day."""
    pattern = path_pattern.replace("{date}", day.isoformat())
    return [Path(p) for p in sorted(glob.glob(pattern))]


def shard_of(pids: pa.Array, shards: int) -> np.ndarray:
    """Shard number (0..shards-1) of each pseudonym: its first 8 hex characters mod `shards`."""
    encoded = pc.dictionary_encode(pids)
    uniques = encoded.dictionary.to_pylist()
    per_unique = np.array([int(u[:_SHARD_HEX_CHARS], 16) % shards for u in uniques], np.int64)
    return np.asarray(per_unique[encoded.indices.to_numpy(zero_copy_only=False)], dtype=np.int64)


def fetch_events(
    path_pattern: str,
    *,
    day: dt.date,
    timezone: str,
    hmac_key: bytes,
    max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION,
    events: Collection[str] | None = KEPT_EVENTS,
    shard: int = 0,
    shards: int = 1,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """EVENTS rows of one report day as a DataFrame, and counts (see `fetch_events_table`)."""
    table, counts = fetch_events_table(
        path_pattern,
        day=day,
        timezone=timezone,
        hmac_key=hmac_key,
        max_bad_fraction=max_bad_fraction,
        events=events,
        shard=shard,
        shards=shards,
    )
    df = table.to_pandas()
    df["premium"] = df["premium"].astype("boolean")
    return df, counts


def fetch_events_table(
    path_pattern: str,
    *,
    day: dt.date,
    timezone: str,
    hmac_key: bytes,
    max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION,
    events: Collection[str] | None = KEPT_EVENTS,
    shard: int = 0,
    shards: int = 1,
) -> tuple[pa.Table, dict[str, int]]:
    """EVENTS rows of one report day (of `events`; all when None) in file order, and counts.

    Malformed lines (bad JSON or UTF-8, missing `ts`/`event`/`user_id`, a truncated gzip tail)
    are counted, not fatal, unless their share passes `max_bad_fraction`. An exact repeat of a
    kept line is kept once and counted. With `shards` > 1 only users whose pseudonym falls in
    `shard` are kept (see `shard_of`); the counts stay whole-day.
    Counts: lines = kept + bad + out_of_day + other_events + duplicates + other_shards.
    """
    if shards < 1 or not 0 <= shard < shards:
        raise ValueError(f"logs: shard {shard} of {shards} is not in 0..{shards - 1}")
    if not hmac_key:
        raise ValueError("logs: empty HMAC key")
    files = log_files(path_pattern, day)
    if not files:
        raise SourceError(
            "logs",
            day.isoformat(),
            f"no file matches {path_pattern!r}",
            "check [logs] path, or wait until the day's logs are rotated",
        )
    counts = {"lines": 0, "bad": 0, "out_of_day": 0, "other_events": 0, "other_shards": 0}
    counts["duplicates"] = 0
    counts |= {"files": len(files), "truncated_files": 0}
    start, end = day_bounds_utc(day, day, timezone)
    params: dict[str, Any] = {
        "start": start.replace(tzinfo=dt.UTC),
        "end": end.replace(tzinfo=dt.UTC),
        "all_events": events is None,
        # A list DuckDB can type even when empty; with all_events it is never looked at.
        "events": sorted(events) if events else [""],
    }
    con = duckdb.connect()
    try:
        # Timestamps without an offset are read as UTC, whatever the machine's zone.
        con.execute("SET TimeZone = 'UTC'")
        lines = pa.concat_tables([_read_file(con, path, params, counts) for path in files])
        # `lines` is scanned in place by the queries below; rowid numbers the lines in order.
        lines = lines.append_column("rowid", pa.array(np.arange(lines.num_rows, dtype=np.int64)))
        con.register("lines", lines)
        per_status = dict(con.execute(_COUNTS).fetchall())
        counts["lines"] += sum(per_status.values())
        counts["bad"] += per_status.get(BAD, 0)
        _check_bad_share(counts, day, max_bad_fraction)
        counts["out_of_day"] = per_status.get(OUT_OF_DAY, 0)
        counts["other_events"] = per_status.get(OTHER_EVENT, 0)
        # The distinct ids first: their HMACs (Python, holding the GIL) are computed while
        # DuckDB (which releases it) finds the repeats and returns the kept lines.
        ids = con.sql(_DISTINCT_IDS).to_arrow_table()
        uniques = ids["id"].combine_chunks()
        with ThreadPoolExecutor(max_workers=1) as pool:
            kept = pool.submit(_kept_lines, con, counts)
            digests = _hmac_prefixes(uniques, hmac_key)
            drop, table = kept.result()
        if table.num_rows == 0:
            return EVENTS.schema.empty_table(), counts
        index = pd.Index(ids["h"].to_numpy())
        if index.is_unique:
            user_idx, peer_idx = _indices(index, table)
        else:  # two ids share a 64-bit hash: group the id strings themselves
            table = _kept(con, drop, with_ids=True)
            uniques, user_idx, peer_idx = _encode_ids(table)
            digests = _hmac_prefixes(uniques, hmac_key)
    finally:
        con.close()

    if shards > 1:
        per_unique = _first_u32(digests) % shards
        mine = per_unique[user_idx] == shard
        counts["other_shards"] = table.num_rows - int(mine.sum())
        table, user_idx, peer_idx = table.filter(pa.array(mine)), user_idx[mine], peer_idx[mine]
    n = table.num_rows
    out = pa.Table.from_arrays(
        [
            _repeat_str(day.isoformat(), n),
            pc.cast(table["ts"], EVENTS.schema.field("ts").type),
            table["event"],
            _pids(digests, user_idx),
            _pids(digests, peer_idx),
            table["premium"],
        ],
        schema=EVENTS.schema,
    )
    _check_not_null(out)
    return out, counts


def _read_file(
    con: duckdb.DuckDBPyConnection, path: Path, params: dict[str, Any], counts: dict[str, int]
) -> pa.Table:
    """One file's lines, classified (one statement: the gzip is read once)."""
    try:
        table: pa.Table = con.sql(_READ, params={**params, "path": str(path)}).to_arrow_table()
        return table
    except duckdb.IOException:
        if path.suffix != ".gz":
            raise
    # A gzip that ends early (a copy cut short, a writer killed mid-rotation): keep the lines
    # before the damage; the cut line and whatever followed count as one bad line.
    counts["truncated_files"] += 1
    counts["lines"] += 1
    counts["bad"] += 1
    with tempfile.TemporaryDirectory(prefix="adperf-logs-") as tmp:
        plain = Path(tmp) / "readable.jsonl"
        _decompress_readable(path, plain)
        table = con.sql(_READ, params={**params, "path": str(plain)}).to_arrow_table()
        return table


def _repeated_rows(con: duckdb.DuckDBPyConnection, counts: dict[str, int]) -> np.ndarray | None:
    """Row ids of the exact repeats of a kept line (all but its first), counted; None if none."""
    # Log shippers deliver a line twice after a retry; a repeated premium match would weigh
    # double in the contribution graph. Two real events never share ts to the microsecond.
    repeats: pa.Table = con.sql(_REPEATS).to_arrow_table()
    if repeats.num_rows == 0:
        return None
    # Equal hashes are candidates; equal fields decide (nulls group together).
    firsts = repeats.group_by(_DEDUP_KEYS, use_threads=False).aggregate([("rowid", "min")])
    drop = np.setdiff1d(repeats["rowid"].to_numpy(), firsts["rowid_min"].to_numpy())
    counts["duplicates"] = len(drop)
    return drop if len(drop) else None


def _kept(con: duckdb.DuckDBPyConnection, drop: np.ndarray | None, *, with_ids: bool) -> pa.Table:
    """The kept lines in file order without the repeats in `drop` (ids as strings if asked)."""
    if drop is None:
        kept: pa.Table = con.sql(_KEPT_IDS if with_ids else _KEPT).to_arrow_table()
        return kept
    table: pa.Table = con.sql(_KEPT_IDS_ROWIDS if with_ids else _KEPT_ROWIDS).to_arrow_table()
    keep = ~np.isin(table["rowid"].to_numpy(), drop)
    return table.filter(pa.array(keep)).drop_columns(["rowid"])


def _kept_lines(
    con: duckdb.DuckDBPyConnection, counts: dict[str, int]
) -> tuple[np.ndarray | None, pa.Table]:
    """The repeats to drop and the kept lines (ids as hashes), for a worker thread."""
    drop = _repeated_rows(con, counts)
    return drop, _kept(con, drop, with_ids=False)


def _indices(index: pd.Index, table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """Each row's user and peer as positions in `index` (the distinct ids' hashes); -1: no peer."""
    users = index.get_indexer(table["user_h"].to_numpy())
    peers = index.get_indexer(table["peer_h"].to_numpy())
    has_peer = table["has_peer"].to_numpy()
    if (users < 0).any() or (peers[has_peer] < 0).any():
        raise RuntimeError("logs: an id of a kept line is missing from the distinct ids")
    peers[~has_peer] = -1
    return users, peers


def _pids(digests: bytes, idx: np.ndarray) -> pa.Array:
    """The pseudonym of each row's id (`idx` into the digests; -1 is null), as a string array.

    Gathers the 16-byte digests per row and hex-encodes them at once: cheaper than taking
    32-character strings row by row.
    """
    table = np.frombuffer(digests, dtype=np.uint8).reshape(-1, _PSEUDONYM_BYTES)
    valid = idx >= 0
    rows = table[np.where(valid, idx, 0)] if len(table) else np.zeros((len(idx), 16), np.uint8)
    data = rows.tobytes().hex().encode("ascii")
    n = len(idx)
    offsets = np.arange(0, (n + 1) * PSEUDONYM_HEX_CHARS, PSEUDONYM_HEX_CHARS, dtype=np.int64)
    nulls = int(n - valid.sum())
    bitmap = pa.py_buffer(np.packbits(valid, bitorder="little")) if nulls else None
    out = pa.LargeStringArray.from_buffers(
        n, pa.py_buffer(offsets), pa.py_buffer(data), bitmap, nulls
    )
    return out.cast(pa.string())


def _encode_ids(table: pa.Table) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """Distinct ids of users and peers (one dictionary) and each column's indices into it
    (-1: no peer).

    Groups the ids by their DuckDB hash (`user_h`, `peer_h`) with a hash table on integers,
    then checks that every id equals its group's first id; a 64-bit collision (two ids, one
    hash) fails that check and the exact string dictionary is used instead.
    """
    users = table["user_id"].combine_chunks()
    peers = table["peer_id"].combine_chunks()
    n = len(users)
    has_peer = peers.is_valid().to_numpy(zero_copy_only=False)
    ids = pa.concat_arrays([users, peers.filter(pa.array(has_peer))])
    keys = np.concatenate(
        [
            table["user_h"].to_numpy(),
            table["peer_h"].to_numpy()[has_peer],
        ]
    )
    codes, uniques = pd.factorize(keys)
    first = np.empty(len(uniques), dtype=np.int64)
    first[codes[::-1]] = np.arange(len(codes), dtype=np.int64)[::-1]
    dictionary = ids.take(pa.array(first))
    if not pc.all(pc.equal(dictionary.take(pa.array(codes)), ids)).as_py():
        encoded = pc.dictionary_encode(ids)
        dictionary, codes = encoded.dictionary, encoded.indices.to_numpy()
    peer_codes = np.full(n, -1, dtype=np.int64)
    peer_codes[has_peer] = codes[n:]
    return dictionary, codes[:n].astype(np.int64), peer_codes


def _first_u32(digests: bytes) -> npt.NDArray[np.int64]:
    """The first 4 bytes of each 16-byte digest as a big-endian number: its first 8 hex chars."""
    rows = np.frombuffer(digests, dtype=np.uint8).reshape(-1, _PSEUDONYM_BYTES)[:, :4]
    return np.ascontiguousarray(rows).view(">u4").ravel().astype(np.int64)


def _repeat_str(value: str, n: int) -> pa.Array:
    """A string array of `value` repeated n times, built without n Python objects."""
    return pa.array([value], pa.string()).take(pa.array(np.zeros(n, dtype=np.int32)))


def _check_not_null(table: pa.Table) -> None:
    """The EVENTS schema's non-nullable columns hold no null (a bug here, never bad input)."""
    for field in EVENTS.schema:
        if not field.nullable and table[field.name].null_count:
            raise SchemaError(f"dataset events: column {field.name} has nulls")


def _check_bad_share(counts: dict[str, int], day: dt.date, max_bad_fraction: float) -> None:
    lines, bad = counts["lines"], counts["bad"]
    if lines and bad / lines > max_bad_fraction:
        raise SourceError(
            "logs",
            day.isoformat(),
            f"{bad} of {lines} lines are malformed "
            f"({bad / lines:.2%} > [logs] max_bad_fraction {max_bad_fraction})",
            "inspect the day's log files; raise max_bad_fraction only if the damage is understood",
        )


def _decompress_readable(path: Path, out: Path) -> None:
    """Decompress what can be read of a damaged gzip into `out`, up to its last whole line."""
    inflater = zlib.decompressobj(wbits=31)
    pending = b""
    with open(path, "rb") as src, open(out, "wb") as dst:
        while chunk := src.read(_DECOMPRESS_CHUNK):
            while chunk:
                try:
                    pending += inflater.decompress(chunk)
                except zlib.error:
                    return
                cut = pending.rfind(b"\n") + 1
                dst.write(pending[:cut])
                pending = pending[cut:]
                chunk = b""
                if inflater.eof:
                    # A multi-member gzip (appended rotations) goes on after a member's end.
                    chunk = inflater.unused_data
                    inflater = zlib.decompressobj(wbits=31)
