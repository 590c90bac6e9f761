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

Shards split the bytes, not the users (`plan_pieces`): shard k of N reads a contiguous share
of the day's bytes in file order, whole files or byte ranges of plain files (a gzip cannot be
entered mid-stream, so it is never cut). A range starts after the first newline at or after
its first byte (unless that byte starts a line) and ends with the line holding its last byte,
so each line is read by exactly one shard: the shard its first byte falls in. Each shard
drops the repeats it sees itself and writes its events, its match edges and their hashes
(`write_day`). The merge (`merge_shard_partitions`) compares the shards' hashes only: usually
no line is in two shards, and the day's partitions are then the shards' own files, one after
the other (`lake.combine`: nothing decoded or encoded again); the edges are then the shards'
partial aggregates (a pair matched in two shards has a row in each). A line in two shards
sends the day through `merge_shards`, which reads every row and drops the repeats across
shards. Either way N shards give exactly the rows, pseudonyms and counts of one, and the same
matches per pair. The share of malformed lines is checked on the whole day, at the merge.

The extract also counts the day's matches per (user, peer, premium) (`MatchEdges`): the
`match_edges` dataset, which Contribution reads for its 28-day window instead of the events.
"""

from __future__ import annotations

import datetime as dt
import glob
import logging
import os
import tempfile
import uuid
import zlib
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from adperf import lake
from adperf.errors import SchemaError, SourceError
from adperf.pseudonym import IdPseudonymizer
from adperf.schema import EVENTS
from adperf.timeutil import day_bounds_utc

log = logging.getLogger(__name__)

DEFAULT_MAX_BAD_FRACTION = 0.01
#: The events adperf uses (contribution's match graph); other events are counted, not kept.
KEPT_EVENTS: tuple[str, ...] = ("match",)
_DECOMPRESS_CHUNK = 1 << 20
# Bytes read at a time looking for the end of a line at a range boundary.
_SCAN_CHUNK = 1 << 16

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
# The fields whose equality makes a line an exact repeat, raw (in DuckDB) or pseudonymized.
_HASHED_FIELDS = ("ts", "event", "user_id", "peer_id", "user_pid", "peer_pid", "premium")
# A shard with no bytes to read declares the table its reads would have created.
_DECLARE = (
    "CREATE TEMP TABLE lines (status UTINYINT, ts TIMESTAMPTZ, event VARCHAR, user_id VARCHAR, "
    "peer_id VARCHAR, premium BOOLEAN, h UBIGINT)"
)
_SUMMED_COUNTS = ("lines", "bad", "out_of_day", "other_events", "duplicates", "truncated_files")
# Kept lines per batch handed from DuckDB to the pseudonyms and the writer.
_BATCH_ROWS = 1 << 18


def log_files(path_pattern: str, day: dt.date) -> list[Path]:
    """The files of one day: `[logs] path` is a glob in which `{date}` is the report day."""
    pattern = path_pattern.replace("{date}", day.isoformat())
    return [Path(p) for p in sorted(glob.glob(pattern))]


@dataclass(frozen=True)
class Piece:
    """The bytes [start, end) of one log file (end None: to its end), widened to whole lines."""

    path: Path
    start: int = 0
    end: int | None = None

    @property
    def whole(self) -> bool:
        return self.start == 0 and self.end is None


def plan_pieces(files: Sequence[Path], shards: int) -> list[list[Piece]]:
    """The pieces each of `shards` shards reads: contiguous, equal shares of the day's bytes.

    Cut points fall at k/shards of the total size; one inside a gzip moves to the nearer end
    of that file (a gzip stream cannot be entered in the middle). Shard k's pieces follow
    shard k-1's in file order, so the shards concatenated are the day in file order.
    """
    if shards < 1:
        raise ValueError(f"logs: {shards} shards; at least 1")
    sizes = [p.stat().st_size for p in files]
    firsts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
    total = int(firsts[-1])
    cuts = [(0, 0)]
    for k in range(1, shards):
        at = total * k // shards
        i = min(int(np.searchsorted(firsts, at, side="right")) - 1, len(files))
        offset = at - int(firsts[i]) if i < len(files) else 0
        if offset and files[i].suffix == ".gz":
            i, offset = (i, 0) if 2 * offset < sizes[i] else (i + 1, 0)
        cuts.append(max((i, offset), cuts[-1]))
    cuts.append((len(files), 0))
    plan: list[list[Piece]] = []
    for (i, start), (j, end) in zip(cuts, cuts[1:], strict=False):
        pieces = []
        for f in range(i, min(j, len(files) - 1) + 1):
            lo = start if f == i else 0
            hi = end if f == j else sizes[f]
            if lo < hi:
                pieces.append(Piece(files[f], lo, None if hi == sizes[f] else hi))
        plan.append(pieces)
    return plan


def line_aligned(path: Path, start: int, end: int | None) -> tuple[int, int]:
    """[start, end) of `path` widened to the lines that begin in it (see the module doc)."""
    size = path.stat().st_size
    stop = size if end is None else min(end, size)
    with open(path, "rb") as fh:
        return _line_start(fh, start, size), _line_start(fh, stop, size)


def _line_start(fh: BinaryIO, pos: int, size: int) -> int:
    """The first line start at or after `pos` (`size` when none)."""
    if pos <= 0 or pos >= size:
        return max(0, min(pos, size))
    fh.seek(pos - 1)
    at = pos - 1
    while chunk := fh.read(_SCAN_CHUNK):
        newline = chunk.find(b"\n")
        if newline >= 0:
            return at + newline + 1
        at += len(chunk)
    return size


def merge_counts(counts: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """One day's counts from its shards' (in shard order): each line was read by one shard."""
    merged = {k: 0 for k in _SUMMED_COUNTS}
    for c in counts:
        for k in _SUMMED_COUNTS:
            merged[k] += int(c.get(k, 0))
    merged["files"] = int(counts[0]["files"]) if counts else 0
    return merged


def merge_shards(
    parts: Sequence[pa.Table],
    counts: Sequence[Mapping[str, Any]],
    *,
    day: dt.date,
    max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION,
) -> tuple[pa.Table, dict[str, int]]:
    """The day's EVENTS table and counts from its shards' (in shard order), as one shard
    would give them: repeats across shards dropped (the first kept), the counts summed, the
    share of malformed lines checked on the whole day (SourceError)."""
    merged = merge_counts(counts)
    _check_bad_share(merged, day, max_bad_fraction)
    table = pa.concat_tables([p.select(EVENTS.schema.names).cast(EVENTS.schema) for p in parts])
    drop = _repeats_in(table)
    if len(drop):
        keep = np.ones(table.num_rows, dtype=bool)
        keep[drop] = False
        table = table.filter(pa.array(keep))
    merged["duplicates"] += len(drop)
    return table, merged


#: A shard's side outputs, beside its events (`shard_folder(EVENTS.name, k, n)`): its match
#: edges (MATCH_EDGES rows of its share) and the hashes of its kept lines (sorted, distinct).
SHARD_EDGES = "match_edges_shards"
SHARD_HASHES = "events_shards_hashes"
SHARD_HASHES_SCHEMA = pa.schema([pa.field("h", pa.uint64(), nullable=False)])
#: What made the hashes: shards' hashes are compared only when all were made the same way.
HASH_FUNCTION = f"duckdb {duckdb.__version__} hash"


def shard_folder(dataset: str, shard: int, shards: int) -> str:
    """Where shard `shard` of `shards` keeps its part of `dataset` (events, edges, hashes)."""
    folder = "events_shards" if dataset == EVENTS.name else dataset
    return f"{folder}/shards={shards}/shard={shard}"


def shared_hashes(per_shard: Sequence[np.ndarray]) -> int:
    """How many hash values are in more than one shard's array (each sorted and distinct)."""
    # Sorted runs, one a shard: the stable sort (timsort) merges them in linear time, measured
    # 0.18 s for two runs of 4M where the default quicksort took 0.87 s.
    found = np.sort(np.concatenate(per_shard), kind="stable") if per_shard else np.empty(0)
    return int(np.count_nonzero(found[1:] == found[:-1]))


def write_day(root: lake.Root, events: DayEvents, *, key_version: str) -> None:
    """Write what `events` read (`batches()` not yet read): the day's EVENTS partition, then
    its MATCH_EDGES; or, for one shard of several, that shard's events, edges and hashes
    (`shard_folder`), the hashes last, all three tagged with one run id (`shard_run`)."""
    iso, shard, shards = events.day.isoformat(), events.shard, events.shards
    run = {"shard_run": uuid.uuid4().hex} if shards > 1 else {}

    def folder(dataset: str) -> str:
        return shard_folder(dataset, shard, shards) if shards > 1 else dataset

    lake.write_batches(
        root, folder(EVENTS.name), "date", iso, EVENTS.schema, events.batches(),
        meta=events.counts | run, key_version=key_version,
    )  # fmt: skip
    edges = events.edges.table()
    if shards == 1:
        lake.write_table(root, MATCH_EDGES, "date", iso, edges, key_version=key_version)
        return
    lake.write_table(
        root, folder(SHARD_EDGES), "date", iso, edges, meta=run, key_version=key_version
    )  # fmt: skip
    # Last: a shard is complete once its hashes are there (tasks: EventLogsShard.complete).
    lake.write_table(
        root, folder(SHARD_HASHES), "date", iso,
        pa.table({"h": events.row_hashes()}, schema=SHARD_HASHES_SCHEMA),
        meta=run | {"hash_function": HASH_FUNCTION},
    )  # fmt: skip


def merge_shard_partitions(
    root: lake.Root,
    day: dt.date,
    shards: int,
    *,
    key_version: str,
    max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION,
) -> str:
    """Write the day's EVENTS and MATCH_EDGES partitions from its `shards` shards' partitions,
    with the rows one shard would write; returns how ('combined' or 'rewritten', for the
    log and the bench).

    Usually the day's rows are the shards' rows one after the other: both partitions are
    then made of the shards' own files (`lake.combine`, nothing decoded). The match edges are
    the shards' partial aggregates, so a pair matched in two shards has a row in each (its
    matches summed by any reader, as Contribution sums a pair's rows of the window's days).
    The shards' hashes tell, without reading their rows: a line kept by two shards (an exact
    repeat across the cut) or hashes made by different DuckDB versions send the day through
    `merge_shards`, which reads every row and writes the edges one row per pair.
    """
    iso = day.isoformat()

    def parts(dataset: str) -> list[tuple[str, str, str]]:
        return [(shard_folder(dataset, k, shards), "date", iso) for k in range(shards)]

    counts = [lake.read_meta(root, *p) for p in parts(EVENTS.name)]
    merged = merge_counts(counts)
    _check_bad_share(merged, day, max_bad_fraction)
    made_by = {lake.read_meta(root, *p).get("hash_function") for p in parts(SHARD_HASHES)}
    if made_by == {HASH_FUNCTION}:
        hashes = [
            lake.read_arrow(root, *p, key_version=key_version)["h"].to_numpy()
            for p in parts(SHARD_HASHES)
        ]
        if shared_hashes(hashes) == 0:
            lake.combine(
                root, MATCH_EDGES, "date", iso, parts(SHARD_EDGES), key_version=key_version
            )
            lake.combine(
                root, EVENTS.name, "date", iso, parts(EVENTS.name), meta=merged,
                key_version=key_version,
            )  # fmt: skip
            return "combined"
    table, merged = merge_shards(
        [lake.read_arrow(root, *p, key_version=key_version) for p in parts(EVENTS.name)],
        counts,
        day=day,
        max_bad_fraction=max_bad_fraction,
    )
    all_edges = MatchEdges(day)
    all_edges.add(table)
    lake.write_table(root, MATCH_EDGES, "date", iso, all_edges.table(), key_version=key_version)
    lake.write_table(root, EVENTS.name, "date", iso, table, meta=merged, key_version=key_version)
    return "rewritten"


def _repeats_in(table: pa.Table) -> np.ndarray:
    """Row numbers of the exact repeats of an earlier row of an EVENTS table (usually none)."""
    h = _hashes(table, _EVENT_ROW_HASH)
    return _repeat_rows(h, lambda: table)


def _repeat_rows(h: np.ndarray, rows: Any) -> np.ndarray:
    """Row numbers (into `h`) of exact repeats of an earlier row: equal hashes are candidates,
    equal fields (`rows()`, a table of at least the hashed fields) decide."""
    candidates = _hash_candidates(h)
    if len(candidates) == 0:  # the usual case
        return np.empty(0, dtype=np.int64)
    # Nulls group together in Arrow's group_by, as equal fields should.
    table: pa.Table = rows()
    keys = [c for c in table.column_names if c in _HASHED_FIELDS]
    found = table.select(keys).take(candidates).append_column("row", pa.array(candidates))
    firsts = found.group_by(keys, use_threads=False).aggregate([("row", "min")])
    return np.setdiff1d(candidates, firsts["row_min"].to_numpy())


def _hash_candidates(h: np.ndarray) -> np.ndarray:
    """Row numbers of the rows whose hash another row shares (usually none: one sort)."""
    ordered = np.sort(h)
    repeated = ordered[1:][ordered[1:] == ordered[:-1]]
    if len(repeated) == 0:
        return np.empty(0, dtype=np.int64)
    return np.flatnonzero(np.isin(h, repeated))


#: One day's premium and other matches per (user, peer): what Contribution needs of the logs.
#: One row per (user_pid, peer_pid, premium), except in a day combined from N shards' files,
#: where a pair matched in several shards has a row in each: a reader sums `matches` per pair
#: (Contribution does, over the window's days anyway).
MATCH_EDGES_SCHEMA = pa.schema(
    [
        pa.field("date", pa.string(), nullable=False),
        pa.field("user_pid", pa.string(), nullable=False),
        pa.field("peer_pid", pa.string(), nullable=False),
        pa.field("premium", pa.bool_(), nullable=False),
        pa.field("matches", pa.int64(), nullable=False),
    ]
)
MATCH_EDGES = "match_edges"


class MatchEdges:
    """Counts matches per (user, peer, premium) of EVENTS batches: a day's match edges.

    A match with no peer or with oneself partners nobody and is left out; a premium flag that
    is missing counts as not premium (as `adperf.transform.contribution` reads events). The
    edges come out in the order of their first match in the batches (file order), so the same
    events give the same partition whether read whole or by Spark; read by N shards, the same
    rows once summed per pair (MATCH_EDGES_SCHEMA).
    """

    def __init__(self, day: dt.date) -> None:
        self.day = day.isoformat()
        self._parts: list[pa.Table] = []

    def add(self, batch: pa.RecordBatch | pa.Table) -> None:
        user, peer = batch.column("user_pid"), batch.column("peer_pid")
        is_edge = pc.and_(
            pc.and_(pc.equal(batch.column("event"), "match"), pc.is_valid(peer)),
            pc.not_equal(user, peer),
        )
        # Grouped once, in `table()`: a day's pairs are nearly all distinct, so grouping
        # each batch first saves nothing and doubles the work.
        self._parts.append(
            pa.table(
                {
                    "user_pid": pc.cast(user, pa.string()),
                    "peer_pid": pc.cast(peer, pa.string()),
                    "premium": pc.fill_null(batch.column("premium"), False),
                }
            ).filter(pc.fill_null(is_edge, False))
        )

    def table(self) -> pa.Table:
        """The edges of the batches added, one row per (user_pid, peer_pid, premium)."""
        if not self._parts:
            return MATCH_EDGES_SCHEMA.empty_table()
        edges = pa.concat_tables(self._parts)
        return _collapse_edges(self.day, edges)


def edges_per_pair(edges: pa.Table) -> pa.Table:
    """MATCH_EDGES rows with one row per (date, user_pid, peer_pid, premium), matches summed,
    sorted: a day combined from shards' partial edges read as one row per pair."""
    keys = ["date", *_EDGE_KEYS]
    summed = edges.group_by(keys, use_threads=False).aggregate([("matches", "sum")])
    summed = summed.sort_by([(k, "ascending") for k in keys])
    columns = {k: summed[k] for k in keys} | {"matches": summed["matches_sum"]}
    return pa.table(columns, schema=MATCH_EDGES_SCHEMA)


def _collapse_edges(day: str, edges: pa.Table) -> pa.Table:
    """MATCH_EDGES rows of `day` from (user_pid, peer_pid, premium) rows, a match each: one
    row per key, at its first row, with its count of matches.

    A day's pairs are nearly all distinct, so the keys are hashed (DuckDB, all cores) and only
    rows whose hash repeats are grouped (equal keys decide): measured on the bench's `large`
    day (2M edges, 2 cores), 1.0 s where Arrow's group_by of every row took 2.5 s. Rows stay
    in first-match order, as one pass over the day's events meets them.
    """
    h = _hashes(edges.select(_EDGE_KEYS), _EDGE_KEY_HASH)
    matches = np.ones(len(h), dtype=np.int64)
    candidates = _hash_candidates(h)
    if len(candidates):
        found = edges.select(_EDGE_KEYS).take(candidates).append_column("row", pa.array(candidates))
        groups = found.group_by(_EDGE_KEYS, use_threads=False).aggregate(
            [("row", "min"), ("row", "count")]
        )
        firsts = groups["row_min"].to_numpy()
        keep = np.ones(len(h), dtype=bool)
        keep[candidates] = False
        keep[firsts] = True
        matches[firsts] = groups["row_count"].to_numpy()
        rows = np.flatnonzero(keep)
        edges, matches = edges.take(rows), matches[rows]
    return pa.table(
        {
            "date": _repeat_str(day, edges.num_rows),
            **{k: pc.cast(edges[k], MATCH_EDGES_SCHEMA.field(k).type) for k in _EDGE_KEYS},
            "matches": pa.array(matches, pa.int64()),
        },
        schema=MATCH_EDGES_SCHEMA,
    )


def _distinct(ordered: np.ndarray) -> np.ndarray:
    """The distinct values of a sorted array."""
    if not len(ordered):
        return ordered
    first: np.ndarray = ordered[np.concatenate([[True], ordered[1:] != ordered[:-1]])]
    return first


# Constant statements (every value is data, not SQL): a row hash of an EVENTS table, and of
# the match edges' pair keys.
_EVENT_ROW_HASH = "SELECT hash(ts, event, user_pid, peer_pid, premium) AS h FROM hashed"
_EDGE_KEY_HASH = "SELECT hash(user_pid, peer_pid, premium) AS h FROM hashed"


def _hashes(table: pa.Table, statement: str) -> np.ndarray:
    """DuckDB's 64-bit hash of each row of `table` (registered as `hashed`), in row order."""
    con = duckdb.connect()
    try:
        con.execute("SET preserve_insertion_order = true")
        con.register("hashed", table)
        result = con.sql(statement).to_arrow_table()
    finally:
        con.close()
    return np.asarray(result["h"].to_numpy(), dtype=np.uint64)


_EDGE_KEYS = ["user_pid", "peer_pid", "premium"]


def derive_match_edges(root: lake.Root, day: dt.date, key_version: str) -> bool:
    """Write a day's match_edges partition from its events partition, when a lake written
    before match edges existed has the one and not the other; True when it wrote them.

    The rows are those the extract writes (`MatchEdges` over the day's events, in the file
    order the partition keeps), so an old lake needs neither a re-extract nor the day's server
    logs, which may be long gone. Reads the day's events whole (a one-time migration).
    """
    iso = day.isoformat()
    if lake.partition_exists(root, MATCH_EDGES, "date", iso, key_version=key_version):
        return False
    if not lake.partition_exists(root, EVENTS.name, "date", iso, key_version=key_version):
        return False
    edges = MatchEdges(day)
    edges.add(lake.read_arrow(root, EVENTS.name, "date", iso, key_version=key_version))
    lake.write_table(root, MATCH_EDGES, "date", iso, edges.table(), key_version=key_version)
    log.info("match_edges of %s derived from its events partition (written before them)", iso)
    return True


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
    """One report day of server logs (or one shard's share of its bytes): read and counted on
    opening, its EVENTS rows streamed.

    Malformed lines (bad JSON or UTF-8, missing `ts`/`event`/`user_id`, a truncated gzip tail)
    are counted, not fatal, unless their share passes `max_bad_fraction` (SourceError on
    opening; with shards > 1 the merge checks the whole day instead). An exact repeat of a
    kept line is kept once and counted. With `shards` > 1 only the pieces of the day's bytes
    `plan_pieces` gives `shard` are read; `merge_shards` makes the day of the shards. `counts`
    is final once `batches()` has been read to the end, and `edges` (the day's `MatchEdges`)
    then holds every kept match: lines = kept + bad + out_of_day + other_events + duplicates.

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
        self.edges = MatchEdges(day)
        counts = {"lines": 0, "bad": 0, "out_of_day": 0, "other_events": 0}
        self.counts = counts | {"duplicates": 0, "files": len(files), "truncated_files": 0}
        start, end = day_bounds_utc(day, day, timezone)
        params: dict[str, Any] = {
            "start": start.replace(tzinfo=dt.UTC),
            "end": end.replace(tzinfo=dt.UTC),
            "all_events": events is None,
            # A list DuckDB can type even when empty; with all_events it is never looked at.
            "events": sorted(events) if events else [""],
        }
        pieces = plan_pieces(files, shards)[shard]
        self._con = duckdb.connect()
        try:
            # Timestamps without an offset are read as UTC, whatever the machine's zone.
            self._con.execute("SET TimeZone = 'UTC'")
            self._con.execute("SET preserve_insertion_order = true")
            self._into = _CREATE
            for piece in pieces:
                self._read_piece(piece, params)
            if self._into == _CREATE:
                self._con.execute(_DECLARE)
            for status, n in self._con.execute(_COUNTS).fetchall():
                self.counts["lines"] += n
                if status != KEPT:
                    self.counts[_STATUS_COUNTS[status]] += n
            if shards == 1:
                _check_bad_share(self.counts, day, max_bad_fraction)
            self._hashes = self._con.sql(_KEPT_HASHES).to_arrow_table()["h"].to_numpy()
            self._drop = _repeat_rows(self._hashes, lambda: self._con.sql(_KEPT).to_arrow_table())
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

    def row_hashes(self) -> np.ndarray:
        """The hashes of the kept lines' fields (sorted, distinct): equal lines, equal hashes
        (DuckDB's `hash`, HASH_FUNCTION), compared across shards by `merge_shard_partitions`."""
        return _distinct(np.sort(np.asarray(self._hashes, dtype=np.uint64)))

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
            out = pa.RecordBatch.from_arrays(
                [
                    _repeat_str(date, batch.num_rows),
                    pc.cast(batch.column(0), ts_type),
                    batch.column(1),
                    self._ids.hex(_strings(batch.column(2))),
                    self._ids.hex(_strings(batch.column(3))),
                    batch.column(4),
                ],
                schema=EVENTS.schema,
            )
            _check_not_null(out)
            self.edges.add(out)
            yield out
        if at != len(self._hashes):
            raise RuntimeError(f"logs: DuckDB gave {at} kept lines, {len(self._hashes)} before")

    def _read_piece(self, piece: Piece, params: dict[str, Any]) -> None:
        """One piece's lines into the day's table: a whole file as it is, a byte range of a
        plain file through a temporary copy of its lines (DuckDB reads whole files only)."""
        if piece.whole:
            self._read_file(piece.path, params)
            return
        start, end = line_aligned(piece.path, piece.start, piece.end)
        if start >= end:  # the range lies inside one line, read by the shard it starts in
            return
        with tempfile.TemporaryDirectory(prefix="adperf-logs-") as tmp:
            part = Path(tmp) / "piece.jsonl"
            _copy_range(piece.path, start, end, part)
            self._read_file(part, params)

    def _read_file(self, path: Path, params: dict[str, Any]) -> None:
        """One file's lines into the day's table (the gzip is read once)."""
        try:
            self._con.execute(self._into + _LINES, {**params, "path": str(path)})
            self._into = _INSERT
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
            self._con.execute(self._into + _LINES, {**params, "path": str(plain)})
            self._into = _INSERT


def _copy_range(path: Path, start: int, end: int, out: Path) -> None:
    """Bytes [start, end) of `path` into a new file `out`, in the kernel where it can."""
    with open(path, "rb") as src, open(out, "wb") as dst:
        left, at = end - start, start
        while left > 0:
            n = os.copy_file_range(src.fileno(), dst.fileno(), left, at)
            if n == 0:
                break
            left, at = left - n, at + n


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
