"""Pure operating helpers: secret scrubbing, shard counts, alert messages."""

from __future__ import annotations

import pytest

from adperf.ops import build_alert_message, scrub


@pytest.mark.parametrize(
    ("text", "leaked"),
    [
        ("slack said invalid_auth for xoxb-1234-5678-abcdef", "xoxb-1234-5678-abcdef"),
        ("graph: token EAABsbCS1iHgBAKZCZCZA expired", "EAABsbCS1iHgBAKZCZCZA"),
        ("mmp: HTTP 401 (api_token=s3cr3t-value)", "s3cr3t-value"),
        ("payments: cannot connect to mysql+pymysql://adperf:hunter22@db/prod", "hunter22"),
        ("user 8812345678 has no install", "8812345678"),
        ("pid 9f86d081884c7d659a2feaa0c55ad015 twice", "9f86d081884c7d659a2feaa0c55ad015"),
        ("Authorization: Bearer abc.def.ghi", "abc.def.ghi"),
        ("mail jane.doe@example.com bounced", "jane.doe@example.com"),
    ],
)
def test_scrub_removes_secrets_and_raw_ids(text: str, leaked: str) -> None:
    out = scrub(text)
    assert leaked not in out and "***" in out


def test_scrub_removes_known_secret_values_and_keeps_the_rest() -> None:
    out = scrub("logs for 2026-11-20: key was plainword-secret", ["plainword-secret"])
    assert out == "logs for 2026-11-20: key was ***"


def test_alert_kinds_read_differently() -> None:
    failed = build_alert_message(
        kind="failed", task="Payments", day="2026-11-20", error_class="SourceError", message="x"
    )
    waiting = build_alert_message(
        kind="not_ready", task="Installs", day="2026-11-20", error_class="DataNotReady", message="y"
    )
    assert failed["text"].startswith(":x: adperf: Payments failed for 2026-11-20")
    assert "waiting for data" in waiting["text"] and "failed" not in waiting["text"]
    with pytest.raises(ValueError):
        build_alert_message(kind="meh", task="t", day=None, error_class="E", message="m")
