"""With a token, the report is posted through slack-sdk exactly once per day."""

from __future__ import annotations

import json
from pathlib import Path

import luigi
import pytest
from luigi.execution_summary import LuigiStatusCode

from adperf.sandbox.fake_slack import FakeSlack
from tasks.pipeline import DailyReport

from .conftest import END, configure

TOKEN = "xoxb-test-token-0123456789"


@pytest.fixture()
def slack(run_root: Path, monkeypatch: pytest.MonkeyPatch):
    fake = FakeSlack(TOKEN)
    url = fake.start()
    monkeypatch.setenv("ADPERF_SLACK_TOKEN", TOKEN)
    configure(run_root, slack={"base_url": url, "channel": "#marketing-daily"})
    yield fake
    fake.stop()


def test_posts_once_and_records_channel_and_ts(run_root: Path, slack: FakeSlack) -> None:
    result = luigi.build([DailyReport(date=END)], local_scheduler=True, detailed_summary=True)
    assert result.status == LuigiStatusCode.SUCCESS, result.summary_text
    assert len(slack.messages) == 1
    marker = json.loads((run_root / "lake" / "slack_posts" / f"{END}.json").read_text())
    assert marker["channel"] and marker["ts"]
    assert not (run_root / "outbox" / f"slack-{END}.json").exists()
    posted = json.dumps(slack.messages[0])
    assert END.isoformat() in posted and TOKEN not in posted

    again = luigi.build([DailyReport(date=END)], local_scheduler=True, detailed_summary=True)
    assert again.status == LuigiStatusCode.SUCCESS
    assert len(slack.messages) == 1  # a complete day is never posted twice
