"""A day of server logs in several files, generated fast (numpy + Arrow, no Python per line).

The lines have the sandbox world's format (adperf/sandbox/world.py `_log_lines`): 40% matches
(10% of them premium), the rest session starts, ~0.1% malformed (half cut short, half without
`user_id`), users skewed (a few heavy users, a long tail). The day is cut by time into `files`
files (as a server rotates its log), each written to a temp name and renamed, so a killed
generation is redone, not reused.

Each line is built by Arrow's element-wise string joins with its newline, so a file's bytes
are the data buffer of one string array: nothing is ever a Python string per line. 20M events
(8 files, 2.3 GB of JSON) take ~1 min on 2 shared cores, most of it gzip (level 1, one file
per thread: zlib releases the GIL).
"""

from __future__ import annotations

import datetime as dt
import gzip
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bench.data import BAD_FRACTION, US_PER_DAY, user_ids

MATCH_SHARE = 0.4
PREMIUM_SHARE = 0.1
# Lines per block built at once: bounds the generator's memory (~1 KB a line in flight).
_BLOCK = 1_000_000


def log_day_files(
    folder: Path,
    day: dt.date,
    *,
    events: int,
    users: int,
    files: int,
    seed: int = 7,
    compress: bool = True,
) -> list[Path]:
    """`files` log files of `day` (`<day>-NN.jsonl[.gz]`) holding `events` lines, built once."""
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".jsonl.gz" if compress else ".jsonl"
    paths = [folder / f"{day.isoformat()}-{k:02d}{suffix}" for k in range(files)]
    missing = [k for k, p in enumerate(paths) if not p.exists()]
    if missing:
        ids = user_ids(users)
        bounds = np.linspace(0, events, files + 1).astype(np.int64)

        def build(k: int) -> None:
            rng = np.random.default_rng([seed, k])
            tmp = paths[k].with_name(f".tmp-{os.getpid()}-{paths[k].name}")
            try:
                n = int(bounds[k + 1] - bounds[k])
                with open(tmp, "wb") as out:
                    sink = gzip.GzipFile(fileobj=out, mode="wb", mtime=0, compresslevel=1)
                    with sink if compress else out:
                        for lo in range(0, n, _BLOCK):
                            hi = min(n, lo + _BLOCK)
                            block = _lines(rng, day, ids, k, files, hi - lo)
                            (sink if compress else out).write(block)
                os.replace(tmp, paths[k])
            finally:
                tmp.unlink(missing_ok=True)

        # Two threads: zlib and Arrow's kernels release the GIL.
        with ThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(build, missing))
    return paths


def _lines(
    rng: np.random.Generator, day: dt.date, ids: pa.Array, k: int, files: int, n: int
) -> memoryview:
    """n lines (bytes) of the k-th of `files` time slices of the day, in time order."""
    span = US_PER_DAY // files
    local_us = np.sort(k * span + rng.integers(0, span, n))  # since the local midnight
    users = len(ids)
    user = np.minimum((rng.random(n) ** 2 * users).astype(np.int64), users - 1)
    peer = (user + rng.integers(1, users, n)) % users
    premium = rng.random(n) < PREMIUM_SHARE
    # What each line is: a session start, a match, or malformed (cut short / no user_id).
    kind = np.where(rng.random(n) < MATCH_SHARE, _MATCH, _SESSION)
    broken = rng.random(n) < BAD_FRACTION
    kind[broken] = np.where(rng.random(int(broken.sum())) < 0.5, _CUT, _NO_USER)
    stamp = _stamps(day, local_us)
    parts, order = [], []
    for what in (_SESSION, _MATCH, _CUT, _NO_USER):
        rows = np.flatnonzero(kind == what)
        at = pa.array(rows)
        if what == _SESSION:
            line = pc.binary_join_element_wise(
                '{"ts": "', stamp.take(at), '+09:00", "event": "session_start", "user_id": "',
                ids.take(pa.array(user[rows])), '"}\n', "",
            )  # fmt: skip
        elif what == _NO_USER:
            line = pc.binary_join_element_wise(
                '{"ts": "', stamp.take(at), '+09:00", "event": "match"}\n', ""
            )
        else:
            line = pc.binary_join_element_wise(
                '{"ts": "', stamp.take(at), '+09:00", "event": "match", "user_id": "',
                ids.take(pa.array(user[rows])), '", "peer_id": "', ids.take(pa.array(peer[rows])),
                '", "props": {"premium": ', pc.if_else(pa.array(premium[rows]), "true", "false"),
                "}}\n", "",
            )  # fmt: skip
            if what == _CUT:  # never valid JSON
                line = pc.binary_join_element_wise(pc.utf8_slice_codeunits(line, 0, 40), "\n", "")
        parts.append(line)
        order.append(rows)
    # Back into time order: one take over the lines grouped by kind.
    position = np.empty(n, dtype=np.int64)
    position[np.concatenate(order)] = np.arange(n)
    grouped = pa.concat_arrays([p.cast(pa.large_string()) for p in parts])
    return _joined(grouped.take(pa.array(position)))


_SESSION, _MATCH, _CUT, _NO_USER = 0, 1, 2, 3
_DIGITS = np.frombuffer(b"0123456789", dtype=np.uint8)


def _stamps(day: dt.date, local_us: np.ndarray) -> pa.Array:
    """'YYYY-MM-DDTHH:MM:SS.ffffff' of each local time of `day` (microseconds since its
    midnight), built as one fixed-width byte matrix (numpy's datetime_as_string and an
    Arrow array of its unicode result take ~40x longer)."""
    n = len(local_us)
    out = np.empty((n, 26), dtype=np.uint8)
    out[:, :11] = np.frombuffer(f"{day.isoformat()}T".encode(), dtype=np.uint8)
    fields = (
        (11, local_us // 3_600_000_000, 2),
        (14, local_us // 60_000_000 % 60, 2),
        (17, local_us // 1_000_000 % 60, 2),
        (20, local_us % 1_000_000, 6),
    )
    for at, value, width in fields:
        for d in range(width):
            out[:, at + d] = _DIGITS[value // 10 ** (width - 1 - d) % 10]
    out[:, 13] = out[:, 16] = ord(":")
    out[:, 19] = ord(".")
    offsets = pa.py_buffer((np.arange(n + 1, dtype=np.int32) * 26).tobytes())
    return pa.Array.from_buffers(pa.string(), n, [None, offsets, pa.py_buffer(out.tobytes())])


def _joined(strings: pa.Array | pa.ChunkedArray) -> memoryview:
    """The concatenated bytes of a string array (its data buffer between its first and last
    offsets): the lines already end with their newline."""
    if isinstance(strings, pa.ChunkedArray):
        strings = strings.combine_chunks()
    lines = strings.cast(pa.large_string())
    _, offsets, data = lines.buffers()
    first, last = np.frombuffer(offsets, dtype=np.int64)[[lines.offset, lines.offset + len(lines)]]
    return memoryview(data)[int(first) : int(last)]
