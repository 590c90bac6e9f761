"""One alert per task that ends a run failed: none per retry, none for a task that recovers."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


@pytest.fixture()
def mmp_not_ready(run_root: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The MMP answers 'not ready' while the list's first item is > 0 (one less per ask);
    asked again at once ([mmp] recheck_s = 0). Alerts go to the outbox."""
    from adperf.errors import DataNotReady
    from tasks import extract

    left = [10**6]
    real = extract._fetch_installs

    def fetch(first: dt.date, last: dt.date, **kwargs: Any) -> Any:
        if left[0] > 0:
            left[0] -= 1
            raise DataNotReady("mmp", first.isoformat(), "installs_report is not ready yet", "wait")
        return real(first, last, **kwargs)

    monkeypatch.delenv("ADPERF_SLACK_TOKEN", raising=False)
    monkeypatch.setattr(extract, "_fetch_installs", fetch)
    cfg = luigi.configuration.get_config()
    cfg.set("mmp", "recheck_s", "0")
    yield left
    cfg.remove_option("mmp", "recheck_s")


def test_mmp_not_ready_is_missing_data_with_a_wait_notice_then_recovers(
    run_root: Path, mmp_not_ready: list[int]
) -> None:
    from tasks import extract

    from .conftest import END

    result = luigi.build([extract.Installs(date=END)], local_scheduler=True, detailed_summary=True)
    # An incomplete external input: missing data (exit 20), not 'not run' (25) nor failed (30).
    assert result.status == LuigiStatusCode.MISSING_EXT, result.summary_text
    assert "MmpReady(date=2026-11-20)" in result.summary_text
    assert "had missing dependencies" in result.summary_text
    assert not extract.MmpReady(date=END).complete()
    sent = ops.flush_alerts()
    assert [(a["kind"], a["task"], a["day"]) for a in sent] == [
        ("not_ready", "MmpReady", END.isoformat())
    ]
    assert (
        "mmp has not published 2026-11-20 yet: installs_report is not ready" in sent[0]["message"]
    )

    mmp_not_ready[0] = 0  # published
    result = luigi.build([extract.Installs(date=END)], local_scheduler=True, detailed_summary=True)
    assert result.status == LuigiStatusCode.SUCCESS, result.summary_text
    assert not extract.MmpReady(date=END).marker().exists()
    assert ops.flush_alerts() == []


def test_a_patient_worker_asks_the_mmp_again_and_completes(
    patient: Path, run_root: Path, mmp_not_ready: list[int]
) -> None:
    from tasks import extract

    from .conftest import END

    mmp_not_ready[0] = 4  # four 'not ready' answers (Installs' fetch, then asks), then the data
    cfg = luigi.configuration.get_config()
    cfg.set("worker", "retry_external_tasks", "true")
    cfg.set("worker", "wait_jitter", "0")
    try:
        result = luigi.build(
            [extract.Installs(date=END)], local_scheduler=True, detailed_summary=True
        )
    finally:
        cfg.remove_option("worker", "retry_external_tasks")
        cfg.remove_option("worker", "wait_jitter")
    assert mmp_not_ready[0] == 0
    # MmpReady 'failed' while the MMP was not ready, then was found ready: a retry, no failure.
    assert result.status == LuigiStatusCode.SUCCESS_WITH_RETRY, result.summary_text
    assert extract.Installs(date=END).complete()
    assert ops.flush_alerts() == []


# ---------------------------------------------------------------- alerts of killed runs


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_spool_of_a_dead_run_is_sent_once_except_what_succeeded_since(
    patient: Path, slack: FakeSlack
) -> None:
    host = socket.gethostname()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ops, "run_id", lambda: f"{host}-{_dead_pid()}")
        dead = ops.spool_dir()  # the spool of a process that has exited
        mp.setattr(ops, "run_id", lambda: dead.name)
        assert _run(Flaky(date=DAY, root=str(patient), failures=99)) == LuigiStatusCode.FAILED
        assert _run(Flaky(date=DAY, root=str(patient), failures=98)) == LuigiStatusCode.FAILED
    assert len(list(dead.glob("failed-*.json"))) == 2  # killed before its exit sent them
    Path(patient / "done-98").write_text("ok")  # a later run redid this one

    with subprocess.Popen(["sleep", "60"]) as alive:  # a run still going keeps its spool
        live = dead.with_name(f"{host}-{alive.pid}")
        live.mkdir()
        shutil.copy(next(dead.glob("failed-*.json")), live)
        try:
            sent = ops.flush_stale_spools()  # as the next run does
            assert [(a["task"], a["params"]["failures"]) for a in sent] == [("Flaky", "99")]
            assert len(slack.messages) == 1
            assert "Flaky failed for 2026-11-20" in slack.messages[0]["text"]
            assert not dead.exists() and len(list(live.iterdir())) == 1
            assert ops.flush_stale_spools() == []  # the dead run's spool is gone: sent once
            assert len(slack.messages) == 1
        finally:
            alive.kill()


KILLED_RUN = """
import datetime as dt, os, signal
import luigi
from tasks.extract import Payments
luigi.build([Payments(date=dt.date.fromisoformat({day!r}))], local_scheduler=True)
os.kill(os.getpid(), signal.SIGKILL)  # before atexit sends the alert it spooled
"""


def test_alerts_of_a_killed_run_are_sent_by_the_next_run_once(tmp_path: Path) -> None:
    from .conftest import END
    from .test_retcode import PROD, REPO, _luigi

    fake = FakeSlack(token=TOKEN)
    cfg = PROD.format(root=tmp_path) + f"base_url = {fake.start()}\n"  # into [slack]
    env = {"ADPERF_HMAC_KEY": "k" * 32, "ADPERF_SLACK_TOKEN": TOKEN}
    try:
        (tmp_path / "override.cfg").write_text(cfg)
        full = {k: v for k, v in os.environ.items() if not k.startswith("ADPERF_")}
        full.update(env, LUIGI_CONFIG_PATH=str(tmp_path / "override.cfg"))
        code = KILLED_RUN.format(day=END.isoformat())
        killed = subprocess.run(
            [sys.executable, "-c", code], cwd=REPO, env=full, capture_output=True, timeout=120
        )
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
        assert len(list((tmp_path / "alerts" / ".spool").glob("*/failed-Payments_*.json"))) == 1
        assert fake.messages == []

        # The next run, whatever it does (here: finds a day's logs present), sends it.
        (tmp_path / "logs").mkdir()
        with gzip.open(tmp_path / "logs" / f"{END}.jsonl.gz", "wt") as f:
            f.write("")
        for _ in range(2):
            proc = _luigi(tmp_path, cfg, env, ("LogFiles", "--date", END.isoformat()))
            assert proc.returncode == 0, proc.stderr[-2000:]
            assert len(fake.messages) == 1  # the second run sends nothing
    finally:
        fake.stop()
    assert fake.messages[0]["text"].startswith(f":x: adperf: Payments failed for {END}")
    assert "[payments] url or ADPERF_PAYMENTS_URL is not set" in fake.messages[0]["text"]
    assert not list((tmp_path / "alerts" / ".spool").glob("*/*"))


def test_adperf_status_sends_what_a_dead_run_left(
    run_root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tasks.cli import main as cli

    from .conftest import END

    monkeypatch.delenv("ADPERF_SLACK_TOKEN", raising=False)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ops, "run_id", lambda: f"{socket.gethostname()}-{_dead_pid()}")
        assert _run(Flaky(date=DAY, root=str(run_root), failures=99)) == LuigiStatusCode.FAILED
    assert not list((run_root / "alerts").glob("alert-*.json"))
    cli(["status", "--end", END.isoformat(), "--days", "1"])
    assert "adperf status" in capsys.readouterr().out
    (alert,) = (run_root / "alerts").glob("alert-*.json")
    assert json.loads(alert.read_text())["text"].startswith(":x: adperf: Flaky failed for")
    assert not list((run_root / "alerts" / ".spool").glob("*/*"))
