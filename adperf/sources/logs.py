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

One DuckDB statement per file reads the gzip once (inflated on one thread, parsed on all),
converts `ts`, classifies each line (malformed, out of the day, another event, kept) and puts
the day's lines in one in-memory table: every line's status, and for kept lines only their
fields and a hash of them. The counts are one GROUP BY; exact repeats of a line are found by
sorting the kept lines' hashes (equal fields decide among equal hashes). The kept lines then
come back as Arrow batches in file order; each batch takes its pseudonyms from one
`IdPseudonymizer` (compiled: each distinct id HMAC'd once for the day, found again by its
exact bytes) and goes to Parquet while the next batch is made (`lake.write_batches`, one
thread each; DuckDB, the pseudonyms and Parquet all release the GIL). No pandas on the way.

Measured on the bench's `large` day (5M lines, 2M kept, 970k distinct ids; 2 shared cores,
2026-11-29, medians of 3): the read into the table ~2.0 s (DuckDB's bare `read_json` of the
file to Arrow ~1.75 s), pseudonyms 0.45 s, Parquet 0.75 s; 3.4 s in all, 5.8 CPU-s.
The design before (Arrow batches streamed out of the read, filtered in Python, ids looked up
by a 64-bit DuckDB hash then HMAC'd in Python, a collision check after) took 5.0 s / 8.4 CPU-s.

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
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from adperf.errors import SchemaError, SourceError
from adperf.pseudonym import IdPseudonymizer
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
# The day's lines go into one DuckDB table (in memory, on DuckDB's threads): each line's
# status; the fields of kept lines only (null elsewhere), with a hash of those fields (exact
# repeats are looked for among equal hashes only).
# The first file creates the table (measured 10% faster than an INSERT into a declared one).
_CREATE = "CREATE TEMP TABLE lines AS "
_INSERT = "INSERT INTO lines "
_LINES = (
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
# Scans of one table come back in the order the rows went in (preserve_insertion_order, set
# explicitly): file order. `DayEvents.batches` checks it against the hashes read first.
_KEPT_HASHES = "SELECT h FROM lines WHERE status = 3"
_KEPT = "SELECT ts, event, user_id, peer_id, premium, h FROM lines WHERE status = 3"
_DEDUP_KEYS = ["ts", "event", "user_id", "peer_id", "premium"]
# Kept lines per batch handed from DuckDB to the pseudonyms and the writer.
_BATCH_ROWS = 1 << 18


def log_files(path_pattern: str, day: dt.date) -> list[Path]:
    """The files of one day: `[logs] path` is a glob in which `{date}` is the report day."""
    pattern = path_pattern.replace("{date}", day.isoformat())
    return [Path(p) for p in sorted(glob.glob(pattern))]


def shard_of(pids: pa.Array, shards: int) -> np.ndarray:
    """Shard number (0..shards-1) of each pseudonym: its first 8 hex characters mod `shards`."""
    return np.asarray(_shard_keys(pc.cast(pids, pa.string())) % shards, dtype=np.int64)


def fetch_events(path_pattern: str, **options: Any) -> tuple[pd.DataFrame, dict[str, int]]:
    """EVENTS rows of one report day as a DataFrame, and counts; `options` are `DayEvents`'s
    keywords. For tests and notebooks: the pipeline streams the day (`DayEvents.batches`)."""
    with DayEvents(path_pattern, **options) as day_events:
        table = pa.Table.from_batches(list(day_events.batches()), schema=EVENTS.schema)
        counts = day_events.counts
    df = table.to_pandas()
    df["premium"] = df["premium"].astype("boolean")
    return df, counts


class DayEvents:
    """One report day of server logs: read and counted on opening, its EVENTS rows streamed.

    Malformed lines (bad JSON or UTF-8, missing `ts`/`event`/`user_id`, a truncated gzip tail)
    are counted, not fatal, unless their share passes `max_bad_fraction` (SourceError on
    opening). An exact repeat of a kept line is kept once and counted. With `shards` > 1 only
    users whose pseudonym falls in `shard` are kept (see `shard_of`); the other counts stay
    whole-day. `counts` is final once `batches()` has been read to the end:
    lines = kept + bad + out_of_day + other_events + duplicates + other_shards.

    Use as a context manager: the day's lines are held by a DuckDB connection until closed.
    """

    def __init__(
        self,
        path_pattern: str,
        *,
        day: dt.date,
        timezone: str,
        hmac_key: bytes,
        max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION,
        events: Collection[str] | None = KEPT_EVENTS,
        shard: int = 0,
        shards: int = 1,
    ) -> None:
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
        self.day, self.shard, self.shards = day, shard, shards
        self._ids = IdPseudonymizer(hmac_key)
        counts = {"lines": 0, "bad": 0, "out_of_day": 0, "other_events": 0, "other_shards": 0}
        self.counts = counts | {"duplicates": 0, "files": len(files), "truncated_files": 0}
        start, end = day_bounds_utc(day, day, timezone)
        params: dict[str, Any] = {
            "start": start.replace(tzinfo=dt.UTC),
            "end": end.replace(tzinfo=dt.UTC),
            "all_events": events is None,
            # A list DuckDB can type even when empty; with all_events it is never looked at.
            "events": sorted(events) if events else [""],
        }
        self._con = duckdb.connect()
        try:
            # Timestamps without an offset are read as UTC, whatever the machine's zone.
            self._con.execute("SET TimeZone = 'UTC'")
            self._con.execute("SET preserve_insertion_order = true")
            for k, path in enumerate(files):
                self._read_file(path, params, _INSERT if k else _CREATE)
            for status, n in self._con.execute(_COUNTS).fetchall():
                self.counts["lines"] += n
                if status != KEPT:
                    self.counts[_STATUS_COUNTS[status]] += n
            _check_bad_share(self.counts, day, max_bad_fraction)
            self._hashes = self._con.sql(_KEPT_HASHES).to_arrow_table()["h"].to_numpy()
            self._drop = self._repeats()
            self.counts["duplicates"] = len(self._drop)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> DayEvents:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._con.close()

    def batches(self) -> Iterator[pa.RecordBatch]:
        """The day's EVENTS rows in file order, in batches (once)."""
        keep = None
        if len(self._drop):
            keep = np.ones(len(self._hashes), dtype=bool)
            keep[self._drop] = False
        date = self.day.isoformat()
        ts_type = EVENTS.schema.field("ts").type
        at = 0
        for batch in _coalesced(self._con.sql(_KEPT).to_arrow_reader(_BATCH_ROWS), _BATCH_ROWS):
            n = batch.num_rows
            if not np.array_equal(batch.column(5).to_numpy(), self._hashes[at : at + n]):
                raise RuntimeError("logs: DuckDB gave the kept lines in another order than before")
            if keep is not None:
                batch = batch.filter(pa.array(keep[at : at + n]))
            at += n
            user_pid = self._ids.hex(_strings(batch.column(2)))
            peer_pid = self._ids.hex(_strings(batch.column(3)))
            if self.shards > 1:
                mine = _shard_keys(user_pid) % self.shards == self.shard
                self.counts["other_shards"] += len(mine) - int(mine.sum())
                batch, user_pid, peer_pid = (
                    x.filter(pa.array(mine)) for x in (batch, user_pid, peer_pid)
                )
            out = pa.RecordBatch.from_arrays(
                [
                    _repeat_str(date, batch.num_rows),
                    pc.cast(batch.column(0), ts_type),
                    batch.column(1),
                    user_pid,
                    peer_pid,
                    batch.column(4),
                ],
                schema=EVENTS.schema,
            )
            _check_not_null(out)
            yield out
        if at != len(self._hashes):
            raise RuntimeError(f"logs: DuckDB gave {at} kept lines, {len(self._hashes)} before")

    def _read_file(self, path: Path, params: dict[str, Any], into: str) -> None:
        """One file's lines into the day's table (the gzip is read once)."""
        try:
            self._con.execute(into + _LINES, {**params, "path": str(path)})
            return
        except duckdb.IOException:
            if path.suffix != ".gz":
                raise
        # A gzip that ends early (a copy cut short, a writer killed mid-rotation): keep the
        # lines before the damage; the cut line and whatever followed count as one bad line.
        # The failed statement inserted nothing (a statement is all or nothing).
        self.counts["truncated_files"] += 1
        self.counts["lines"] += 1
        self.counts["bad"] += 1
        with tempfile.TemporaryDirectory(prefix="adperf-logs-") as tmp:
            plain = Path(tmp) / "readable.jsonl"
            _decompress_readable(path, plain)
            self._con.execute(into + _LINES, {**params, "path": str(plain)})

    def _repeats(self) -> np.ndarray:
        """Kept-line numbers of the exact repeats of an earlier kept line (usually none)."""
        # Log shippers deliver a line twice after a retry; a repeated premium match would
        # weigh double in the contribution graph. Two real events never share ts to the
        # microsecond.
        h = self._hashes
        ordered = np.sort(h)
        repeated = ordered[1:][ordered[1:] == ordered[:-1]]
        if len(repeated) == 0:  # the usual case, found by one sort
            return np.empty(0, dtype=np.int64)
        candidates = np.flatnonzero(np.isin(h, repeated))
        # Equal hashes are candidates; equal fields decide (nulls group together).
        rows = self._con.sql(_KEPT).to_arrow_table().select(_DEDUP_KEYS).take(candidates)
        rows = rows.append_column("row", pa.array(candidates))
        firsts = rows.group_by(_DEDUP_KEYS, use_threads=False).aggregate([("row", "min")])
        return np.setdiff1d(candidates, firsts["row_min"].to_numpy())


def _coalesced(batches: Iterable[pa.RecordBatch], rows: int) -> Iterator[pa.RecordBatch]:
    """`batches` joined into batches of at least `rows` rows (the last may be shorter)."""
    # DuckDB's Arrow reader hands over ~27k-row batches whatever size is asked for (2.0.1):
    # 75 Parquet row groups for a day of 2M kept lines instead of 8 (no faster to write
    # either way, within this machine's noise; fewer, larger groups read better).
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        pending.append(batch)
        count += batch.num_rows
        if count >= rows:
            yield _one_batch(pending)
            pending, count = [], 0
    if pending:
        yield _one_batch(pending)


def _one_batch(batches: list[pa.RecordBatch]) -> pa.RecordBatch:
    if len(batches) == 1:
        return batches[0]
    joined = pa.Table.from_batches(batches).combine_chunks().to_batches()
    return joined[0] if joined else batches[0].slice(0, 0)


# What each status not kept is counted as.
_STATUS_COUNTS = {BAD: "bad", OUT_OF_DAY: "out_of_day", OTHER_EVENT: "other_events"}


def _strings(ids: pa.Array) -> pa.Array:
    """A string (or large string) array of ids, whatever string layout DuckDB handed over."""
    if pa.types.is_string(ids.type) or pa.types.is_large_string(ids.type):
        return ids
    return pc.cast(ids, pa.large_string())


def _shard_keys(pids: pa.Array) -> np.ndarray:
    """The first 8 hex digits of each pseudonym as a number (the shard key, see `shard_of`)."""
    _, offsets, data = pids.buffers()
    starts = np.frombuffer(offsets, dtype=np.int32)[pids.offset : pids.offset + len(pids)]
    first = np.frombuffer(data, dtype=np.uint8)[starts[:, None] + np.arange(_SHARD_HEX_CHARS)]
    keys: np.ndarray = (_HEX_VALUE[first].astype(np.uint64) << _NIBBLE_SHIFTS).sum(axis=1)
    return keys


_HEX_VALUE = np.zeros(256, dtype=np.uint8)
_HEX_VALUE[np.frombuffer(b"0123456789abcdef", dtype=np.uint8)] = np.arange(16, dtype=np.uint8)
_NIBBLE_SHIFTS = np.arange(4 * (_SHARD_HEX_CHARS - 1), -1, -4, dtype=np.uint64)


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
