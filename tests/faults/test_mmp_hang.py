"""The MMP hangs (accepts the request, sends nothing): the request timeout fires, the hang is a
transient error retried a bounded number of times, then a named error (source, day, fix); no
partial partition, and once the MMP answers again the day is read whole."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import luigi
import pandas as pd
import pytest
from luigi.execution_summary import LuigiStatusCode
from luigi.task_register import Register

from adperf import lake
from adperf.errors import TransientSourceError
from adperf.sandbox.fake_mmp import FakeMmp
from adperf.sources import mmp
from tasks.extract import Installs

from .conftest import CleanRun
from .harness import DAY, END, HMAC_KEY, build, configure, copy_run, planted_env
from .test_mariadb_stopped import _Errors

TOKEN = "mmp-token-for-the-hang-test-0a1b2c"


def _installs(clean: CleanRun) -> pd.DataFrame:
    return pd.read_parquet(clean.root / "world" / "installs.parquet")


def _fake(clean: CleanRun) -> FakeMmp:
    return FakeMmp(installs=_installs(clean), api_token=TOKEN)


def _fetch(url: str, app_ids: list[str], sleeps: list[float], **kw: object) -> pd.DataFrame:
    return mmp.fetch_installs(
        base_url=url,
        app_ids=app_ids,
        api_token=TOKEN,
        day=END,
        timezone="Asia/Seoul",
        hmac_key=HMAC_KEY.encode(),
        sleep=sleeps.append,
        **kw,  # type: ignore[arg-type]
    )


def test_a_hung_mmp_times_out_is_retried_bounded_then_named(clean: CleanRun) -> None:
    fake = _fake(clean)
    url, app = fake.start(), str(_installs(clean)["app_id"].iloc[0])
    sleeps: list[float] = []
    try:
        fake.inject_errors([{"hang": 30}] * 4)
        with pytest.raises(TransientSourceError) as err:
            _fetch(url, [app], sleeps, timeout=0.2, max_retries=3)
    finally:
        fake.stop()  # also ends the hangs still waiting on the server side
    text = str(err.value)
    assert text.startswith(f"mmp for {DAY}: installs_report for app {app}: ReadTimeout")
    assert "gave up after 4 attempts" in text and "Fix: run the task again later" in text
    assert TOKEN not in text
    assert len(fake.requests_seen) == 4  # bounded: 1 + max_retries, nothing more
    assert sleeps == [1.0, 2.0, 4.0]  # exponential backoff between the attempts


def test_one_hang_is_retried_and_loses_nothing(clean: CleanRun) -> None:
    fake = _fake(clean)
    url = fake.start()
    apps = sorted(_installs(clean)["app_id"].unique())
    sleeps: list[float] = []
    try:
        want = _fetch(url, apps, sleeps, timeout=5.0)
        fake.inject_errors([{"hang": 30}])
        got = _fetch(url, apps, sleeps, timeout=0.2)
    finally:
        fake.stop()
    assert sleeps == [1.0] and len(want) > 0
    pd.testing.assert_frame_equal(got, want)


def test_installs_task_on_a_hung_mmp_fails_clearly_and_writes_nothing(
    tmp_path: Path, clean: CleanRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tasks import config, resources

    partition = f"installs/date={DAY}"
    root = copy_run(clean.root, tmp_path, drop=(partition,))
    configure(root)
    luigi.configuration.get_config().set("mmp", "timeout_s", "0.2")
    monkeypatch.setattr(mmp, "_BACKOFF_BASE_S", 0.001)  # the backoff's shape is tested above
    # Our own fake MMP (the sandbox's answers, the sandbox's token), to script the hang.
    fake = FakeMmp(installs=_installs(clean), api_token=config.SANDBOX_MMP_TOKEN)
    url, real = fake.start(), resources.mmp
    monkeypatch.setattr(
        resources, "mmp", lambda day=None: dataclasses.replace(real(day), base_url=url)
    )
    errors, logger = _Errors(), logging.getLogger("luigi-interface")
    try:
        with planted_env():
            fake.inject_errors([{"hang": 5}] * 6)
            logger.addHandler(errors)
            try:
                result = build(Installs(date=END))
            finally:
                logger.removeHandler(errors)
            assert result.status == LuigiStatusCode.FAILED, result.summary_text
            hung = len(fake.requests_seen)
            assert not Installs(date=END).complete()
            assert not (root / "lake" / partition).exists()
            assert not list((root / "lake" / "installs").glob("_tmp-*"))

            fake.inject_errors([{"hang": 5}])  # the MMP recovers after one more hang
            Register.clear_instance_cache()
            result = build(Installs(date=END))
            assert result.status == LuigiStatusCode.SUCCESS, result.summary_text
    finally:
        fake.stop()
        luigi.configuration.get_config().remove_option("mmp", "timeout_s")
        Register.clear_instance_cache()
    assert hung == 6  # 1 + max_retries (5) of the task's MMP client, no more
    assert f"mmp for {DAY}: installs_report" in errors.text and "ReadTimeout" in errors.text
    assert "gave up after 6 attempts" in errors.text and "Fix:" in errors.text
    got = root / "lake" / partition / lake.DATA_FILE
    assert got.read_bytes() == (clean.root / "lake" / partition / lake.DATA_FILE).read_bytes()
