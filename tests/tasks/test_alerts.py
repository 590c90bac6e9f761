"""One alert per task that ends a run failed: none per retry, none for a task that recovers."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import luigi
import pytest
from luigi.execution_summary import LuigiStatusCode

from adperf.errors import SourceError
from adperf.sandbox.fake_slack import FakeSlack
from tasks import ops

DAY = dt.date(2026, 11, 20)
TOKEN = "xoxb-alerts-test-token-1234"
RAW_USER = "8812345678"


class Flaky(luigi.Task):
    """Fails its first `failures` runs (a counter file under `root`), then succeeds."""

    date = luigi.DateParameter()
    root = luigi.Parameter()
    failures = luigi.IntParameter()
    retry_count = 3

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(Path(self.root) / f"done-{self.failures}"))

    def run(self) -> None:
        counter = Path(self.root) / f"runs-{self.failures}"
        runs = int(counter.read_text()) if counter.exists() else 0
        counter.write_text(str(runs + 1))
        if runs < self.failures:
            raise SourceError(
                "mmp",
                str(self.date),
                f"HTTP 401 for user {RAW_USER} with api_token={TOKEN}",
                "check ADPERF_MMP_TOKEN",
            )
        Path(self.output().path).write_text("ok")


@pytest.fixture()
def patient(tmp_path: Path) -> Iterator[Path]:
    """Retries inside one run (keep_alive, short retry_delay), outbox under tmp_path."""
    cfg = luigi.configuration.get_config()
    values = {
        ("worker", "keep_alive"): "true",
        ("worker", "wait_interval"): "0.1",
        ("scheduler", "retry_delay"): "0.1",
        ("slack", "outbox"): str(tmp_path / "outbox"),
    }
    saved = {k: cfg.get(*k, None) for k in values}
    for (section, key), value in values.items():
        cfg.set(section, key, value)
    yield tmp_path
    for (section, key), value in saved.items():
        if value is None:
            cfg.remove_option(section, key)
        else:
            cfg.set(section, key, value)


@pytest.fixture()
def slack(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSlack]:
    fake = FakeSlack(token=TOKEN)
    cfg = luigi.configuration.get_config()
    saved = cfg.get("slack", "base_url", None)
    cfg.set("slack", "base_url", fake.start())
    monkeypatch.setenv("ADPERF_SLACK_TOKEN", TOKEN)
    yield fake
    fake.stop()
    if saved is None:
        cfg.remove_option("slack", "base_url")
    else:
        cfg.set("slack", "base_url", saved)


def _run(task: luigi.Task) -> LuigiStatusCode:
    result = luigi.build([task], local_scheduler=True, detailed_summary=True)
    return result.status


def test_task_failing_every_retry_alerts_once_without_secrets(
    patient: Path, slack: FakeSlack
) -> None:
    status = _run(Flaky(date=DAY, root=str(patient), failures=99))
    assert status == LuigiStatusCode.FAILED
    assert (patient / "runs-99").read_text() == "3"  # retry_count = 3: three failures
    sent = ops.flush_alerts()
    assert len(sent) == 1 and len(slack.messages) == 1
    text = slack.messages[0]["text"]
    assert "Flaky failed for 2026-11-20" in text
    assert "SourceError" in json.dumps(slack.messages[0]["blocks"])
    assert "after 3 attempts" in json.dumps(slack.messages[0]["blocks"])
    assert "HTTP 401" in text
    everything = json.dumps(slack.messages)
    assert TOKEN not in everything and RAW_USER not in everything
    assert ops.flush_alerts() == []  # sent once


def test_task_that_succeeds_on_retry_sends_no_alert(patient: Path, slack: FakeSlack) -> None:
    status = _run(Flaky(date=DAY, root=str(patient), failures=1))
    assert status == LuigiStatusCode.SUCCESS_WITH_RETRY
    assert (patient / "runs-1").read_text() == "2"
    assert ops.flush_alerts() == []
    assert slack.messages == []


def test_without_token_the_alert_goes_to_the_outbox(
    patient: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ADPERF_SLACK_TOKEN", raising=False)
    cfg = luigi.configuration.get_config()
    cfg.set("worker", "keep_alive", "false")
    status = _run(Flaky(date=DAY, root=str(patient), failures=99))
    assert status == LuigiStatusCode.FAILED
    ops.flush_alerts()
    files = list((patient / "alerts").glob("alert-2026-11-20-Flaky_*.json"))
    assert len(files) == 1
    message = json.loads(files[0].read_text())
    assert message["text"].startswith(":x: adperf: Flaky failed for 2026-11-20")
    assert TOKEN not in files[0].read_text()


def test_mmp_not_ready_is_missing_data_with_a_wait_notice_then_recovers(
    run_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from adperf.errors import DataNotReady
    from tasks import pipeline

    from .conftest import END

    def not_yet(first: dt.date, last: dt.date, **kwargs: object) -> None:
        raise DataNotReady("mmp", first.isoformat(), "installs_report is not ready yet", "wait")

    monkeypatch.delenv("ADPERF_SLACK_TOKEN", raising=False)
    real = pipeline._fetch_installs
    monkeypatch.setattr(pipeline, "_fetch_installs", not_yet)
    result = luigi.build([pipeline.Installs(date=END)], local_scheduler=True, detailed_summary=True)
    # Pending behind a missing input, not failed: luigi says NOT_RUN (exit 25), never 30.
    assert result.status == LuigiStatusCode.NOT_RUN, result.summary_text
    assert "SourceReady(source=mmp, day=2026-11-20)" in result.summary_text
    assert not pipeline.SourceReady(source="mmp", day=END.isoformat()).complete()
    sent = ops.flush_alerts()
    assert [(a["kind"], a["task"], a["day"]) for a in sent] == [
        ("not_ready", "SourceReady", END.isoformat())
    ]
    assert "mmp has not published" in sent[0]["message"]

    monkeypatch.setattr(pipeline, "_fetch_installs", real)
    result = luigi.build([pipeline.Installs(date=END)], local_scheduler=True, detailed_summary=True)
    assert result.status == LuigiStatusCode.SUCCESS, result.summary_text
    assert ops.flush_alerts() == []
