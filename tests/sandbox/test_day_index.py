from adperf.sandbox.day_index import DayIndex

ROWS = [
    {"acc": "1", "date": "2026-11-03", "n": 0},
    {"acc": "2", "date": "2026-11-01", "n": 1},
    {"acc": "1", "date": "2026-11-01", "n": 2},
    {"acc": "1", "date": "2026-11-02", "n": 3},
    {"acc": 1, "date": "2026-11-01", "n": 4},  # account as a number: the same account
]


def _scan(acc: str, since: str, until: str) -> list[int]:
    return [
        r["n"]
        for r in ROWS
        if str(r["acc"]) == acc
        and (not since or since <= r["date"])
        and (not until or r["date"] <= until)
    ]


def test_select_equals_a_full_scan_in_the_rows_own_order() -> None:
    index = DayIndex(ROWS, account="acc")
    for acc in ("1", "2", "3"):
        for since, until in [
            ("2026-11-01", "2026-11-02"),
            ("2026-11-02", "2026-11-03"),
            ("2026-11-01", "2026-11-01"),
            ("2026-11-04", "2026-11-09"),
            ("", ""),
            ("2026-11-02", ""),
        ]:
            got = [r["n"] for r in index.select(acc, since, until)]
            assert got == _scan(acc, since, until), (acc, since, until)
    assert [r["n"] for r in index.select("1", "2026-11-01", "2026-11-03")] == [0, 2, 3, 4]
