"""Sequential runs are identical, and a 60-day backfill finishes over repeated invocations."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest
from luigi.execution_summary import LuigiStatusCode
from luigi.tools.range import RangeDaily, RangeDailyBase

from adperf import lake
from adperf.errors import TransientSourceError
from tasks import extract, pipeline

from .conftest import CleanRun, full_run
from .harness import END, build, configure, lake_parquet, planted, planted_env, warehouse_rows

REPO = Path(__file__).resolve().parents[2]


def test_two_runs_of_the_same_day_are_identical(
    tmp_path: Path, clean: CleanRun, fault_world: Path
) -> None:
    second = full_run(tmp_path, fault_world)
    first_lake, second_lake = lake_parquet(clean.root), lake_parquet(second.root)
    assert len(first_lake) > 100
    assert sorted(first_lake) == sorted(second_lake)
    differ = [name for name in first_lake if first_lake[name] != second_lake[name]]
    assert differ == []  # content bytes, not mtimes
    first_rows = warehouse_rows(clean.warehouse_url)
    second_rows = warehouse_rows(second.warehouse_url)
    for name, rows in first_rows.items():
        pd.testing.assert_frame_equal(second_rows[name], rows, obj=name)
    assert [m["blocks"] for m in second.messages] == [m["blocks"] for m in clean.messages]
    assert [f["content"] for f in second.files] == [f["content"] for f in clean.files]


# ---------------------------------------------------------------- backfill

BACKFILL_DAYS = 60
ATTRIBUTION_DAYS = 5  # the install history makes Attribution ~1 s a day: the last days only
FIRST = END - dt.timedelta(days=BACKFILL_DAYS - 1)
STOP = END + dt.timedelta(days=1)  # RangeDaily's stop is exclusive
# RangeDaily looks back `days_back` from `now`; pin both so the range never depends on the clock.
NOW = int(dt.datetime.combine(STOP, dt.time(12), tzinfo=dt.UTC).timestamp())
# RangeDailyBase, not RangeDaily: see test_range_daily_can_schedule_a_report_range.
RANGE_ARGS = ["RangeDailyBase", "--of", "Payments", "--start", FIRST.isoformat()]
RANGE_ARGS += ["--stop", STOP.isoformat(), "--now", str(NOW), "--days-back", "100"]


@pytest.fixture(scope="module")
def long_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny-profile world of 70 days (the tiny default has 40)."""
    from adperf.sandbox.world import build_world

    root = tmp_path_factory.mktemp("long") / "world"
    build_world(root, start=END - dt.timedelta(days=69), end=END, profile="tiny", seed=7)
    return root


def test_a_60_day_backfill_finishes_over_repeated_runs_and_counts_once(
    tmp_path: Path, long_world: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RangeDailyBase of Payments over 60 days: killed, then failing on some days, then
    finishing, then a no-op; every day's total equals the world's truth, no payment is in the
    lake twice. Then Attribution of the last days: all four reconciliation totals = the truth.

    Not DailyReport: 60 full report days (LTV fits, reports) cost minutes; the report day's
    load is covered by the kill tests and the identical-runs test.
    """
    import shutil

    shutil.copytree(long_world, tmp_path / "world")
    configure(tmp_path)
    lake_root = tmp_path / "lake"

    # 1. cron's run is killed part-way (the machine went down).
    cfg = tmp_path / "override.cfg"
    cfg.write_text(_cfg(tmp_path))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADPERF_")}
    env |= planted() | {"LUIGI_CONFIG_PATH": str(cfg)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "luigi",
            "--module",
            "tasks",
            *RANGE_ARGS,
            "--local-scheduler",
            "--no-lock",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 240
        while _count(lake_root, "payments") < 10:
            assert proc.poll() is None, "the backfill ended before it was killed"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    done_before = _days(lake_root)
    assert 10 <= len(done_before) < BACKFILL_DAYS

    # 2. the next run meets a payments database that fails on three days.
    broken = {FIRST + dt.timedelta(days=k) for k in (40, 41, 55)} | set(
        sorted({FIRST + dt.timedelta(days=k) for k in range(BACKFILL_DAYS)} - done_before)[:1]
    )  # at least one day the killed run had not done
    real = extract._fetch_payments

    def flaky(first: dt.date, last: dt.date) -> object:
        if first in broken:
            raise TransientSourceError("payments", first.isoformat(), "connection lost", "retry")
        return real(first, last)

    monkeypatch.setattr(extract, "_fetch_payments", flaky)
    with planted_env():
        result = build(_range(tmp_path, pipeline.Payments, FIRST))
    assert result.status == LuigiStatusCode.FAILED
    # Days done before the kill are not fetched again; the broken ones not done are missing.
    missing = {FIRST + dt.timedelta(days=k) for k in range(BACKFILL_DAYS)} - _days(lake_root)
    assert missing == broken - done_before

    # 3. the database is back: the run finishes; 4. the next one has nothing to do.
    monkeypatch.setattr(extract, "_fetch_payments", real)
    with planted_env():
        assert build(_range(tmp_path, pipeline.Payments, FIRST)).status == LuigiStatusCode.SUCCESS
        again = build(_range(tmp_path, pipeline.Payments, FIRST))
    assert again.status == LuigiStatusCode.SUCCESS
    assert "ran successfully" not in again.summary_text

    days = [(FIRST + dt.timedelta(days=k)).isoformat() for k in range(BACKFILL_DAYS)]
    assert _count(lake_root, "payments") == BACKFILL_DAYS
    truth = pd.read_csv(tmp_path / "world" / "truth" / "daily_totals.csv", dtype=str)
    truth = truth.set_index("date")
    payments = lake.read_partitions(lake_root, "payments", "date", days)
    assert len(payments) > 100 and payments["payment_id"].is_unique
    by_day = payments.groupby("date")["amount_micros"].sum().reindex(days, fill_value=0)
    _assert_truth(days, list(by_day), truth.loc[days, "total_payments_report"])
    for day in days:
        meta = lake.read_meta(lake_root, "payments", "date", day)
        assert meta["accepted"] + meta["quarantined"] == meta["source_rows"] == meta["rows_read"]

    last = days[-ATTRIBUTION_DAYS:]
    first_attr = dt.date.fromisoformat(last[0])
    with planted_env():
        built = build(_range(tmp_path, pipeline.Attribution, first_attr))
    assert built.status == LuigiStatusCode.SUCCESS
    recon = lake.read_partitions(lake_root, "reconciliation", "date", last)
    for col in ("total_payments", "attributed", "organic", "unattributed", "restricted"):
        _assert_truth(last, list(recon[f"{col}_micros"]), truth.loc[last, f"{col}_report"])
    attribution = lake.read_partitions(lake_root, "attribution", "date", last)
    key = ["date", "platform", "campaign_id", "adset_id", "ad_id"]
    assert len(attribution) and not attribution.duplicated(key).any()


def _assert_truth(days: list[str], micros: list[int], truth: pd.Series) -> None:
    """Each day's amount (micros) equals the truth's (currency units) to the cent."""
    got = [Decimal(int(v)).scaleb(-6) for v in micros]
    want = [Decimal(v) for v in truth]
    off = [(d, g, w) for d, g, w in zip(days, got, want, strict=True) if abs(g - w) > 0.005]
    assert off == []
    assert sum(want) > 0


def _range(root: Path, of: type, first: dt.date) -> RangeDailyBase:
    configure(root)  # fresh task instances: luigi caches them by parameters
    return RangeDailyBase(of=of, start=first, stop=STOP, now=NOW, days_back=100)


def test_range_daily_can_schedule_a_report_range(tmp_path: Path) -> None:
    """What cron runs: RangeDaily needs DailyReport.bulk_complete (no output has a .path)."""
    configure(tmp_path)
    rng = RangeDaily(of=pipeline.DailyReport, start=FIRST, stop=STOP, now=NOW, days_back=100)
    with planted_env():
        required = rng.requires()
    # RangeDaily schedules at most `task_limit` (default 50) missing days per invocation.
    assert len(required) == min(BACKFILL_DAYS, rng.task_limit)
    assert {type(t).__name__ for t in required} == {"DailyReport"}


def _days(root: Path) -> set[dt.date]:
    return {
        dt.date.fromisoformat(p.parent.name[len("date=") :])
        for p in (root / "payments").glob("date=*/part-0.parquet")
    }


def _count(root: Path, dataset: str) -> int:
    return len(list((root / dataset).glob("date=*/part-0.parquet")))


def _cfg(root: Path) -> str:
    return f"""
[adperf]
sandbox = true
data_root = {root}/lake
warehouse_url = sqlite:///{root}/warehouse.db
[sandbox]
root = {root}/world
profile = tiny
seed = 7
[slack]
outbox = {root}/outbox
"""
