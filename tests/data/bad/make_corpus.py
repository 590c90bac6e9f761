"""Write the bad-input corpus of tests/faults/test_bad_input.py (python make_corpus.py [DIR]).

Deterministic: the committed files are its output, and a test checks they still are. Every id
is made up (u-good-1, ...); the day is 2026-11-20 in Asia/Seoul.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

DAY = "2026-11-20"


def _event(ts: str, user: str, peer: str | None = "u-peer-1") -> str:
    props = {"premium": True}
    return json.dumps(
        {"ts": ts, "event": "match", "user_id": user, "peer_id": peer, "props": props}
    )


# Six good events of the day (Seoul), used by every log case.
GOOD = [_event(f"{DAY}T1{k}:00:00+09:00", f"u-good-{k}") for k in range(6)]


def _gzip(text: bytes) -> bytes:
    # mtime=0: the same bytes every time.
    return gzip.compress(text, mtime=0)


def logs() -> dict[str, bytes]:
    """One folder per case: logs/<case>/2026-11-20.jsonl[.gz]."""
    lines = "\n".join(GOOD).encode() + b"\n"
    # Two gzip members (an appended rotation); the second is cut in the middle.
    more = _gzip("\n".join(GOOD).replace("u-good", "u-more").encode() + b"\n")
    return {
        # the first member's lines survive; the cut rest counts as one bad line
        f"truncated_gzip/{DAY}.jsonl.gz": _gzip(lines) + more[: len(more) // 2],
        f"invalid_json/{DAY}.jsonl": lines + b'{"ts": "2026-11-20T12:00:00+09:00", "event": \n',
        f"bad_utf8/{DAY}.jsonl": lines
        + b'{"ts": "2026-11-20T12:00:00+09:00", "event": "match", "user_id": "u-\xff\xfe"}\n',
        f"timestamps/{DAY}.jsonl": lines
        + (_event("2099-01-01T00:00:00+09:00", "u-future") + "\n").encode()
        + (_event("1970-01-01T00:00:00+00:00", "u-past") + "\n").encode(),
        f"duplicates/{DAY}.jsonl": lines + (GOOD[0] + "\n" + GOOD[0] + "\n").encode(),
    }


# id,user_id,amount,currency,kind,created_at (UTC); empty = NULL. Good rows: 1, 2, 3, 9.
PAYMENTS = [
    ("1", "u-good-1", "9.9900", "USD", "purchase", "2026-11-20 01:00:00"),
    ("2", "u-good-2", "4.9900", "USD", "purchase", "2026-11-20 02:00:00"),
    ("3", "u-good-1", "4.9900", "KRW", "refund", "2026-11-20 03:00:00"),
    ("4", "", "1.0000", "USD", "purchase", "2026-11-20 04:00:00"),
    ("5", "u-good-3", "", "USD", "purchase", "2026-11-20 05:00:00"),
    ("6", "u-good-3", "2.0000", "XYZ", "purchase", "2026-11-20 06:00:00"),
    ("7", "u-good-3", "2.0000", "", "purchase", "2026-11-20 07:00:00"),
    ("8", "u-good-3", "2.0000", "USD", "gift", "2026-11-20 08:00:00"),
    ("9", "u-good-4", "3.0000", "USD", "purchase", "2026-11-20 09:00:00"),
    ("9", "u-good-4", "3.0000", "USD", "purchase", "2026-11-20 09:00:00"),
]
NEGATIVE = [("10", "u-good-5", "-5.0000", "USD", "purchase", "2026-11-20 10:00:00")]

HEADER = [
    "AppsFlyer ID",
    "Customer User ID",
    "Install Time",
    "Media Source",
    "Campaign",
    "Campaign ID",
    "Adset",
    "Adset ID",
    "Ad",
    "Ad ID",
    "Country Code",
    "Platform",
]


def _mmp_row(k: int, name: str = "Spring sale") -> list[str]:
    return [
        f"af-{k}",
        f"u-good-{k}",
        f"{DAY} 0{k}:15:00",
        "Facebook Ads",
        name,
        "120200000000000001",
        "Adset A",
        "120200000000000002",
        "Ad A",
        f"12020000000000001{k}",
        "kr",
        "android",
    ]


def _csv(rows: list[list[str]]) -> str:
    import csv
    import io

    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerows(rows)
    return out.getvalue()


def mmp() -> dict[str, bytes]:
    """MMP installs reports (attributed); each has the same three installs where it parses."""
    rows = [_mmp_row(k) for k in (1, 2, 3)]
    reordered = [HEADER[::-1], *[r[::-1] for r in rows]]
    extra = [[*HEADER, "Event Value"], *[[*r, '{"a": 1}'] for r in rows]]
    newline = [HEADER, *[_mmp_row(k, "Spring\nsale, 2026") for k in (1, 2, 3)]]
    missing = [HEADER[:2] + HEADER[3:], *[r[:2] + r[3:] for r in rows]]
    return {
        "mmp/bom.csv": b"\xef\xbb\xbf" + _csv([HEADER, *rows]).encode(),
        "mmp/reordered.csv": _csv(reordered).encode(),
        "mmp/extra_column.csv": _csv(extra).encode(),
        "mmp/embedded_newline.csv": _csv(newline).encode(),
        "mmp/missing_column.csv": _csv(missing).encode(),
        "mmp/ragged_row.csv": _csv([HEADER, *rows, rows[0][:5]]).encode(),
    }


def payments() -> dict[str, bytes]:
    header = "id,user_id,amount,currency,kind,created_at\n"
    return {
        "payments/payments.csv": (header + "".join(",".join(r) + "\n" for r in PAYMENTS)).encode(),
        "payments/negative.csv": (header + "".join(",".join(r) + "\n" for r in NEGATIVE)).encode(),
    }


def corpus() -> dict[str, bytes]:
    """Every file of the corpus by relative path."""
    return {**{f"logs/{k}": v for k, v in logs().items()}, **mmp(), **payments()}


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent
    for rel, data in corpus().items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


if __name__ == "__main__":
    main()
