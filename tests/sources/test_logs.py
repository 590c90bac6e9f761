import datetime as dt
import gzip
import json

import pandas as pd
import pytest

from adperf import lake
from adperf.errors import SourceError
from adperf.pseudonym import pseudonymize_one
from adperf.sources.logs import (
    MATCH_EDGES,
    DayEvents,
    Piece,
    edges_per_pair,
    fetch_events,
    line_aligned,
    merge_shard_partitions,
    plan_pieces,
    shard_folder,
    write_day,
)

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
    keys = ("bad", "out_of_day", "other_events", "duplicates")
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


def _shard_day(tmp_path, pattern, shards, root=None, **kw):
    """The day read by `shards` shards into a lake and merged there, as the pipeline's
    EventLogsShard and EventLogs tasks do: (events, counts, the shards' events, the day's
    match edges, how the merge went)."""
    root = tmp_path / "lake" if root is None else root
    for shard in range(shards):
        with DayEvents(
            str(tmp_path / pattern),
            day=DAY,
            timezone="Asia/Seoul",
            hmac_key=KEY,
            shard=shard,
            shards=shards,
            **kw,
        ) as ev:
            write_day(root, ev, key_version="1")
    how = merge_shard_partitions(root, DAY, shards, key_version="1", **kw)
    iso = DAY.isoformat()
    parts = [
        lake.read_arrow(root, shard_folder("events", k, shards), "date", iso) for k in range(shards)
    ]
    df = lake.read_arrow(root, "events", "date", iso, key_version="1").to_pandas()
    df["premium"] = df["premium"].astype("boolean")
    meta = lake.read_meta(root, "events", "date", iso)
    merged = {
        k: meta[k]
        for k in (
            "lines",
            "bad",
            "out_of_day",
            "other_events",
            "duplicates",
            "files",
            "truncated_files",
        )
    }
    assert meta["rows"] == len(df) and meta["pseudonym_key_version"] == "1"
    edges = lake.read_arrow(root, MATCH_EDGES, "date", iso, key_version="1")
    return df, merged, parts, edges, how


def test_plan_pieces_cut_plain_files_by_bytes_and_never_a_gzip(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(b"x" * 1000)
    (tmp_path / "b.jsonl.gz").write_bytes(b"y" * 600)
    (tmp_path / "c.jsonl").write_bytes(b"z" * 700)
    files = sorted(tmp_path.iterdir())
    # Cuts at 575 (in a), 1150 (in b, nearer its start at 1000: moved there), 1725 (in c).
    assert plan_pieces(files, 4) == [
        [Piece(files[0], 0, 575)],
        [Piece(files[0], 575, None)],
        [Piece(files[1]), Piece(files[2], 0, 125)],
        [Piece(files[2], 125, None)],
    ]
    # Cuts at 766 (in a) and 1533 (in b, nearer its end at 1600: moved there).
    assert plan_pieces(files, 3) == [
        [Piece(files[0], 0, 766)],
        [Piece(files[0], 766, None), Piece(files[1])],
        [Piece(files[2])],
    ]
    for n in (1, 2, 3, 5, 9):
        plan = plan_pieces(files, n)
        assert len(plan) == n
        gz = [p for shard in plan for p in shard if p.path == files[1]]
        assert gz == [Piece(files[1])]  # whole, in one shard


def test_line_aligned_ranges_give_each_line_to_the_shard_it_starts_in(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(b"aaaa\nbbbb\ncccc\n")  # lines start at 0, 5, 10
    assert line_aligned(path, 0, 3) == (0, 5)  # ends mid-line: finishes it
    assert line_aligned(path, 3, 8) == (5, 10)  # starts mid-line: skips to the next
    assert line_aligned(path, 5, 10) == (5, 10)  # on line starts: as is
    assert line_aligned(path, 6, 8) == (10, 10)  # inside one line: nothing
    assert line_aligned(path, 12, None) == (15, 15)


@pytest.mark.parametrize("shards", [2, 3, 4, 7, 40])
def test_n_shards_give_exactly_the_rows_pseudonyms_and_counts_of_one(tmp_path, shards):
    # Plain files cut anywhere (long lines, a corrupt one, a repeat in another shard), gzips
    # whole, out-of-day and other events.
    body = [
        _line(
            f"2026-11-27T12:{i // 60 % 60:02d}:{i % 60:02d}+09:00",
            user=f"usr_{i % 37}",
            peer_id=f"usr_{(i * 7) % 41}",
            props={"premium": i % 3 == 0, "pad": "p" * (i % 50)},
        )
        for i in range(300)
    ]
    body[120] = b'{"ts": "2026-11-27T10:00:00+09:00", "event": "ma\n'  # corrupt line
    body[200] = _line("2026-11-28T12:00:00+09:00")  # out of day
    body[210] = _line("2026-11-27T12:00:00+09:00", event="session_start")
    (tmp_path / "2026-11-27-a.jsonl").write_bytes(b"".join(body[:150]) + body[3])  # repeat
    _write(tmp_path / "2026-11-27-b.jsonl.gz", body[150:180])
    (tmp_path / "2026-11-27-c.jsonl").write_bytes(b"".join(body[180:]) + body[3] + body[250])
    pattern = "2026-11-27-*"
    whole, counts = fetch_events(
        str(tmp_path / pattern), day=DAY, timezone="Asia/Seoul", hmac_key=KEY, max_bad_fraction=0.1
    )
    assert counts["duplicates"] == 3 and counts["bad"] == 1 and counts["out_of_day"] == 1
    assert counts["lines"] == 303 and len(whole) == 297 and _balanced(counts, len(whole))
    df, merged, parts, edges, how = _shard_day(tmp_path, pattern, shards, max_bad_fraction=0.1)
    assert how == "rewritten"  # body[3] is in two shards: the merge reads every row
    pd.testing.assert_frame_equal(df, whole)
    assert merged == counts
    with DayEvents(
        str(tmp_path / pattern), day=DAY, timezone="Asia/Seoul", hmac_key=KEY, max_bad_fraction=0.1
    ) as ev:
        list(ev.batches())
        assert edges.equals(ev.edges.table())  # the same rows, in the same order
    # A self-match partners nobody (repeated pairs: tests/transform/test_contribution.py).
    partnered = whole[whole["user_pid"] != whole["peer_pid"]]
    assert 250 < len(partnered) < len(whole)
    assert sum(edges["matches"].to_pylist()) == len(partnered)
    # body[3] opens the first shard and closes the last: a repeat only the merge can see.
    assert sum(p.num_rows for p in parts) > len(whole)
    assert sum(p.num_rows > 0 for p in parts) >= min(shards, 3)  # the work was split
    # A line straddling each cut was read once: the plain files were cut mid-line.
    files = sorted(tmp_path.glob(pattern))
    cuts = [p for shard in plan_pieces(files, shards) for p in shard if p.end is not None]
    assert cuts and any((p.path.read_bytes()[p.end - 1 : p.end] != b"\n") for p in cuts)


def test_the_merge_checks_the_share_of_bad_lines_on_the_whole_day(tmp_path):
    good = [_line("2026-11-27T12:00:00+09:00", user=f"usr_{i}") for i in range(50)]
    (tmp_path / "2026-11-27.jsonl").write_bytes(b"{bad\n" * 2 + b"".join(good))
    with pytest.raises(SourceError, match=r"2 of 52 lines are malformed"):
        _shard_day(tmp_path, "{date}.jsonl", 2, max_bad_fraction=0.03)
    # The first shard alone holds both bad lines (2 of 26 > 3%); the day is under: no error.
    df, merged, _, _, _ = _shard_day(tmp_path, "{date}.jsonl", 2, max_bad_fraction=0.05)
    assert len(df) == 50 and merged["bad"] == 2


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


@pytest.mark.parametrize("pair_in_both", [False, True], ids=["distinct-pairs", "pair-in-both"])
def test_shards_that_share_no_line_are_combined_file_by_file(tmp_path, pair_in_both):
    # Two plain files of equal size: shard 0 reads the first, shard 1 the second. No line is
    # in both; with `pair_in_both` one (user, peer) pair is matched in each shard.
    def line(i: int, peer: int) -> bytes:
        ts = f"2026-11-27T12:{i // 60 % 60:02d}:{i % 60:02d}+09:00"
        return _line(
            ts, user=f"usr_{i:04d}", peer_id=f"usr_{peer:04d}", props={"premium": i % 2 == 0}
        )

    first = [line(i, i + 1) for i in range(100)]
    second = [line(i, i + 1) for i in range(100, 200)]
    if pair_in_both:  # usr_0002 matches usr_0003 (premium) again, an hour later
        second[50] = line(2, 3).replace(b"T12:", b"T13:")
    (tmp_path / "2026-11-27-a.jsonl").write_bytes(b"".join(first))
    (tmp_path / "2026-11-27-b.jsonl").write_bytes(b"".join(second))
    pattern = "2026-11-27-*"
    files = sorted(tmp_path.glob(pattern))
    assert [p.path for p in sum(plan_pieces(files, 2), [])] == files  # a file per shard
    whole, counts = fetch_events(
        str(tmp_path / pattern), day=DAY, timezone="Asia/Seoul", hmac_key=KEY
    )
    df, merged, parts, edges, how = _shard_day(tmp_path, pattern, 2)
    assert how == "combined"
    pd.testing.assert_frame_equal(df, whole)
    assert merged == counts and [p.num_rows for p in parts] == [100, 100]
    with DayEvents(str(tmp_path / pattern), day=DAY, timezone="Asia/Seoul", hmac_key=KEY) as ev:
        list(ev.batches())
        one = ev.edges.table()
    # The shards' own edges, one after the other: a pair matched in both has a row in each.
    assert len(one) == 200 - pair_in_both and one["matches"].to_pylist()[2] == 1 + pair_in_both
    assert len(edges) == 200 and edges["matches"].to_pylist() == [1] * 200
    assert edges_per_pair(edges).equals(edges_per_pair(one))
    if not pair_in_both:
        assert edges.equals(one)
    # The day's events are the shards' own files, linked, not written again.
    folder = lake.partition_path(tmp_path / "lake", "events", "date", DAY.isoformat())
    shard0 = lake.partition_path(
        tmp_path / "lake", shard_folder("events", 0, 2), "date", DAY.isoformat()
    )
    assert sorted(f.name for f in folder.glob("part-*")) == ["part-0.parquet", "part-1.parquet"]
    assert (folder / "part-0.parquet").stat().st_ino == (shard0 / "part-0.parquet").stat().st_ino
    edge_files = lake.partition_path(tmp_path / "lake", MATCH_EDGES, "date", DAY.isoformat()).glob(
        "part-*"
    )
    assert len(list(edge_files)) == 2
