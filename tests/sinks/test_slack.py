"""The Slack report: Block Kit limits, totals, posting through the real WebClient to the fake."""

from __future__ import annotations

import datetime as dt
import io
import json
import math
import pathlib
import re
import time
import types
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest
from slack_sdk.http_retry import builtin_handlers

from adperf.errors import SourceError, TransientSourceError
from adperf.sandbox.fake_slack import FakeSlack
from adperf.sinks.slack import (
    PostOutcomeUnknown,
    build_campaign_csv,
    build_slack_message,
    find_posted_report,
    post_message,
    publish_report,
    report_key,
    update_message,
    upload_files,
    write_outbox,
)

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


def _cohorts(d0: tuple[float, float], d7: tuple[float, float], as_of: str = DAY) -> pd.DataFrame:
    """cohort_roas rows as of `as_of`: paid D0 and D7 (revenue, spend), plus organic noise."""
    rows = [
        {"as_of": as_of, "platform": "facebook", "age_days": 0, "revenue": d0[0], "spend": d0[1]},
        {"as_of": as_of, "platform": "facebook", "age_days": 7, "revenue": d7[0], "spend": d7[1]},
        # Organic cohorts have no spend; their revenue must not count in paid ROAS.
        {"as_of": as_of, "platform": "organic", "age_days": 0, "revenue": 999.0, "spend": 0.0},
    ]
    for row in rows:
        row["campaign_id"] = str(row["platform"])
        age = dt.timedelta(days=int(row["age_days"]))
        row["cohort_date"] = (dt.date.fromisoformat(as_of) - age).isoformat()
    return pd.DataFrame(rows)


def test_message_with_three_campaigns() -> None:
    before = {"spend": 2000.0, "installs": 100.0, "cpi": 20.0, "revenue": 3000.0,
              "roas_d0": 0.10, "roas_d7": None, "proas": 1.5}  # fmt: skip
    message = build_slack_message(
        day=DAY,
        currency="USD",
        campaigns=_three_campaigns(),
        actions=_actions(),
        reconciliation=RECON,
        notes=["Facebook restated 2026-11-25"],
        cohorts=_cohorts(d0=(250.0, 1000.0), d7=(300.0, 200.0)),
        day_before=before,
        week_before=None,
        attachment="adperf-2026-11-27-campaigns.csv",
    )
    _assert_within_slack_limits(message)
    blocks = message["blocks"]
    assert blocks[0] == {
        "type": "header",
        "text": {"type": "plain_text", "text": f"adperf — {DAY} (Fri)"},
    }
    fields = {f["text"].split("\n")[0]: f["text"] for f in blocks[1]["fields"]}
    # 1234.5 + 1000.25, organic spend excluded; +11.7% against 2000 the day before.
    assert fields["*Spend*"] == "*Spend*\n2,234.75 USD\n+12% d/d · n/a w/w"
    assert fields["*Installs (paid)*"].startswith("*Installs (paid)*\n150 · 40 organic\n+50% d/d")
    assert fields["*CPI*"].startswith("*CPI*\n14.90 USD\n−26% d/d")  # 14.898 vs 20: −25.5%
    # paid revenue 2469 + 500.125; daily ROAS 2969.125 / 2234.75
    assert fields["*Revenue (paid cohorts)*"].startswith(
        "*Revenue (paid cohorts)*\n2,969.12 USD · ROAS 133%\n−1% d/d"
    )
    # D0 = 250 / 1000 (organic's 999 left out); 25% vs 10% is +15 points, not +150%.
    assert fields["*ROAS D0*"] == "*ROAS D0*\n25%\n+15 pp d/d · n/a w/w"
    assert fields["*ROAS D7*"] == "*ROAS D7*\n150%\nn/a d/d · n/a w/w"
    assert fields["*pROAS*"].startswith("*pROAS*\n170%\n+20 pp d/d")  # 3800 / 2234.75
    text = _texts(message)
    assert "vs 2026-11-26" in text and "vs 2026-11-20 (same weekday)" in text
    # Names are escaped for mrkdwn; the best campaign is listed first.
    assert "봄 세일 &lt;VIP&gt; &amp; 친구" in text
    assert text.index("봄 세일") < text.index("Search KR")
    assert "scale campaign 0" in text and "pause campaign 0" in text
    assert "hold campaign" not in text
    assert "ROAS scale rule 0" in text
    assert "All 3 campaigns and 3 actions" in text and "adperf-2026-11-27-campaigns.csv" in text
    assert "Unattributed revenue: 5.0% of payments" in text
    assert "Facebook restated 2026-11-25" in text
    assert "2,234.75 USD" in message["text"] and "+12% d/d" in message["text"]


def test_proas_interval_is_shown_when_the_model_gives_one() -> None:
    campaigns = _three_campaigns().assign(proas_low=[1.5, 0.6, None], proas_high=[2.1, 1.0, None])
    message = build_slack_message(
        day=DAY, currency="USD", campaigns=campaigns, actions=_actions(0, 0, 0),
        reconciliation=RECON, notes=[],
    )  # fmt: skip
    text = _texts(message)
    assert "pROAS 243% [150–210%]" in text  # 3000 / 1234.5
    assert "pROAS 80% [60–100%]" in text


def test_action_lines_show_the_probabilities() -> None:
    actions = _actions(1, 1, 0).assign(p_above=[0.93, 0.0], p_below=[0.01, 0.88])
    message = build_slack_message(
        day=DAY,
        currency="USD",
        campaigns=_three_campaigns(),
        actions=actions,
        reconciliation=RECON,
        notes=[],
        cohorts=_cohorts(d0=(250.0, 1000.0), d7=(300.0, 200.0)),
        day_before=None,
        week_before=None,
        attachment="adperf-2026-11-27-campaigns.csv",
    )
    text = _texts(message)
    assert "ROAS 200%, P(> scale) 93% · P(< pause) 1%) — ROAS scale rule 0" in text
    assert "ROAS 10%, P(> scale) 0% · P(< pause) 88%) — ROAS pause rule 0" in text
    # Without probabilities (actions of days before issue 18) the line is as it was.
    plain = _texts(
        build_slack_message(
            day=DAY,
            currency="USD",
            campaigns=_three_campaigns(),
            actions=_actions(1, 0, 0),
            reconciliation=RECON,
            notes=[],
            cohorts=_cohorts(d0=(250.0, 1000.0), d7=(300.0, 200.0)),
            day_before=None,
            week_before=None,
            attachment="adperf-2026-11-27-campaigns.csv",
        )
    )
    assert "ROAS 200%) — ROAS scale rule 0" in plain and "P(> scale)" not in plain


def test_campaign_csv_has_every_campaign_and_its_action() -> None:
    campaigns = pd.DataFrame(
        [_campaign(f"1202{i:014d}", f"캠페인 {i}", 100.0 + i, float(i), 10) for i in range(300)]
    )
    actions = _actions(0, 0, 0)
    actions = pd.DataFrame(
        [
            {
                **_actions(1, 0, 0).iloc[0].to_dict(),
                "object_id": "120200000000000007",
                "reason": "pROAS 1.80 over 1.30",
            }
        ]  # fmt: skip
    )
    data = build_campaign_csv(campaigns, actions)
    assert data.startswith(b"\xef\xbb\xbf")  # BOM: spreadsheets read the Korean names right
    table = pd.read_csv(io.BytesIO(data), dtype={"campaign_id": str}, encoding="utf-8-sig")
    assert len(table) == 300
    # 18-digit ids stay text (as numbers they would be rounded).
    assert set(table["campaign_id"]) == {f"1202{i:014d}" for i in range(300)}
    row = table[table["campaign_id"] == "120200000000000007"].iloc[0]
    assert row["action"] == "scale" and row["action_reason"] == "pROAS 1.80 over 1.30"
    assert row["campaign_name"] == "캠페인 7"
    assert table["action"].notna().sum() == 1
    assert table["spend"].iloc[0] == 399.0  # largest spend first


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
    assert "*CPI*\\nn/a" in totals and "ROAS n/a" in totals and "*ROAS D0*\\nn/a" in totals
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
    assert "ROAS 133%" in totals


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
    assert len(slack.messages) == 1
    posted = slack.messages[0]
    assert result == {"channel": "C0123ABCD", "ts": posted["ts"]}
    assert re.fullmatch(r"\d{10}\.\d{6}", result["ts"])  # Slack's seconds.microseconds
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
    assert result["ts"] == slack.messages[0]["ts"]
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
    [path] = write_outbox(message, outbox, DAY)
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


# --- exactly once: post, update, files in the thread ---------------------------------------


def _publish(
    slack: FakeSlack,
    message: dict[str, Any],
    content_hash: str,
    previous: dict[str, Any] | None,
    saved: list[dict[str, Any]],
    *,
    channel: str = "#adperf",
    token: str = TOKEN,
    forgotten: list[bool] | None = None,
) -> dict[str, Any]:
    return publish_report(
        message,
        [
            ("adperf-2026-11-27.png", b"\x89PNG fake", "chart"),
            ("c.csv", b"a,b\n1,2\n", "csv"),
        ],
        token=token,
        channel=channel,
        base_url=slack.base_url,  # type: ignore[attr-defined]
        day=DAY,
        content_hash=content_hash,
        previous=previous,
        save=lambda state: saved.append(dict(state)),
        forget=lambda: (forgotten if forgotten is not None else []).append(True),
    )


def test_publish_posts_then_uploads_files_into_the_thread(
    slack: FakeSlack, message: dict[str, Any]
) -> None:
    saved: list[dict[str, Any]] = []
    state = _publish(slack, message, "h1", None, saved)
    assert len(slack.messages) == 1 and slack.updates == []
    ts = slack.messages[0]["ts"]
    assert state["ts"] == ts and state["content_hash"] == "h1" and state["complete"] is True
    # Before the post: a pending marker with the day's key, which the post carries in metadata.
    assert saved[0]["key"] == report_key(DAY) == "adperf-report-2026-11-27"
    assert "ts" not in saved[0] and saved[0]["pending_since"] > 0
    assert slack.messages[0]["metadata"] == {
        "event_type": "adperf_report",
        "event_payload": {"date": DAY, "key": "adperf-report-2026-11-27"},
    }
    # The ts is saved before the upload: a failed upload can never lead to a second post.
    assert saved[1]["ts"] == ts and saved[1]["complete"] is False
    assert [f["filename"] for f in slack.files] == ["adperf-2026-11-27.png", "c.csv"]
    assert {f["thread_ts"] for f in slack.files} == {ts}
    assert slack.files[0]["content"] == b"\x89PNG fake"
    assert state["file_ids"] == [f["id"] for f in slack.files]
    paths = [r["path"] for r in slack.requests_seen]
    assert paths == [
        "/api/chat.postMessage",
        "/api/files.getUploadURLExternal",
        "/api/files.getUploadURLExternal",
        f"/upload/v1/{slack.files[0]['id']}",
        f"/upload/v1/{slack.files[1]['id']}",
        "/api/files.completeUploadExternal",
    ]

    # Same content again: nothing is sent at all.
    again = _publish(slack, message, "h1", state, saved)
    assert again == state and len(slack.requests_seen) == len(paths)


def test_changed_content_updates_the_same_message(
    slack: FakeSlack, message: dict[str, Any]
) -> None:
    saved: list[dict[str, Any]] = []
    first = _publish(slack, message, "h1", None, saved)
    restated = {**message, "text": "restated numbers"}
    second = _publish(slack, restated, "h2", first, saved)
    assert len(slack.messages) == 1  # updated, not reposted
    assert slack.messages[0]["text"] == "restated numbers"
    assert slack.updates[0]["ts"] == first["ts"]
    assert second["ts"] == first["ts"] and second["content_hash"] == "h2"
    assert second["updates"] == 1 and second["complete"] is True
    # The new chart and CSV go into the same thread, with a comment saying why.
    assert len(slack.files) == 4 and {f["thread_ts"] for f in slack.files} == {first["ts"]}
    assert "changed (restated data)" in slack.files[2]["initial_comment"]


def test_a_failed_upload_leaves_the_post_and_the_next_run_only_uploads(
    slack: FakeSlack, message: dict[str, Any]
) -> None:
    saved: list[dict[str, Any]] = []
    slack.inject_errors([{"method": "files.completeUploadExternal", "error": "missing_scope"}])
    with pytest.raises(SourceError) as info:
        _publish(slack, message, "h1", None, saved)
    assert "scope" in str(info.value) and "files:write" in str(info.value)
    marker = saved[-1]
    assert marker["ts"] == slack.messages[0]["ts"] and marker["complete"] is False
    state = _publish(slack, message, "h1", marker, saved)
    assert len(slack.messages) == 1 and slack.updates == []
    assert state["complete"] is True and len(slack.files) == 2


def test_a_deleted_message_is_posted_again(slack: FakeSlack, message: dict[str, Any]) -> None:
    saved: list[dict[str, Any]] = []
    stale = {"date": DAY, "delivery": "slack", "channel": "C0123ABCD", "ts": "1.000001",
             "content_hash": "old", "files_hash": "old", "complete": True}  # fmt: skip
    state = _publish(slack, message, "h2", stale, saved)
    assert len(slack.messages) == 1 and state["ts"] == slack.messages[0]["ts"] != "1.000001"
    assert state["updates"] == 0 and len(slack.files) == 2


def test_an_outbox_marker_is_posted_when_a_token_appears(
    slack: FakeSlack, message: dict[str, Any]
) -> None:
    outbox = {"date": DAY, "delivery": "outbox", "content_hash": "h1", "complete": True}
    state = _publish(slack, message, "h1", outbox, [])
    assert state["delivery"] == "slack" and len(slack.messages) == 1


def test_a_post_without_an_answer_is_never_resent_by_slack_sdk(
    slack: FakeSlack, message: dict[str, Any]
) -> None:
    # Slack posted, then the connection closed before the answer. slack-sdk's
    # ConnectionErrorRetryHandler would re-send it (a second post): not for chat.postMessage.
    slack.inject_errors([{"accept_then_drop": True}])
    with pytest.raises(PostOutcomeUnknown) as info:
        post_message(message, token=TOKEN, channel="#adperf", base_url=slack.base_url, day=DAY)  # type: ignore[attr-defined]
    assert info.value.repost_now is True and "may or may not be posted" in str(info.value)
    assert [r["error"] for r in slack.requests_seen] == ["accepted_then_dropped"]
    assert len(slack.messages) == 1


def test_a_dropped_connection_after_slack_posted_posts_once(
    slack: FakeSlack, message: dict[str, Any]
) -> None:
    slack.inject_errors([{"method": "chat.postMessage", "accept_then_drop": True}])
    saved: list[dict[str, Any]] = []
    state = _publish(slack, message, "h1", None, saved)
    assert len(slack.messages) == 1  # looked up and adopted, not posted again
    assert state["ts"] == slack.messages[0]["ts"] and state["complete"] is True
    assert [r["path"] for r in slack.requests_seen[:4]] == [
        "/api/chat.postMessage",
        "/api/conversations.list",  # '#adperf' is a name; conversations.history takes ids
        "/api/conversations.history",
        "/api/files.getUploadURLExternal",
    ]
    assert {f["thread_ts"] for f in slack.files} == {state["ts"]} and len(slack.files) == 2


def test_a_connection_dropped_before_slack_posted_posts_once(
    slack: FakeSlack, message: dict[str, Any]
) -> None:
    # Slack never saw the request: the look-up finds nothing, so it is posted (once) again.
    slack.inject_errors([{"method": "chat.postMessage", "drop": True}])
    state = _publish(slack, message, "h1", None, [], channel="C0123ABCD")
    assert [r["error"] for r in slack.requests_seen[:3]] == ["dropped", None, None]
    assert [r["path"] for r in slack.requests_seen[:3]] == [
        "/api/chat.postMessage",
        "/api/conversations.history",
        "/api/chat.postMessage",
    ]
    assert len(slack.messages) == 1 and state["ts"] == slack.messages[0]["ts"]


def test_a_5xx_not_found_keeps_the_marker_pending_and_does_not_repost(
    slack: FakeSlack, message: dict[str, Any]
) -> None:
    # A 5xx may come while Slack is still posting: nothing found now is no proof; the next run
    # looks again rather than risk a second message.
    slack.inject_errors([{"method": "chat.postMessage", "status": 500}])
    saved: list[dict[str, Any]] = []
    forgotten: list[bool] = []
    with pytest.raises(PostOutcomeUnknown) as info:
        _publish(slack, message, "h1", None, saved, forgotten=forgotten)
    assert info.value.repost_now is False
    assert [r["path"] for r in slack.requests_seen].count("/api/chat.postMessage") == 1
    assert len(saved) == 1 and "ts" not in saved[0] and forgotten == []
    # The next run finds the marker pending and nothing in the channel: it posts, once.
    state = _publish(slack, message, "h1", saved[0], saved)
    assert len(slack.messages) == 1 and state["ts"] == slack.messages[0]["ts"]


def _pending(channel: str, since: float) -> dict[str, Any]:
    return {"date": DAY, "delivery": "slack", "channel": channel, "key": report_key(DAY),
            "pending_since": since, "content_hash": "h1", "complete": False}  # fmt: skip


def test_a_pending_marker_adopts_the_post_found_on_the_second_history_page(
    slack: FakeSlack, message: dict[str, Any]
) -> None:
    since = time.time()
    # The run that posted was killed before its marker held the ts; 250 messages came since.
    meta = {"event_type": "adperf_report", "event_payload": {"date": DAY, "key": report_key(DAY)}}
    slack._post({**message, "channel": "C0123ABCD", "metadata": meta})
    report_ts = slack.messages[0]["ts"]
    for i in range(250):
        slack._post({"channel": "C0123ABCD", "text": f"chatter {i}", "metadata": {
            "event_type": "other_app", "event_payload": {"key": report_key(DAY)}}})  # fmt: skip
    saved: list[dict[str, Any]] = []
    state = _publish(slack, message, "h1", _pending("C0123ABCD", since), saved)
    history = [r for r in slack.requests_seen if r["path"] == "/api/conversations.history"]
    assert len(history) == 2  # 200 newest first, then the page with the report
    assert state["ts"] == report_ts and saved[0]["ts"] == report_ts
    assert len(slack.messages) == 251  # nothing posted
    assert [r["path"] for r in slack.requests_seen].count("/api/chat.postMessage") == 0
    assert {f["thread_ts"] for f in slack.files} == {report_ts}


def test_a_pending_marker_without_a_post_posts_once(
    slack: FakeSlack, message: dict[str, Any]
) -> None:
    # Killed after the pending marker, before chat.postMessage reached Slack.
    saved: list[dict[str, Any]] = []
    state = _publish(slack, message, "h1", _pending("#adperf", time.time()), saved)
    assert len(slack.messages) == 1 and state["ts"] == slack.messages[0]["ts"]
    again = _publish(slack, message, "h1", state, saved)
    assert len(slack.messages) == 1 and again["ts"] == state["ts"]


def test_a_token_without_history_scopes_fails_rather_than_risk_a_second_post(
    message: dict[str, Any],
) -> None:
    fake = FakeSlack(TOKEN, channels={"C0123ABCD"}, scopes={"chat:write", "files:write"})
    fake.base_url = fake.start()  # type: ignore[attr-defined]
    try:
        saved: list[dict[str, Any]] = []
        forgotten: list[bool] = []
        pending = _pending("C0123ABCD", time.time())
        with pytest.raises(SourceError) as info:
            _publish(fake, message, "h1", pending, saved, forgotten=forgotten)
        text = str(info.value)
        assert "missing_scope, needs channels:history" in text
        assert "groups:history" in text and "reinstall" in text and "not posted again" in text
        assert fake.messages == [] and saved == [] and forgotten == []  # the marker stays
        assert TOKEN not in text
    finally:
        fake.stop()


def test_a_refused_post_removes_its_pending_marker(
    slack: FakeSlack, message: dict[str, Any]
) -> None:
    saved: list[dict[str, Any]] = []
    forgotten: list[bool] = []
    with pytest.raises(SourceError) as info:
        _publish(slack, message, "h1", None, saved, token="xoxb-wrong", forgotten=forgotten)
    assert "invalid_auth" in str(info.value)
    assert len(saved) == 1 and "ts" not in saved[0] and forgotten == [True]
    # With a previous marker (e.g. the outbox's), that one is put back instead.
    outbox = {"date": DAY, "delivery": "outbox", "content_hash": "h1", "complete": True}
    with pytest.raises(SourceError):
        _publish(slack, message, "h1", outbox, saved, token="xoxb-wrong", forgotten=forgotten)
    assert saved[-1] == outbox and forgotten == [True]


def test_fake_history_follows_the_web_api(slack: FakeSlack) -> None:
    from slack_sdk import WebClient
    from slack_sdk.errors import SlackApiError

    for i in range(5):
        slack._post({"channel": "C0123ABCD", "text": f"m{i}",
                     "metadata": {"event_type": "t", "event_payload": {"i": i}}})  # fmt: skip
    slack._post({"channel": "#adperf", "text": "elsewhere"})
    ts = [m["ts"] for m in slack.messages]
    client = WebClient(token=TOKEN, base_url=slack.base_url)  # type: ignore[attr-defined]
    page = client.conversations_history(channel="C0123ABCD", limit=2)
    assert [m["text"] for m in page["messages"]] == ["m4", "m3"]  # newest first
    assert page["has_more"] is True and "metadata" not in page["messages"][0]
    cursor = page["response_metadata"]["next_cursor"]
    rest = client.conversations_history(
        channel="C0123ABCD", limit=10, cursor=cursor, include_all_metadata=True
    )
    assert [m["text"] for m in rest["messages"]] == ["m2", "m1", "m0"]
    assert rest["has_more"] is False and rest["messages"][0]["metadata"]["event_payload"] == {
        "i": 2
    }
    # oldest / latest are exclusive unless inclusive.
    window = client.conversations_history(channel="C0123ABCD", oldest=ts[1], latest=ts[4])
    assert [m["text"] for m in window["messages"]] == ["m3", "m2"]
    window = client.conversations_history(
        channel="C0123ABCD", oldest=ts[1], latest=ts[4], inclusive=True
    )
    assert [m["text"] for m in window["messages"]] == ["m4", "m3", "m2", "m1"]
    for channel in ("#adperf", "C0NOTHERE1"):  # a name, an unknown id
        with pytest.raises(SlackApiError) as info:
            client.conversations_history(channel=channel)
        assert info.value.response["error"] == "channel_not_found"
    listed = client.conversations_list(limit=1)
    assert [c["name"] for c in listed["channels"]] == ["adperf"]
    assert listed["response_metadata"]["next_cursor"] == ""


def test_find_posted_report_ignores_other_days_and_older_messages(slack: FakeSlack) -> None:
    meta = {"event_type": "adperf_report", "event_payload": {"date": "2026-11-26",
            "key": report_key("2026-11-26")}}  # fmt: skip
    slack._post({"channel": "C0123ABCD", "text": "yesterday", "metadata": meta})
    ts = slack.messages[0]["ts"]

    def find(day: str, oldest: float) -> dict[str, str] | None:
        return find_posted_report(token=TOKEN, channel="C0123ABCD", day=day, oldest=oldest,
                                  base_url=slack.base_url)  # type: ignore[attr-defined]  # fmt: skip

    assert find(DAY, 0.0) is None  # another day's key
    assert find("2026-11-26", float(ts)) is None  # older than the pending time allows
    assert find("2026-11-26", float(ts) - 1) == {"channel": "C0123ABCD", "ts": ts}


def test_update_and_upload_errors_are_named(slack: FakeSlack, message: dict[str, Any]) -> None:
    with pytest.raises(SourceError) as info:
        update_message(message, token="xoxb-wrong", channel="C0123ABCD", ts="1.1",
                       base_url=slack.base_url, day=DAY)  # type: ignore[attr-defined]  # fmt: skip
    assert "invalid_auth" in str(info.value) and "xoxb-wrong" not in str(info.value)
    with pytest.raises(SourceError) as info:
        upload_files([("a.csv", b"x", "a")], token=TOKEN, channel="#nope", thread_ts="1.1",
                     base_url=slack.base_url, day=DAY)  # type: ignore[attr-defined]  # fmt: skip
    assert "channel '#nope' not found" in str(info.value)


def test_outbox_holds_the_files_and_the_json_last(
    tmp_path: pathlib.Path, message: dict[str, Any]
) -> None:
    paths = write_outbox(message, tmp_path, DAY, {"adperf-x.png": b"png", "adperf-x.csv": b"c"})
    assert [p.name for p in paths] == ["adperf-x.png", "adperf-x.csv", f"slack-{DAY}.json"]
    assert (tmp_path / "adperf-x.png").read_bytes() == b"png"
    with pytest.raises(ValueError):
        write_outbox(message, tmp_path, DAY, {"../x.png": b"png"})


def test_a_timed_out_post_is_not_reposted_in_the_same_run(
    slack: FakeSlack, message: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A read timeout: the request may still be at work inside Slack, so finding nothing now is
    # no proof. urllib raises it raw or wrapped in URLError; both count as a timeout.
    from urllib.error import URLError

    from slack_sdk import WebClient

    for error in (TimeoutError("timed out"), URLError(TimeoutError("timed out"))):

        def timed_out(self: WebClient, *, _error: Exception = error, **kw: Any) -> Any:
            raise _error

        monkeypatch.setattr(WebClient, "chat_postMessage", timed_out)
        with pytest.raises(PostOutcomeUnknown) as info:
            post_message(message, token=TOKEN, channel="#adperf", base_url=slack.base_url, day=DAY)  # type: ignore[attr-defined]
        assert info.value.repost_now is False
    monkeypatch.setattr(WebClient, "chat_postMessage", lambda self, **kw: (_ for _ in ()).throw(
        ConnectionResetError("reset")))  # fmt: skip
    with pytest.raises(PostOutcomeUnknown) as info:
        post_message(message, token=TOKEN, channel="#adperf", base_url=slack.base_url, day=DAY)  # type: ignore[attr-defined]
    assert info.value.repost_now is True


def test_restricted_installs_get_their_line_and_stay_out_of_the_paid_totals() -> None:
    campaigns = pd.concat(
        [
            _three_campaigns(),
            pd.DataFrame([_campaign("restricted", "restricted", 0.0, 250.0, 10, "restricted")]),
        ],
        ignore_index=True,
    )
    recon = {**RECON, "total_payments": 2250.0, "restricted": 250.0}

    message = build_slack_message(
        day=DAY, currency="USD", campaigns=campaigns, actions=_actions(),
        reconciliation=recon, notes=[],
    )  # fmt: skip

    _assert_within_slack_limits(message)
    text = _texts(message)
    # 10 of 200 installs (150 paid + 40 organic + 10 restricted); 250 of 2,250 paid.
    assert (
        "10 installs (5.0%) from networks that withhold user-level data (media source "
        "'restricted'): their revenue cannot be tied to a campaign (250.00 USD, 11.1% of "
        "payments)"
    ) in text
    fields = {f["text"].split("\n")[0]: f["text"] for f in message["blocks"][1]["fields"]}
    assert fields["*Installs (paid)*"].startswith("*Installs (paid)*\n150 · 40 organic")
    assert fields["*CPI*"].startswith("*CPI*\n14.90 USD")  # 2234.75 / 150: restricted left out
    assert fields["*Revenue (paid cohorts)*"].startswith("*Revenue (paid cohorts)*\n2,969.12 USD")


def test_no_restricted_installs_no_line() -> None:
    message = build_slack_message(
        day=DAY, currency="USD", campaigns=_three_campaigns(), actions=_actions(),
        reconciliation={**RECON, "restricted": 0.0}, notes=[],
    )  # fmt: skip
    assert "withhold user-level data" not in _texts(message)
