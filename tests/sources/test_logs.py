import datetime as dt
import gzip
import json

import pandas as pd
import pyarrow as pa
import pytest

from adperf.errors import SourceError
from adperf.pseudonym import pseudonymize_one
from adperf.sources.logs import fetch_events, shard_of

KEY = b"k"
DAY = dt.date(2026, 11, 27)


def _line(ts: str, event: str = "match", user: str = "usr_1", **extra: object) -> bytes:
    return (json.dumps({"ts": ts, "event": event, "user_id": user, **extra}) + "\n").encode()


def _write(path, lines, truncate: int = 0):
    data = gzip.compress(b"".join(lines))
    path.write_bytes(data[: len(data) - truncate] if truncate else data)


def _fetch(tmp_path, pattern="{date}.jsonl.gz", **kw):
    return fetch_events(str(tmp_path / pattern), day=DAY, timezone="Asia/Seoul", hmac_key=KEY, **kw)


def _balanced(counts, kept):
    keys = ("bad", "out_of_day", "other_events", "duplicates", "other_shards")
    return counts["lines"] == kept + sum(counts[k] for k in keys)


MALFORMED = [
    b'{"ts": "2026-11-27T10:00:00+09:00", "event": "match"\n',  # cut JSON
    b'{"ts": "2026-11-27T10:00:00+09:00", "event": "match"}\n',  # no user_id
    b'{"ts": "2026-11-27T10:00:00+09:00", "event": "match", "user_id": ""}\n',  # empty user_id
    b'{"ts": "2026-11-27T10:00:00+09:00", "event": "match", "user_id": "usr_\xff\xfe"}\n',  # UTF-8
    b"\xff\xfe not utf-8\n",
    b"[1, 2]\n",  # JSON, not an object
    b'{"ts": "yesterday", "event": "match", "user_id": "usr_9"}\n',  # ts no timestamp
    b'{"ts": 1795014000, "event": "match", "user_id": "usr_9"}\n',  # ts a number
]


def test_parse_pseudonymize_and_count_bad_lines(tmp_path):
    lines = [
        _line("2026-11-27T00:00:00+09:00", user="usr_1", peer_id="usr_2", props={"premium": True}),
        _line("2026-11-27T23:59:59.5+09:00", event="session_start", user="usr_3"),
        _line("2026-11-26T23:59:59+09:00", user="usr_4"),  # the day before: out of day
        _line("2026-11-27T15:00:00Z", user="usr_5"),  # 2026-11-28 00:00 KST: out of day
        *MALFORMED,
    ] + [_line("2026-11-27T12:00:00+09:00", user=f"usr_{i}") for i in range(1000)]
    _write(tmp_path / "2026-11-27.jsonl.gz", lines)
    df, counts = _fetch(tmp_path, events=None)
    assert counts["lines"] == 1012
    assert counts["bad"] == len(MALFORMED) and counts["out_of_day"] == 2
    assert len(df) == 1002 and _balanced(counts, len(df))
    first = df.iloc[0]
    assert first["user_pid"] == pseudonymize_one("usr_1", KEY)
    assert first["peer_pid"] == pseudonymize_one("usr_2", KEY)
    assert bool(first["premium"]) is True
    assert str(first["ts"]) == "2026-11-26 15:00:00+00:00"
    assert str(df.iloc[1]["ts"]) == "2026-11-27 14:59:59.500000+00:00"
    assert df.iloc[1]["event"] == "session_start"
    assert pd.isna(df.iloc[1]["peer_pid"]) and df["premium"].isna().sum() == 1001
    assert str(df["ts"].dtype) == "datetime64[us, UTC]"
    assert not any("usr_" in str(v) for v in df.to_numpy().ravel())

    # By default only the events adperf uses are kept; the others are counted.
    only, counts = _fetch(tmp_path)
    assert set(only["event"]) == {"match"} and len(only) == 1001
    assert counts["other_events"] == 1 and _balanced(counts, len(only))


def test_too_many_bad_lines_fail_with_clear_message(tmp_path):
    lines = [_line("2026-11-27T12:00:00+09:00", user=f"usr_{i}") for i in range(10)]
    lines += [b"{broken\n"] * 2
    _write(tmp_path / "2026-11-27.jsonl.gz", lines)
    with pytest.raises(SourceError, match=r"logs for 2026-11-27: 2 of 12 lines are malformed"):
        _fetch(tmp_path, max_bad_fraction=0.01)
    df, counts = _fetch(tmp_path, max_bad_fraction=0.2)
    assert len(df) == 10 and counts["bad"] == 2


def test_truncated_gzip_keeps_every_whole_line_before_the_cut(tmp_path):
    lines = [_line("2026-11-27T12:00:00+09:00", user=f"usr_{i}") for i in range(2000)]
    _write(tmp_path / "2026-11-27.jsonl.gz", lines, truncate=30)
    df, counts = _fetch(tmp_path)
    assert counts["truncated_files"] == 1
    assert 1900 < len(df) < 2000
    # The readable lines are a prefix, in order; the cut tail is one bad line.
    expected = [pseudonymize_one(f"usr_{i}", KEY) for i in range(len(df))]
    assert df["user_pid"].tolist() == expected
    assert counts["bad"] == 1 and _balanced(counts, len(df))


def test_several_files_multi_member_gzip_and_plain(tmp_path):
    member = gzip.compress(_line("2026-11-27T01:00:00+09:00", user="usr_a"))
    (tmp_path / "2026-11-27-a.jsonl.gz").write_bytes(
        member + gzip.compress(_line("2026-11-27T02:00:00+09:00", user="usr_b"))
    )
    (tmp_path / "2026-11-27-b.jsonl").write_bytes(
        _line("2026-11-27T03:00:00+09:00", user="usr_c") + b"{bad\n"
    )
    df, counts = _fetch(tmp_path, pattern="{date}-*.jsonl*", max_bad_fraction=0.5)
    assert counts["files"] == 2 and counts["lines"] == 4 and counts["bad"] == 1
    assert df["user_pid"].tolist() == [
        pseudonymize_one(u, KEY) for u in ("usr_a", "usr_b", "usr_c")
    ]


def test_shards_partition_the_users(tmp_path):
    lines = [
        _line("2026-11-27T12:00:00+09:00", user=f"usr_{i % 97}", peer_id=f"usr_{i % 13}")
        for i in range(600)
    ]
    _write(tmp_path / "2026-11-27.jsonl.gz", lines)
    whole, _ = _fetch(tmp_path)
    parts = []
    for shard in range(3):
        df, counts = _fetch(tmp_path, shard=shard, shards=3)
        assert _balanced(counts, len(df))
        assert 0 < len(df) < len(whole)
        pids = pa.array(df["user_pid"].tolist(), pa.string())
        assert set(shard_of(pids, 3)) == {shard}
        assert {int(p[:8], 16) % 3 for p in df["user_pid"]} == {shard}
        parts.append(df)
    users = [set(p["user_pid"]) for p in parts]
    assert not (users[0] & users[1]) and not (users[0] & users[2]) and not (users[1] & users[2])
    assert sum(len(p) for p in parts) == len(whole)
    assert set().union(*users) == set(whole["user_pid"])
    # The shard is the pseudonym's first 8 hex characters mod shards: stable everywhere.
    pid = pseudonymize_one("usr_5", KEY)
    assert shard_of(pa.array([pid]), 3)[0] == int(pid[:8], 16) % 3
    with pytest.raises(ValueError, match="shard 3 of 3"):
        _fetch(tmp_path, shard=3, shards=3)


def test_missing_file_names_the_day_and_the_fix(tmp_path):
    with pytest.raises(SourceError, match="logs for 2026-11-27: no file matches.*Fix"):
        _fetch(tmp_path)


def test_an_empty_event_list_counts_every_good_line_as_other_events(tmp_path):
    lines = [_line("2026-11-27T12:00:00+09:00", user=f"usr_{i}") for i in range(5)]
    _write(tmp_path / "2026-11-27.jsonl.gz", lines)
    df, counts = _fetch(tmp_path, events=())
    assert len(df) == 0 and counts["other_events"] == 5 and _balanced(counts, 0)
    assert list(df.columns) == ["date", "ts", "event", "user_pid", "peer_pid", "premium"]


@pytest.mark.parametrize("native", [True, False], ids=["compiled", "python"])
def test_small_batches_give_the_same_rows_and_each_id_one_pseudonym(tmp_path, monkeypatch, native):
    import adperf.pseudonym as pseudonym
    import adperf.sources.logs as logs

    if not native:
        monkeypatch.setattr(pseudonym, "_Native", None)
    lines = [
        _line(
            f"2026-11-27T12:{i // 60:02d}:{i % 60:02d}+09:00",
            user=f"usr_{i % 40}",
            peer_id=f"usr_{(i * 7) % 60}" if i % 3 else "",
        )
        for i in range(400)
    ]
    lines.insert(100, lines[99])  # a shipper's repeat, across a batch boundary below
    _write(tmp_path / "2026-11-27.jsonl.gz", lines)
    whole, counts = _fetch(tmp_path)
    monkeypatch.setattr(logs, "_BATCH_ROWS", 16)  # ids met again in later batches
    calls: list[int] = []
    real = pseudonym.IdPseudonymizer.hex
    monkeypatch.setattr(
        pseudonym.IdPseudonymizer,
        "hex",
        lambda self, ids: calls.append(len(ids)) or real(self, ids),
    )
    df, again = _fetch(tmp_path)
    assert len(calls) >= 2 * 25 and max(calls) <= 31  # user and peer of each ~16-row batch
    pd.testing.assert_frame_equal(df, whole)
    assert again == counts and counts["duplicates"] == 1 and len(df) == 400
    assert df["user_pid"].tolist() == [pseudonymize_one(f"usr_{i % 40}", KEY) for i in range(400)]
    assert [p if isinstance(p, str) else None for p in df["peer_pid"]] == [
        pseudonymize_one(f"usr_{(i * 7) % 60}", KEY) if i % 3 else None for i in range(400)
    ]


def test_kept_lines_are_checked_to_come_back_in_file_order(tmp_path, monkeypatch):
    import adperf.sources.logs as logs

    _write(
        tmp_path / "2026-11-27.jsonl.gz",
        [_line(f"2026-11-27T12:00:{i:02d}+09:00", user=f"usr_{i}") for i in range(20)],
    )
    # As if DuckDB handed the kept lines back in another order than it first listed them.
    monkeypatch.setattr(
        logs, "_KEPT", logs._KEPT.replace("WHERE status = 3", "WHERE status = 3 ORDER BY ts DESC")
    )
    with pytest.raises(RuntimeError, match="another order"):
        _fetch(tmp_path)
