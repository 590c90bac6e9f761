"""The Slack report: Block Kit limits, totals, posting through the real WebClient to the fake."""

from __future__ import annotations

import json
import math
import pathlib
import types
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest
from slack_sdk.http_retry import builtin_handlers

from adperf.errors import SourceError, TransientSourceError
from adperf.sandbox.fake_slack import FakeSlack
from adperf.sinks.slack import build_slack_message, post_message, write_outbox

TOKEN = "xoxb-test-SECRET-token"
DAY = "2026-11-27"
RECON = {"total_payments": 2000.0, "attributed": 1500.0, "organic": 400.0, "unattributed": 100.0}


def _campaign(cid: str, name: str, spend: float, revenue: float, installs: int,
              platform: str = "facebook", pltv: float = 0.0) -> dict[str, Any]:  # fmt: skip
    return {
        "date": DAY,
        "platform": platform,
        "campaign_id": cid,
        "campaign_name": name,
        "spend": spend,
        "impressions": 1000,
        "clicks": 50,
        "installs": installs,
        "cpi": spend / installs if installs else math.nan,
        "payers": 3,
        "revenue": revenue,
        "roas": revenue / spend if spend else math.nan,
        "assisted_revenue": 0.0,
        "pltv": pltv,
        "proas": pltv / spend if spend else math.nan,
    }


def _three_campaigns() -> pd.DataFrame:
    return pd.DataFrame(
        [
            _campaign("120212345678901234", "봄 세일 <VIP> & 친구", 1234.5, 2469.0, 100, pltv=3000),
            _campaign("20000000001", "Search KR", 1000.25, 500.125, 50, "google_ads", pltv=800),
            _campaign("organic", "organic", 0.0, 300.0, 40, "organic"),
        ]
    )


def _actions(n_scale: int = 1, n_pause: int = 1, n_hold: int = 1, reason: str = "") -> pd.DataFrame:
    rows = []
    for action, n in (("scale", n_scale), ("pause", n_pause), ("hold", n_hold)):
        for i in range(n):
            rows.append(
                {
                    "date": DAY,
                    "platform": "facebook",
                    "level": "campaign",
                    "object_id": f"{action}-{i}",
                    "object_name": f"{action} campaign {i}",
                    "action": action,
                    "reason": reason or f"ROAS {action} rule {i}",
                    "roas": 2.0 if action == "scale" else 0.1,
                    "proas": math.nan,
                    "spend": 100.0 + i,
                }
            )
    return pd.DataFrame(rows)


def _texts(message: dict[str, Any]) -> str:
    return json.dumps(message["blocks"], ensure_ascii=False)


def _assert_within_slack_limits(message: dict[str, Any]) -> None:
    blocks = message["blocks"]
    assert 0 < len(blocks) <= 50
    for block in blocks:
        if block["type"] == "header":
            assert len(block["text"]["text"]) <= 150
        if block["type"] == "section":
            if "text" in block:
                assert len(block["text"]["text"]) <= 3000
            assert len(block.get("fields", [])) <= 10
            assert all(len(f["text"]) <= 2000 for f in block.get("fields", []))
        if block["type"] == "context":
            assert 1 <= len(block["elements"]) <= 10
    json.dumps(message)  # serializable as is


def test_message_with_three_campaigns() -> None:
    message = build_slack_message(
        day=DAY,
        currency="USD",
        campaigns=_three_campaigns(),
        actions=_actions(),
        reconciliation=RECON,
        notes=["Facebook restated 2026-11-25"],
    )
    _assert_within_slack_limits(message)
    blocks = message["blocks"]
    assert blocks[0] == {
        "type": "header",
        "text": {"type": "plain_text", "text": f"adperf — {DAY}"},
    }
    totals = json.dumps(blocks[1], ensure_ascii=False)
    assert "2,234.75 USD" in totals  # 1234.5 + 1000.25, organic spend excluded
    assert "150 paid · 40 organic" in totals
    assert "14.90 USD" in totals  # CPI = 2234.75 / 150
    assert "2,969.12 USD" in totals  # paid revenue 2469 + 500.125
    assert "133%" in totals  # ROAS = 2969.125 / 2234.75
    assert "170%" in totals  # pROAS = 3800 / 2234.75
    text = _texts(message)
    # Names are escaped for mrkdwn; the best campaign is listed first.
    assert "봄 세일 &lt;VIP&gt; &amp; 친구" in text
    assert text.index("봄 세일") < text.index("Search KR")
    assert "scale campaign 0" in text and "pause campaign 0" in text
    assert "hold campaign" not in text
    assert "ROAS scale rule 0" in text
    assert "Unattributed revenue: 5.0% of payments" in text
    assert "Facebook restated 2026-11-25" in text
    assert "2,234.75 USD" in message["text"]


def test_message_with_300_campaigns_stays_within_limits() -> None:
    campaigns = pd.DataFrame(
        [
            _campaign(f"1202{i:014d}", f"캠페인 {'긴 이름 ' * 30}{i}", 100.0 + i, float(i), 10)
            for i in range(300)
        ]
    )
    long_reason = "ROAS below target for 7 days, " * 40
    message = build_slack_message(
        day=DAY,
        currency="KRW",
        campaigns=campaigns,
        actions=_actions(n_scale=150, n_pause=150, n_hold=300, reason=long_reason),
        reconciliation=RECON,
        notes=[f"note {i}" for i in range(25)],
    )
    _assert_within_slack_limits(message)
    text = _texts(message)
    scale = next(b["text"]["text"] for b in message["blocks"] if "*Scale* (150)" in str(b))
    listed = scale.count("\n• ")
    # Long reasons fill the section before 10 lines: the cut is by size, and nothing is lost.
    assert 1 <= listed < 10
    assert scale.endswith(f"… and {150 - listed} more")
    assert "… and 17 more notes" in text  # 1 share element + 8 notes + the "more" element
    assert "(300 with spend)" in text
    assert "74,850 KRW" in json.dumps(message["blocks"][1], ensure_ascii=False)  # no decimals
    assert len(message["text"]) <= 1000


def test_campaigns_without_roas_are_not_ranked() -> None:
    campaigns = pd.DataFrame(
        [
            _campaign("1", "has roas", 10.0, 20.0, 1),
            _campaign("2", "no spend", 0.0, 5.0, 1),
            {**_campaign("3", "nan roas", 10.0, 0.0, 1), "roas": math.nan},
        ]
    )
    message = build_slack_message(
        day=DAY, currency="USD", campaigns=campaigns, actions=_actions(0, 0, 0),
        reconciliation=RECON, notes=[],
    )  # fmt: skip
    text = _texts(message)
    assert "has roas" in text
    assert "no spend" not in text and "nan roas" not in text
    assert "No scale or pause recommendations" in text


def test_undefined_totals_show_na_not_zero() -> None:
    campaigns = pd.DataFrame([_campaign("organic", "organic", 0.0, 300.0, 40, "organic")])
    message = build_slack_message(
        day=DAY, currency="USD", campaigns=campaigns, actions=_actions(0, 0, 0),
        reconciliation={"total_payments": 0.0, "attributed": 0.0, "organic": 0.0,
                        "unattributed": 0.0},
        notes=[],
    )  # fmt: skip
    totals = json.dumps(message["blocks"][1])
    assert "*CPI*\\nn/a" in totals and "*ROAS*\\nn/a" in totals
    assert "No campaign had spend" in _texts(message)
    assert "Unattributed revenue: n/a" in _texts(message)


def test_missing_ltv_is_na_not_zero() -> None:
    campaigns = _three_campaigns().assign(pltv=None, proas=None)
    message = build_slack_message(
        day=DAY, currency="USD", campaigns=campaigns, actions=_actions(0, 0, 0),
        reconciliation=RECON, notes=[],
    )  # fmt: skip
    totals = json.dumps(message["blocks"][1])
    assert "*pROAS*\\nn/a" in totals
    assert "*ROAS*\\n133%" in totals


# --- posting -----------------------------------------------------------------------------------


@pytest.fixture()
def slack() -> Iterator[FakeSlack]:
    fake = FakeSlack(TOKEN, channels={"#adperf", "C0123ABCD"})
    fake.base_url = fake.start()  # type: ignore[attr-defined]
    yield fake
    fake.stop()


@pytest.fixture()
def message() -> dict[str, Any]:
    return build_slack_message(
        day=DAY, currency="USD", campaigns=_three_campaigns(), actions=_actions(),
        reconciliation=RECON, notes=[],
    )  # fmt: skip


def test_post_through_webclient(slack: FakeSlack, message: dict[str, Any]) -> None:
    result = post_message(message, token=TOKEN, channel="C0123ABCD", base_url=slack.base_url)  # type: ignore[attr-defined]
    assert result == {"channel": "C0123ABCD", "ts": "1732700000.000100"}
    assert len(slack.messages) == 1
    posted = slack.messages[0]
    assert posted["channel"] == "C0123ABCD"
    assert posted["blocks"] == message["blocks"]
    assert posted["text"] == message["text"]
    assert slack.requests_seen[0]["authorized"] is True


def test_429_then_success_posts_exactly_once(
    slack: FakeSlack, message: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    waits: list[float] = []
    # slack-sdk's RateLimitErrorRetryHandler sleeps Retry-After (+ jitter) via its module's `time`.
    monkeypatch.setattr(builtin_handlers, "time", types.SimpleNamespace(sleep=waits.append))
    slack.inject_errors([{"status": 429, "retry_after": 1}])
    result = post_message(message, token=TOKEN, channel="#adperf", base_url=slack.base_url)  # type: ignore[attr-defined]
    assert [r["status"] for r in slack.requests_seen] == [429, 200]
    assert len(slack.messages) == 1
    assert result["ts"] == "1732700000.000100"
    assert len(waits) == 1 and 1.0 <= waits[0] < 2.0


def test_rate_limited_beyond_retries_is_transient(
    slack: FakeSlack, message: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(builtin_handlers, "time", types.SimpleNamespace(sleep=lambda s: None))
    slack.inject_errors([{"status": 429, "retry_after": 0}] * 10)
    with pytest.raises(TransientSourceError):
        post_message(message, token=TOKEN, channel="#adperf", base_url=slack.base_url, day=DAY)  # type: ignore[attr-defined]
    assert len(slack.requests_seen) == 4  # one try and three retries
    assert slack.messages == []


def test_invalid_token_is_a_clear_error(slack: FakeSlack, message: dict[str, Any]) -> None:
    wrong = "xoxb-wrong-DO-NOT-LEAK"
    with pytest.raises(SourceError) as info:
        post_message(message, token=wrong, channel="#adperf", base_url=slack.base_url, day=DAY)  # type: ignore[attr-defined]
    text = str(info.value)
    assert "invalid_auth" in text and "ADPERF_SLACK_TOKEN" in text and DAY in text
    assert wrong not in text and TOKEN not in text
    assert slack.messages == []


def test_unknown_channel_is_a_clear_error(slack: FakeSlack, message: dict[str, Any]) -> None:
    with pytest.raises(SourceError) as info:
        post_message(message, token=TOKEN, channel="#nope", base_url=slack.base_url)  # type: ignore[attr-defined]
    assert "channel '#nope' not found" in str(info.value)
    assert "[slack] channel" in str(info.value)


def test_not_in_channel_is_a_clear_error(slack: FakeSlack, message: dict[str, Any]) -> None:
    slack.inject_errors([{"error": "not_in_channel"}])
    with pytest.raises(SourceError) as info:
        post_message(message, token=TOKEN, channel="#adperf", base_url=slack.base_url)  # type: ignore[attr-defined]
    assert "invite the app" in str(info.value)


def test_fake_rejects_oversized_blocks(slack: FakeSlack) -> None:
    # The fake enforces Block Kit limits, so the posting tests would catch a limit regression.
    too_many = {"text": "x", "blocks": [{"type": "divider"}] * 51}
    with pytest.raises(SourceError) as info:
        post_message(too_many, token=TOKEN, channel="#adperf", base_url=slack.base_url)  # type: ignore[attr-defined]
    assert "invalid_blocks" in str(info.value)


def test_300_campaign_message_is_accepted_by_the_fake(slack: FakeSlack) -> None:
    campaigns = pd.DataFrame(
        [_campaign(f"{i}", "x" * 200, 10.0 + i, float(i), 1) for i in range(300)]
    )
    big = build_slack_message(
        day=DAY, currency="USD", campaigns=campaigns, actions=_actions(200, 200, 0),
        reconciliation=RECON, notes=["n"] * 50,
    )  # fmt: skip
    post_message(big, token=TOKEN, channel="#adperf", base_url=slack.base_url)  # type: ignore[attr-defined]
    assert len(slack.messages) == 1


# --- outbox ------------------------------------------------------------------------------------


def test_outbox_write_is_atomic_json(tmp_path: pathlib.Path, message: dict[str, Any]) -> None:
    outbox = tmp_path / "outbox"
    path = write_outbox(message, outbox, DAY)
    assert path == outbox / f"slack-{DAY}.json"
    assert json.loads(path.read_text(encoding="utf-8")) == message
    assert "봄 세일" in path.read_text(encoding="utf-8")  # UTF-8, not \u escapes
    assert sorted(p.name for p in outbox.iterdir()) == [f"slack-{DAY}.json"]

    # A failed rewrite leaves the previous file intact and no temp file behind.
    with pytest.raises(TypeError):
        write_outbox({"text": "new", "blocks": [object()]}, outbox, DAY)
    assert json.loads(path.read_text(encoding="utf-8")) == message
    assert sorted(p.name for p in outbox.iterdir()) == [f"slack-{DAY}.json"]

    # Re-running replaces, never duplicates.
    write_outbox({"text": "again", "blocks": []}, outbox, DAY)
    assert json.loads(path.read_text(encoding="utf-8"))["text"] == "again"
    assert len(list(outbox.iterdir())) == 1


def test_outbox_rejects_a_day_that_is_not_a_date(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ValueError):
        write_outbox({"text": "x", "blocks": []}, tmp_path, "../escape")
