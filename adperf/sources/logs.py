"""Server logs (JSON lines, gzip or plain) → pseudonymized events of one report day."""

from __future__ import annotations

import datetime as dt
import glob
import gzip
import json
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from adperf.errors import SourceError
from adperf.pseudonym import pseudonymize
from adperf.schema import EVENTS
from adperf.timeutil import day_bounds_utc

DEFAULT_MAX_BAD_FRACTION = 0.01


def log_files(path_pattern: str, day: dt.date) -> list[Path]:
    """The files of one day: `[logs] path` is a glob in which `{date}` is the report day."""
    pattern = path_pattern.replace("{date}", day.isoformat())
    return [Path(p) for p in sorted(glob.glob(pattern))]


def fetch_events(
    path_pattern: str,
    *,
    day: dt.date,
    timezone: str,
    hmac_key: bytes,
    max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """EVENTS rows of one report day and counts (lines, bad, out of day).

    Malformed lines (bad JSON or UTF-8, missing `ts`/`event`/`user_id`, a truncated gzip tail)
    are counted, not fatal, unless their share passes `max_bad_fraction`.
    """
    files = log_files(path_pattern, day)
    if not files:
        raise SourceError(
            "logs",
            day.isoformat(),
            f"no file matches {path_pattern!r}",
            "check [logs] path, or wait until the day's logs are rotated",
        )
    ts_raw: list[str] = []
    events: list[str] = []
    users: list[str] = []
    peers: list[str | None] = []
    premium: list[bool | None] = []
    counts = {"lines": 0, "bad": 0, "out_of_day": 0, "files": len(files)}
    for path in files:
        for line in _lines(path, counts):
            counts["lines"] += 1
            rec = _parse(line)
            if rec is None:
                counts["bad"] += 1
                continue
            ts_raw.append(rec["ts"])
            events.append(rec["event"])
            users.append(rec["user_id"])
            peer = rec.get("peer_id")
            peers.append(str(peer) if peer not in (None, "") else None)
            props = rec.get("props")
            prem = props.get("premium") if isinstance(props, dict) else None
            premium.append(bool(prem) if prem is not None else None)
    ts = pd.to_datetime(
        pd.Series(ts_raw, dtype=object), utc=True, format="ISO8601", errors="coerce"
    )
    start, end = day_bounds_utc(day, day, timezone)
    bad_ts = ts.isna().to_numpy()
    in_day = (
        (~bad_ts)
        & (ts >= pd.Timestamp(start, tz="UTC")).to_numpy()
        & (ts < pd.Timestamp(end, tz="UTC")).to_numpy()
    )
    counts["bad"] += int(bad_ts.sum())
    counts["out_of_day"] = int(((~bad_ts) & ~in_day).sum())
    if counts["lines"] and counts["bad"] / counts["lines"] > max_bad_fraction:
        raise SourceError(
            "logs",
            day.isoformat(),
            f"{counts['bad']} of {counts['lines']} lines are malformed "
            f"({counts['bad'] / counts['lines']:.2%} > [logs] max_bad_fraction {max_bad_fraction})",
            "inspect the day's log files; raise max_bad_fraction only if the damage is understood",
        )
    keep = np.flatnonzero(in_day)
    df = pd.DataFrame(
        {
            "date": day.isoformat(),
            "ts": ts.iloc[keep].dt.as_unit("us").reset_index(drop=True),
            "event": [events[i] for i in keep],
            "user_pid": pseudonymize(
                pa.array([users[i] for i in keep], pa.string()), hmac_key
            ).to_numpy(zero_copy_only=False),
            "peer_pid": pseudonymize(
                pa.array([peers[i] for i in keep], pa.string()), hmac_key
            ).to_numpy(zero_copy_only=False),
            "premium": pd.array([premium[i] for i in keep], dtype="boolean"),
        }
    )
    return df[EVENTS.columns], counts


def _lines(path: Path, counts: dict[str, int]) -> Any:
    opener: Any = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        try:
            yield from fh
        except (EOFError, zlib.error, gzip.BadGzipFile):
            # A truncated gzip tail: the lines read so far are good; the tail is one bad line.
            counts["bad"] += 1
            counts["truncated_files"] = counts.get("truncated_files", 0) + 1


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        rec = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(rec, dict):
        return None
    if not all(isinstance(rec.get(k), str) and rec.get(k) for k in ("ts", "event", "user_id")):
        return None
    return rec
