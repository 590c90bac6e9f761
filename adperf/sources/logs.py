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

Everything else happens while the file is read: one DuckDB statement per file reads the gzip
once, converts `ts`, classifies each line (malformed, out of the day, another event, kept) and
streams Arrow batches in file order, with only the kept lines' fields, a hash of those fields
and a 64-bit hash of each id. DuckDB inflates the gzip on one thread; on the other core this
thread counts the batches, keeps the kept lines and gives them their pseudonyms chunk by chunk:
each distinct id is HMAC'd once (users and peers together, the key's HMAC states computed
once), found again by its hash, and rows take their hex pseudonyms from a table of digests.
After the read, DuckDB checks that no two ids shared a hash (else the exact strings decide)
while exact repeats of a line are dropped, and the result is the EVENTS Arrow table, written
to Parquet by pyarrow without a pandas round trip.

DuckDB gives one row per non-blank line, all-null when the line is not JSON (bad syntax, bad
UTF-8, a cut line), so malformed lines are counted exactly without a second pass. A gzip with a
truncated (or corrupt) tail makes DuckDB fail the whole file; that file alone is decompressed
here as far as it goes and the readable lines are parsed from a temporary copy.
"""

from __future__ import annotations

import datetime as dt
import glob
import queue
import tempfile
import threading
import zlib
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from adperf.errors import SchemaError, SourceError
from adperf.pseudonym import PSEUDONYM_BYTES as _PSEUDONYM_BYTES
from adperf.pseudonym import hmac_prefixes, pseudonym_hex
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
# One statement per file, streamed to Arrow batches in file order while Python works on the
# batches already read (the gzip is inflated on one core; the other is free during the read).
# Only the kept lines' fields are returned (other lines as status + nulls), with a hash of those
# fields (exact repeats are looked for among equal hashes only) and a 64-bit hash of each id.
_READ = (
    "SELECT status, "
    "CASE WHEN status = 3 THEN ts END AS ts, CASE WHEN status = 3 THEN event END AS event, "
    "CASE WHEN status = 3 THEN user_id END AS user_id, "
    "CASE WHEN status = 3 THEN peer_id END AS peer_id, "
    "CASE WHEN status = 3 THEN premium END AS premium, "
    "CASE WHEN status = 3 THEN hash(ts, event, user_id, peer_id, premium) END AS h, "
    "CASE WHEN status = 3 THEN {user_h} END AS user_h, "
    "CASE WHEN status = 3 THEN {peer_h} END AS peer_h "
    "FROM (SELECT CASE "
    "WHEN ts IS NULL OR event IS NULL OR event = '' OR user_id IS NULL OR user_id = '' THEN 0 "
    "WHEN ts < $start OR ts >= $end THEN 1 "
    "WHEN NOT ($all_events OR list_contains($events, event)) THEN 2 "
    "ELSE 3 END::UTINYINT AS status, ts, event, user_id, nullif(peer_id, '') AS peer_id, "
    "props.premium AS premium "
    "FROM read_json($path, format = 'newline_delimited', ignore_errors = true, columns = "
    "{{ts: 'TIMESTAMPTZ', event: 'VARCHAR', user_id: 'VARCHAR', peer_id: 'VARCHAR', "
    "props: 'STRUCT(premium BOOLEAN)'}}))"
)
# DuckDB's 64-bit string hash names an id until the pseudonyms are attached; two ids sharing
# one are detected (`_Ids`) and the exact strings decide then. A test swaps it for a constant.
_ID_HASH = "hash({})"
_DEDUP_KEYS = ["ts", "event", "user_id", "peer_id", "premium"]
_KEPT_COLUMNS = [*_DEDUP_KEYS, "h", "user_h", "peer_h"]
# Kept lines gathered before their ids are looked up and hashed: per-chunk costs stay small.
_CHUNK_ROWS = 1 << 18
_BATCH_ROWS = 1 << 17
# Batches read ahead of the Python side (bounded: the lines not kept are dropped as they come).
_READ_AHEAD = 16


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
    ids = _Ids(hmac_key)
    chunks: list[pa.Table] = []
    con = duckdb.connect()
    try:
        # Timestamps without an offset are read as UTC, whatever the machine's zone.
        con.execute("SET TimeZone = 'UTC'")
        reader = _DayReader(con, params, counts, ids)
        for path in files:
            chunks += reader.read_file(path)
        _check_bad_share(counts, day, max_bad_fraction)
        if not chunks:
            return EVENTS.schema.empty_table(), counts
        kept = pa.concat_tables(chunks)
        # Each 64-bit hash must stand for one id string: DuckDB checks (on its threads) while
        # the repeats are dropped here.
        con.register("kept", kept)
        with ThreadPoolExecutor(max_workers=1) as pool:
            shared = pool.submit(lambda: con.execute(_SHARED_HASHES).fetchall()[0][0])
            kept = _drop_repeats(kept, counts)
            collisions = shared.result()
        con.unregister("kept")
    finally:
        con.close()
    if collisions:  # two ids share a hash (rare): the exact strings decide, a slower path
        kept = _exact_pseudonyms(kept, hmac_key)
    if shards > 1:
        mine = kept["user_key"].to_numpy() % shards == shard
        counts["other_shards"] = kept.num_rows - int(mine.sum())
        kept = kept.filter(pa.array(mine))
    n = kept.num_rows
    out = pa.Table.from_arrays(
        [
            _repeat_str(day.isoformat(), n),
            pc.cast(kept["ts"], EVENTS.schema.field("ts").type),
            kept["event"],
            kept["user_pid"],
            kept["peer_pid"],
            kept["premium"],
        ],
        schema=EVENTS.schema,
    )
    _check_not_null(out)
    return out, counts


class _DayReader:
    """Reads the day's files one by one into kept-line chunks, adding to `counts`."""

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        params: dict[str, Any],
        counts: dict[str, int],
        ids: _Ids,
    ) -> None:
        self.con, self.params, self.counts, self.ids = con, params, counts, ids

    def read_file(self, path: Path) -> list[pa.Table]:
        """One file's kept lines in chunks (the gzip is read once); its line counts added."""
        try:
            return self._stream(str(path))
        except duckdb.IOException:
            if path.suffix != ".gz":
                raise
        # A gzip that ends early (a copy cut short, a writer killed mid-rotation): keep the
        # lines before the damage; the cut line and whatever followed count as one bad line.
        # What the failed read saw is dropped (counts included); ids it hashed stay, unused or
        # reused.
        self.counts["truncated_files"] += 1
        self.counts["lines"] += 1
        self.counts["bad"] += 1
        with tempfile.TemporaryDirectory(prefix="adperf-logs-") as tmp:
            plain = Path(tmp) / "readable.jsonl"
            _decompress_readable(path, plain)
            return self._stream(str(plain))

    def _stream(self, path: str) -> list[pa.Table]:
        """Read one file with `_READ`, batches handed over by a reader thread as DuckDB goes.

        DuckDB (which releases the GIL) inflates and parses while this thread counts the
        batches, keeps the kept lines and hashes their new ids. The counts of the file are
        added only when the whole file was read.
        """
        sql = _READ.format(user_h=_ID_HASH.format("user_id"), peer_h=_ID_HASH.format("peer_id"))
        handoff: queue.Queue[pa.RecordBatch | BaseException | None] = queue.Queue(_READ_AHEAD)
        stop = threading.Event()
        params = {**self.params, "path": path}

        def pump() -> None:
            try:
                reader = self.con.sql(sql, params=params).to_arrow_reader(_BATCH_ROWS)
                for batch in reader:
                    if stop.is_set():
                        return
                    handoff.put(batch)
                handoff.put(None)
            except BaseException as exc:  # noqa: BLE001 (handed to the caller, raised there)
                handoff.put(exc)

        per_status = np.zeros(4, dtype=np.int64)
        chunks: list[pa.Table] = []
        pending: list[pa.Table] = []
        pending_rows = 0
        thread = threading.Thread(target=pump, name="adperf-logs-read", daemon=True)
        thread.start()
        try:
            while (item := handoff.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                status = item.column(0).to_numpy(zero_copy_only=False)
                per_status += np.bincount(status, minlength=4)[:4]
                if not (status == KEPT).any():
                    continue
                kept = pa.Table.from_batches([item.filter(pa.array(status == KEPT))])
                pending.append(kept.select(_KEPT_COLUMNS))
                pending_rows += kept.num_rows
                if pending_rows >= _CHUNK_ROWS:
                    chunks.append(self.ids.add(pa.concat_tables(pending).combine_chunks()))
                    pending, pending_rows = [], 0
            if pending:
                chunks.append(self.ids.add(pa.concat_tables(pending).combine_chunks()))
        finally:
            stop.set()
            while thread.is_alive():  # unblock a reader waiting on a full queue; let it end
                try:
                    handoff.get_nowait()
                except queue.Empty:
                    thread.join(0.05)
        self.counts["lines"] += int(per_status.sum())
        self.counts["bad"] += int(per_status[BAD])
        self.counts["out_of_day"] += int(per_status[OUT_OF_DAY])
        self.counts["other_events"] += int(per_status[OTHER_EVENT])
        return chunks


class _Ids:
    """The distinct ids met so far, found by their 64-bit hash, each HMAC'd once.

    `add` looks a chunk's id hashes up (a hash table per chunk, then a binary search of the
    chunk's distinct hashes among those met before), HMACs the ids met for the first time and
    gives each row its pseudonyms. That a hash stands for one string only is checked once at
    the end (`_SHARED_HASHES`).
    """

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._sorted = np.empty(0, dtype=np.uint64)  # hashes met, ascending
        self._where = np.empty(0, dtype=np.int64)  # each sorted hash's row in `_digests`
        self._digests = np.empty(0, dtype=_DIGEST)  # in the order the ids were met

    def add(self, chunk: pa.Table) -> pa.Table:
        """`chunk` (kept lines) with `user_pid`, `peer_pid` and `user_key` (shard) added."""
        n = chunk.num_rows
        has_peer = chunk["peer_id"].is_valid().to_numpy(zero_copy_only=False)
        # A missing peer's hash is not looked at; filled, so the column stays uint64 (a null
        # would turn it into float64 here, and float64 merges distinct hashes silently).
        peer_h = pc.fill_null(chunk["peer_h"], 0).to_numpy()
        hashes = np.concatenate([chunk["user_h"].to_numpy(), peer_h[has_peer]])
        if hashes.dtype != np.uint64:
            raise RuntimeError(f"logs: id hashes came as {hashes.dtype}, not uint64")
        codes, uniq = pd.factorize(hashes, sort=True)  # sorted: a cache-friendly search
        at = np.searchsorted(self._sorted, uniq)
        known = at < len(self._sorted)
        known[known] = self._sorted[at[known]] == uniq[known]
        where = np.empty(len(uniq), dtype=np.int64)
        where[known] = self._where[at[known]]
        new = np.flatnonzero(~known)
        if len(new):
            # The first row of each new hash names its id (the earliest index written last).
            first = np.empty(len(uniq), dtype=np.int64)
            first[codes[::-1]] = np.arange(len(codes) - 1, -1, -1, dtype=np.int64)
            ids = pa.concat_arrays(
                [
                    chunk["user_id"].combine_chunks(),
                    chunk["peer_id"].combine_chunks().filter(pa.array(has_peer)),
                ]
            ).take(pa.array(first[new]))
            digests = np.frombuffer(hmac_prefixes(ids, self._key), dtype=_DIGEST)
            where[new] = np.arange(len(self._digests), len(self._digests) + len(new))
            self._digests = np.concatenate([self._digests, digests])
            # The new hashes (sorted) inserted before their search positions keep the order.
            self._sorted = np.insert(self._sorted, at[new], uniq[new])
            self._where = np.insert(self._where, at[new], where[new])
        rows = where[codes]
        users = rows[:n]
        peers = np.full(n, -1, dtype=np.int64)
        peers[has_peer] = rows[n:]
        return _with_pseudonyms(chunk, self._digests, users, peers)


# A pseudonym's bytes (the first 16 of the HMAC) as one numpy item: rows gather in one step.
_DIGEST = np.dtype((np.void, _PSEUDONYM_BYTES))
# Hashes that stand for two different id strings (expected: none).
_SHARED_HASHES = (
    "SELECT count(*) FROM (SELECT h FROM (SELECT user_h AS h, user_id AS id FROM kept "
    "UNION ALL SELECT peer_h, peer_id FROM kept WHERE peer_id IS NOT NULL) "
    "GROUP BY h HAVING min(id) <> max(id))"
)


def _with_pseudonyms(
    chunk: pa.Table, digests: np.ndarray, users: np.ndarray, peers: np.ndarray
) -> pa.Table:
    """`chunk` with each row's user and peer pseudonym (rows of `digests`; -1: no peer) and
    the user's shard key (the pseudonym's first 8 hex digits as a number, see `shard_of`)."""
    user_rows = digests[users].tobytes()
    keys = np.frombuffer(user_rows, dtype=">u4").reshape(-1, _PSEUDONYM_BYTES // 4)
    return (
        chunk.append_column("user_pid", pseudonym_hex(user_rows))
        .append_column(
            "peer_pid", pseudonym_hex(digests[np.maximum(peers, 0)].tobytes(), valid=peers >= 0)
        )
        .append_column("user_key", pa.array(keys[:, 0].astype(np.uint32)))
    )


def _drop_repeats(kept: pa.Table, counts: dict[str, int]) -> pa.Table:
    """`kept` without the exact repeats of a line (all but its first), counted."""
    # Log shippers deliver a line twice after a retry; a repeated premium match would weigh
    # double in the contribution graph. Two real events never share ts to the microsecond.
    h = kept["h"].to_numpy()
    ordered = np.sort(h)
    repeated = ordered[1:][ordered[1:] == ordered[:-1]]
    if len(repeated) == 0:  # the usual case, found by one sort
        return kept
    candidates = np.flatnonzero(np.isin(h, repeated))
    # Equal hashes are candidates; equal fields decide (nulls group together).
    rows = kept.select(_DEDUP_KEYS).take(pa.array(candidates))
    rows = rows.append_column("row", pa.array(candidates))
    firsts = rows.group_by(_DEDUP_KEYS, use_threads=False).aggregate([("row", "min")])
    drop = np.setdiff1d(candidates, firsts["row_min"].to_numpy())
    counts["duplicates"] = len(drop)
    if len(drop) == 0:
        return kept
    keep = np.ones(kept.num_rows, dtype=bool)
    keep[drop] = False
    return kept.filter(pa.array(keep))


def _exact_pseudonyms(kept: pa.Table, key: bytes) -> pa.Table:
    """`kept` with its pseudonyms made again from the exact id strings, whatever their hashes."""
    kept = kept.drop_columns(["user_pid", "peer_pid", "user_key"])
    users = kept["user_id"].combine_chunks()
    peers = kept["peer_id"].combine_chunks()
    n = len(users)
    has_peer = peers.is_valid().to_numpy(zero_copy_only=False)
    encoded = pc.dictionary_encode(pa.concat_arrays([users, peers.filter(pa.array(has_peer))]))
    codes = encoded.indices.to_numpy().astype(np.int64)
    peer_codes = np.full(n, -1, dtype=np.int64)
    peer_codes[has_peer] = codes[n:]
    digests = np.frombuffer(hmac_prefixes(encoded.dictionary, key), dtype=_DIGEST)
    return _with_pseudonyms(kept, digests, codes[:n], peer_codes)


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
