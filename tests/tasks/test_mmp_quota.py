"""AppsFlyer's used-up daily Pull API quota through the task graph: missing data (exit 20) with
a wait notice naming the quota and its reset, never a failure telling to fix the token; the
MMP is not asked again before the reset; after it the day is read."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import luigi
import pandas as pd
import pytest
from luigi.execution_summary import LuigiStatusCode

from adperf.sandbox.fake_mmp import FakeMmp
from tasks import ops

from .conftest import END


@pytest.fixture()
def quota_mmp(run_root: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeMmp]:
    """The sandbox's installs behind our own fake MMP, whose daily quota is used up."""
    from tasks import config, resources

    installs = pd.read_parquet(run_root / "world" / "installs.parquet")
    fake = FakeMmp(installs=installs, api_token=config.SANDBOX_MMP_TOKEN, daily_quota=0)
    url, real = fake.start(), resources.mmp
    monkeypatch.setattr(
        resources, "mmp", lambda day=None: dataclasses.replace(real(day), base_url=url)
    )
    monkeypatch.delenv("ADPERF_SLACK_TOKEN", raising=False)
    cfg = luigi.configuration.get_config()
    cfg.set("mmp", "recheck_s", "0")  # would ask again at once, but for the quota's reset
    try:
        yield fake
    finally:
        cfg.remove_option("mmp", "recheck_s")
        fake.stop()


def test_used_up_quota_is_missing_data_until_the_reset_then_the_day_is_read(
    run_root: Path, quota_mmp: FakeMmp
) -> None:
    from tasks import extract

    result = luigi.build([extract.Installs(date=END)], local_scheduler=True, detailed_summary=True)

    # Missing data ([retcode] missing_data = 20), not a failed task (30).
    assert result.status == LuigiStatusCode.MISSING_EXT, result.summary_text
    assert "MmpReady(date=2026-11-20)" in result.summary_text
    assert not (run_root / "lake" / "installs" / f"date={END}").exists()
    asked = len(quota_mmp.requests_seen)
    assert asked == 1  # refused once, not retried five times
    marker = extract.MmpReady(date=END).marker()
    entry = json.loads(marker.read_text())
    tomorrow = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1)
    assert entry["retry_at"] == f"{tomorrow.isoformat()}T00:00:00+00:00"
    sent = ops.flush_alerts()
    assert [(a["kind"], a["task"]) for a in sent] == [("not_ready", "MmpReady")]
    message = sent[0]["message"]
    assert "daily Pull API quota of installs_report reports is used up" in message
    assert f"resets at 00:00 UTC, {tomorrow.isoformat()} 00:00 UTC" in message
    assert "ADPERF_MMP_TOKEN" not in message and "token" not in message.lower()

    # Before the reset the MMP is not asked again, even with recheck_s = 0.
    assert not extract.MmpReady(date=END).complete()
    assert len(quota_mmp.requests_seen) == asked

    # Midnight UTC has passed: the quota is fresh, the day is read, the marker goes.
    quota_mmp.set_daily_quota(None)
    entry["retry_at"] = "2026-11-21T00:00:00+00:00"
    marker.write_text(json.dumps(entry))
    luigi.task_register.Register.clear_instance_cache()
    result = luigi.build([extract.Installs(date=END)], local_scheduler=True, detailed_summary=True)
    assert result.status == LuigiStatusCode.SUCCESS, result.summary_text
    assert (run_root / "lake" / "installs" / f"date={END}" / "_meta.json").is_file()
    assert not marker.exists()
    assert ops.flush_alerts() == []


def test_a_closed_month_waits_for_the_quota_too(run_root: Path, quota_mmp: FakeMmp) -> None:
    from tasks import extract

    month = dt.date(2026, 10, 1)
    result = luigi.build(
        [extract.InstallsMonth(month=month)], local_scheduler=True, detailed_summary=True
    )

    # Missing data, not a failed task: the month is pulled once the quota is back.
    assert result.status == LuigiStatusCode.MISSING_EXT, result.summary_text
    assert "MmpReady(date=2026-10-01)" in result.summary_text
    assert not (run_root / "lake" / "installs_monthly" / "month=2026-10").exists()
    marker = extract.MmpReady(date=month).marker()
    assert "retry_at" in json.loads(marker.read_text())
    assert [a["kind"] for a in ops.flush_alerts()] == ["not_ready"]

    quota_mmp.set_daily_quota(None)
    marker.unlink()
    luigi.task_register.Register.clear_instance_cache()
    result = luigi.build(
        [extract.InstallsMonth(month=month)], local_scheduler=True, detailed_summary=True
    )
    assert result.status == LuigiStatusCode.SUCCESS, result.summary_text
    assert (run_root / "lake" / "installs_monthly" / "month=2026-10" / "_meta.json").is_file()
