"""The Slack report through the real graph: failures, exactly once, updates, outbox, HTML.

One module-scoped world and lake; the tests run in order, each continuing the previous state,
except those that use `outbox_run`, which runs the graph itself when no test before did.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import luigi
import pytest
from luigi.execution_summary import LuigiStatusCode

from adperf import lake
from adperf.sandbox.fake_slack import FakeSlack
from tasks.load import DailyReport, LoadReport, RenderReport, SlackReport

from .conftest import END, configure

TOKEN = "xoxb-test-token-0123456789"
WRONG = "xoxb-revoked-DO-NOT-LEAK"
DAY = END.isoformat()


@pytest.fixture(scope="module")
def slack(module_root: Path) -> Iterator[FakeSlack]:
    fake = FakeSlack(TOKEN)
    url = fake.start()
    configure(
        module_root,
        slack={"base_url": url, "channel": "#marketing-daily"},
        retcode={"task_failed": "30", "missing_data": "20"},
    )
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def outbox_run(module_root: Path, slack: FakeSlack) -> luigi.execution_summary.LuigiRunResult:
    """The day's run without a Slack token (the outbox delivery), built once for the module.

    In the module's order it follows the Slack posts and the restatement, as before; a test
    run alone gets the same outbox from a fresh lake.
    """
    with pytest.MonkeyPatch.context() as env:  # monkeypatch itself is per test
        env.delenv("ADPERF_SLACK_TOKEN", raising=False)
        return _build()


def _build() -> luigi.execution_summary.LuigiRunResult:
    return luigi.build([DailyReport(date=END)], local_scheduler=True, detailed_summary=True)


def _marker(root: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((root / "lake" / "slack_posts" / f"{DAY}.json").read_text())


def test_invalid_token_fails_only_the_slack_task(
    module_root: Path,
    slack: FakeSlack,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("ADPERF_SLACK_TOKEN", WRONG)
    with caplog.at_level(logging.ERROR):
        result = _build()
    assert result.status == LuigiStatusCode.FAILED
    assert LoadReport(date=END).complete()  # the report tables are loaded all the same
    assert RenderReport(date=END).complete()
    assert (module_root / "lake" / "reports" / f"date={DAY}" / "report.html").is_file()
    assert not SlackReport(date=END).complete()
    assert not (module_root / "lake" / "slack_posts" / f"{DAY}.json").exists()  # no marker
    assert slack.messages == []
    errors = caplog.text
    assert f"slack for {DAY}: Slack refused the token (invalid_auth)" in errors
    assert "ADPERF_SLACK_TOKEN" in errors and WRONG not in errors

    # The process exit code cron sees ([retcode] task_failed), through luigi's own entry point.
    from luigi.retcodes import run_with_retcodes

    with pytest.raises(SystemExit) as exit_info:
        run_with_retcodes(["--module", "tasks", "DailyReport", "--date", DAY, "--local-scheduler"])
    assert exit_info.value.code == 30
    assert slack.messages == []


def test_the_next_run_posts_once_with_chart_and_csv_in_the_thread(
    module_root: Path, slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ADPERF_SLACK_TOKEN", TOKEN)
    result = _build()
    assert result.status == LuigiStatusCode.SUCCESS, result.summary_text
    assert len(slack.messages) == 1
    marker = _marker(module_root)
    assert marker["ts"] == slack.messages[0]["ts"] and marker["channel"].startswith("C")
    assert marker["complete"] is True and marker["delivery"] == "slack"
    assert [f["filename"] for f in slack.files] == [
        f"adperf-{DAY}.png",
        f"adperf-{DAY}-campaigns.csv",
    ]
    assert {f["thread_ts"] for f in slack.files} == {marker["ts"]}
    assert slack.files[0]["content"].startswith(b"\x89PNG")
    posted = json.dumps(slack.messages[0], ensure_ascii=False)
    assert f"adperf — {DAY}" in posted and "d/d" in posted and TOKEN not in posted
    assert not (module_root / "outbox" / f"slack-{DAY}.json").exists()

    again = _build()
    assert again.status == LuigiStatusCode.SUCCESS
    assert "ran successfully" not in again.summary_text  # a complete day runs nothing
    assert len(slack.messages) == 1 and len(slack.files) == 2 and slack.updates == []


def test_restated_numbers_update_the_same_message(
    module_root: Path, slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ADPERF_SLACK_TOKEN", TOKEN)
    first = _marker(module_root)
    # A backfill after a restatement rewrites the day's campaign report with new spend.
    root = module_root / "lake"
    report = lake.read_partition(root, "campaign_report", "date", DAY)
    paid = report["platform"] != "organic"
    report.loc[paid, "spend_micros"] = report.loc[paid, "spend_micros"] * 2
    lake.write_frame(root, "campaign_report", "date", DAY, report)
    assert not SlackReport(date=END).complete()

    result = _build()
    assert result.status == LuigiStatusCode.SUCCESS, result.summary_text
    assert len(slack.messages) == 1  # updated in place, never reposted
    assert [u["ts"] for u in slack.updates] == [first["ts"]]
    marker = _marker(module_root)
    assert marker["ts"] == first["ts"] and marker["updates"] == 1
    assert marker["content_hash"] != first["content_hash"]
    spend_before = float(report.loc[paid, "spend_micros"].sum()) / 2 / 1e6
    assert f"{spend_before * 2:,.2f} USD" in slack.messages[0]["text"]
    assert len(slack.files) == 4 and "restated" in slack.files[2]["initial_comment"]

    again = _build()
    assert "ran successfully" not in again.summary_text
    assert len(slack.updates) == 1


def test_without_a_token_the_outbox_gets_message_chart_and_csv(
    module_root: Path, slack: FakeSlack, outbox_run: luigi.execution_summary.LuigiRunResult
) -> None:
    assert outbox_run.status == LuigiStatusCode.SUCCESS, outbox_run.summary_text
    outbox = module_root / "outbox"
    assert sorted(p.name for p in outbox.iterdir()) == sorted(
        [f"slack-{DAY}.json", f"adperf-{DAY}.png", f"adperf-{DAY}-campaigns.csv"]
    )
    message = json.loads((outbox / f"slack-{DAY}.json").read_text())
    # The same rendering as the (updated) Slack message.
    assert message["text"] == slack.messages[0]["text"]
    assert message["blocks"] == slack.messages[0]["blocks"]
    assert (outbox / f"adperf-{DAY}.png").read_bytes().startswith(b"\x89PNG")
    assert _marker(module_root)["delivery"] == "outbox"
    assert len(slack.messages) == 1  # nothing sent to Slack


def test_html_report_is_in_the_lake_and_self_contained(
    module_root: Path, outbox_run: luigi.execution_summary.LuigiRunResult
) -> None:
    folder = module_root / "lake" / "reports" / f"date={DAY}"
    page = (folder / "report.html").read_text(encoding="utf-8")
    png = (folder / "chart.png").read_bytes()
    assert base64.b64encode(png).decode("ascii") in page
    assert f"adperf — {DAY}" in page and "All campaigns" in page
    assert "https://" not in page and "http://" not in page


def test_demo_summary_shows_the_html_report_and_the_outbox(
    module_root: Path, outbox_run: luigi.execution_summary.LuigiRunResult
) -> None:
    from tasks import config
    from tasks.cli import _report_lines

    assert outbox_run.status == LuigiStatusCode.SUCCESS, outbox_run.summary_text
    lines = "\n".join(_report_lines(END, config))
    html = (module_root / "lake" / "reports" / f"date={DAY}" / "report.html").resolve()
    assert html.is_file() and f"report:    {html}" in lines
    for name in (f"slack-{DAY}.json", f"adperf-{DAY}.png", f"adperf-{DAY}-campaigns.csv"):
        assert str((module_root / "outbox" / name).resolve()) in lines
