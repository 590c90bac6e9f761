import datetime as dt
import gzip
import json

import pytest

from adperf.errors import SourceError
from adperf.pseudonym import pseudonymize_one
from adperf.sources.logs import fetch_events

KEY = b"k"
DAY = dt.date(2026, 11, 27)


def _line(ts: str, event: str = "match", user: str = "usr_1", **extra: object) -> bytes:
    return (json.dumps({"ts": ts, "event": event, "user_id": user, **extra}) + "\n").encode()


def _write(path, lines, truncate: int = 0):
    data = gzip.compress(b"".join(lines))
    path.write_bytes(data[: len(data) - truncate] if truncate else data)


def test_parse_pseudonymize_and_count_bad_lines(tmp_path):
    lines = [
        _line("2026-11-27T00:00:00+09:00", user="usr_1", peer_id="usr_2", props={"premium": True}),
        _line("2026-11-27T23:59:59.5+09:00", event="session_start", user="usr_3"),
        _line("2026-11-26T23:59:59+09:00", user="usr_4"),  # the day before: out of day
        b'{"ts": "2026-11-27T10:00:00+09:00", "event": "match"\n',  # truncated JSON
        b'{"ts": "2026-11-27T10:00:00+09:00", "event": "match"}\n',  # no user_id
        b"\xff\xfe not utf-8\n",
    ] + [_line("2026-11-27T12:00:00+09:00", user=f"usr_{i}") for i in range(400)]
    _write(tmp_path / "2026-11-27.jsonl.gz", lines)
    df, counts = fetch_events(
        str(tmp_path / "{date}.jsonl.gz"), day=DAY, timezone="Asia/Seoul", hmac_key=KEY
    )
    assert counts["lines"] == 406 and counts["bad"] == 3 and counts["out_of_day"] == 1
    assert len(df) == 402
    first = df.iloc[0]
    assert first["user_pid"] == pseudonymize_one("usr_1", KEY)
    assert first["peer_pid"] == pseudonymize_one("usr_2", KEY)
    assert bool(first["premium"]) is True
    assert str(first["ts"]) == "2026-11-26 15:00:00+00:00"
    assert df.iloc[1]["peer_pid"] is None or str(df.iloc[1]["peer_pid"]) in ("None", "<NA>", "nan")
    assert not any("usr_" in str(v) for v in df.to_numpy().ravel())


def test_too_many_bad_lines_fail_with_clear_message(tmp_path):
    lines = [_line("2026-11-27T12:00:00+09:00")] * 10 + [b"{broken\n"] * 2
    _write(tmp_path / "2026-11-27.jsonl.gz", lines)
    with pytest.raises(SourceError, match=r"logs for 2026-11-27: 2 of 12 lines are malformed"):
        fetch_events(
            str(tmp_path / "{date}.jsonl.gz"),
            day=DAY,
            timezone="Asia/Seoul",
            hmac_key=KEY,
            max_bad_fraction=0.01,
        )


def test_truncated_gzip_keeps_good_lines(tmp_path):
    lines = [_line("2026-11-27T12:00:00+09:00", user=f"usr_{i}") for i in range(2000)]
    _write(tmp_path / "2026-11-27.jsonl.gz", lines, truncate=30)
    df, counts = fetch_events(
        str(tmp_path / "{date}.jsonl.gz"), day=DAY, timezone="Asia/Seoul", hmac_key=KEY
    )
    assert counts["truncated_files"] == 1
    assert 1900 < len(df) < 2000
    assert counts["lines"] - (counts["bad"] - 1) == len(df)  # every line read is kept or counted


def test_missing_file_names_the_day_and_the_fix(tmp_path):
    with pytest.raises(SourceError, match="logs for 2026-11-27: no file matches.*Fix"):
        fetch_events(
            str(tmp_path / "{date}.jsonl.gz"), day=DAY, timezone="Asia/Seoul", hmac_key=KEY
        )
