"""SIGKILL a worker inside a lake write, a warehouse load and the Slack post; run again.

Each test starts from a copy of the clean run's lake with the outputs of the step under test
removed, kills a real luigi worker process at that step (it signals when it is there), checks
that nothing partial looks complete, runs the day again and compares with the clean run: the
same lake bytes, the same warehouse rows (row for row), one Slack message.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from luigi.execution_summary import LuigiStatusCode

from adperf import lake, warehouse
from adperf.sandbox.fake_slack import FakeSlack
from tasks.load import LoadReport, SlackReport
from tasks.transform import CampaignReport

from .conftest import CleanRun
from .harness import (
    DAY,
    END,
    SLACK_TOKEN,
    assert_no_report_rows_but_the_ltv_model,
    assert_same_warehouse,
    build,
    configure,
    copy_run,
    lake_parquet,
    planted,
    planted_env,
    warehouse_rows,
)

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("_worker.py")
# What a report day's load and Slack post leave in the lake; removed to run those steps again.
POST_LOAD = ("reports", "slack_posts")


def kill_at(
    root: Path, mode: str, *, warehouse_url: str = "", slack_url: str = "", slack: bool = False
) -> None:
    """Run DailyReport in a worker process and SIGKILL it at `mode` (see _worker.py)."""
    ready = root / f"ready-{mode}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADPERF_")}
    env |= planted() | ({"ADPERF_SLACK_TOKEN": SLACK_TOKEN} if slack else {})
    args = [sys.executable, str(WORKER), str(root), mode, str(ready), warehouse_url, slack_url]
    proc = subprocess.Popen(
        args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 240
        while not ready.exists():
            if proc.poll() is not None:
                pytest.fail(f"worker ended before {mode}: {proc.stderr.read()[-3000:]}")  # type: ignore[union-attr]
            assert time.monotonic() < deadline, f"worker never reached {mode}"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()  # type: ignore[union-attr]


def rerun(root: Path, warehouse_url: str | None = None, slack_url: str | None = None) -> None:
    configure(root, warehouse_url=warehouse_url, slack_url=slack_url)
    with planted_env(slack=slack_url is not None):
        result = build()
    assert result.status == LuigiStatusCode.SUCCESS, result.summary_text


def test_kill_inside_a_lake_write_leaves_nothing_complete(tmp_path: Path, clean: CleanRun) -> None:
    partition = f"campaign_report/date={DAY}"
    root = copy_run(clean.root, tmp_path, drop=(partition, f"actions/date={DAY}", *POST_LOAD))
    kill_at(root, "lake")

    folder = root / "lake" / "campaign_report"
    leftovers = [p for p in folder.iterdir() if p.name.startswith(lake.TMP_PREFIX)]
    assert len(leftovers) == 1 and (leftovers[0] / lake.DATA_FILE).is_file()  # the half file
    assert not (folder / f"date={DAY}").exists()
    configure(root)
    # The task wrote `actions` before it was killed: one of two outputs is not complete.
    assert lake.partition_exists(root / "lake", "actions", "date", DAY)
    assert not CampaignReport(date=END).complete()
    assert not LoadReport(date=END).complete()

    rerun(root)
    assert lake_parquet(root) == lake_parquet(clean.root)
    got = warehouse_rows(f"sqlite:///{root / 'warehouse.db'}")
    assert_same_warehouse(got, warehouse_rows(clean.warehouse_url))
    # The dead writer's temp folder is ignored; the next write of the folder removes it once
    # it is older than any live writer can be (a fresh one may belong to a concurrent writer).
    assert leftovers[0].exists()
    old = time.time() - lake.STALE_TMP_SECONDS - 60
    os.utime(leftovers[0], (old, old))
    report = lake.read_partition(root / "lake", "campaign_report", "date", DAY)
    lake.write_frame(root / "lake", "campaign_report", "date", DAY, report)
    assert not leftovers[0].exists()
    assert [p.name for p in folder.iterdir()] == [f"date={DAY}"]


def test_kill_inside_a_sqlite_load_rolls_the_day_back(tmp_path: Path, clean: CleanRun) -> None:
    root = copy_run(clean.root, tmp_path, drop=POST_LOAD)
    url = f"sqlite:///{root / 'warehouse.db'}"
    kill_at(root, "warehouse")
    _assert_day_not_loaded(url)
    rerun(root)
    assert_same_warehouse(warehouse_rows(url), warehouse_rows(clean.warehouse_url))


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_kill_inside_a_server_load_rolls_the_day_back(
    tmp_path: Path, clean: CleanRun, server_warehouse_engine: sa.Engine
) -> None:
    """On MariaDB and PostgreSQL: the server rolls back the dead worker's transaction."""
    engine = server_warehouse_engine
    url = engine.url.render_as_string(hide_password=False)
    # The reference: the clean lake loaded into the server without a fault (its own types).
    reference = copy_run(clean.root, tmp_path / "reference", drop=POST_LOAD)
    configure(reference, warehouse_url=url)
    with planted_env():
        assert build(LoadReport(date=END)).status == LuigiStatusCode.SUCCESS
    want = warehouse_rows(url)
    with engine.begin() as conn:
        markers = [warehouse.load_marker.name, warehouse.table_marker.name]
        for table in [*warehouse.REPORT_TABLES, *markers]:
            conn.execute(sa.text(f"DELETE FROM {table}"))  # identifiers from our metadata

    root = copy_run(clean.root, tmp_path / "run", drop=POST_LOAD)
    kill_at(root, "warehouse", warehouse_url=url)
    _assert_day_not_loaded(url)
    rerun(root, warehouse_url=url)
    assert_same_warehouse(warehouse_rows(url), want)


def _assert_day_not_loaded(url: str) -> None:
    """The killed transaction left neither the marker nor any of the day's rows (ltv_model
    holds only what LtvModel loaded before, in a transaction of its own)."""
    assert_no_report_rows_but_the_ltv_model(url)


@pytest.fixture()
def slack_fake() -> FakeSlack:
    fake = FakeSlack(SLACK_TOKEN)
    fake.url = fake.start()  # type: ignore[attr-defined]
    yield fake  # type: ignore[misc]
    fake.stop()


def test_kill_after_the_marker_is_saved_never_posts_twice(
    tmp_path: Path, clean: CleanRun, slack_fake: FakeSlack
) -> None:
    root = copy_run(clean.root, tmp_path, drop=("slack_posts",))
    _copy_warehouse(clean, root)
    kill_at(root, "slack_upload", slack_url=slack_fake.url, slack=True)
    assert len(slack_fake.messages) == 1 and slack_fake.files == []
    marker = json.loads((root / "lake" / "slack_posts" / f"{DAY}.json").read_text())
    assert marker["complete"] is False and marker["ts"] == slack_fake.messages[0]["ts"]
    configure(root, slack_url=slack_fake.url)
    with planted_env(slack=True):
        assert not SlackReport(date=END).complete()

    rerun(root, slack_url=slack_fake.url)
    assert len(slack_fake.messages) == 1  # the thread got its files; no second post
    assert [f["thread_ts"] for f in slack_fake.files] == [marker["ts"]] * 2
    assert slack_fake.messages[0]["blocks"] == clean.messages[0]["blocks"]


def test_kill_between_the_post_and_the_marker_never_posts_twice(
    tmp_path: Path, clean: CleanRun, slack_fake: FakeSlack
) -> None:
    root = copy_run(clean.root, tmp_path, drop=("slack_posts",))
    _copy_warehouse(clean, root)
    kill_at(root, "slack_post", slack_url=slack_fake.url, slack=True)
    assert len(slack_fake.messages) == 1
    # Slack has the post; the marker only says one was about to be made (no ts).
    pending = json.loads((root / "lake" / "slack_posts" / f"{DAY}.json").read_text())
    assert pending["complete"] is False and "ts" not in pending
    assert pending["key"] == f"adperf-report-{DAY}" == _posted_key(slack_fake.messages[0])
    rerun(root, slack_url=slack_fake.url)
    assert len(slack_fake.messages) == 1  # looked up in conversations.history and adopted
    marker = json.loads((root / "lake" / "slack_posts" / f"{DAY}.json").read_text())
    assert marker["complete"] is True and marker["ts"] == slack_fake.messages[0]["ts"]
    assert [f["thread_ts"] for f in slack_fake.files] == [marker["ts"]] * 2
    paths = [r["path"] for r in slack_fake.requests_seen]
    assert paths.count("/api/chat.postMessage") == 1 and "/api/conversations.history" in paths


def _posted_key(message: dict[str, object]) -> object:
    metadata = message.get("metadata")
    assert isinstance(metadata, dict) and metadata["event_type"] == "adperf_report"
    return metadata["event_payload"]["key"]


def _copy_warehouse(clean: CleanRun, root: Path) -> None:
    (root / "warehouse.db").write_bytes((clean.root / "warehouse.db").read_bytes())


def test_left_over_temp_folders_are_ignored_by_readers(tmp_path: Path) -> None:
    """A dead writer's temp folder never counts as the partition, wherever it sits."""
    import pandas as pd

    root = tmp_path / "lake"
    df = pd.DataFrame({"x": [1, 2, 3]})
    lake.write_frame(root, "d", "date", DAY, df)
    junk = root / "d" / f"{lake.TMP_PREFIX}date=2026-11-21-{uuid.uuid4().hex}"
    junk.mkdir()
    (junk / lake.DATA_FILE).write_bytes(b"PAR1 half a file")
    assert not lake.partition_exists(root, "d", "date", "2026-11-21")
    assert lake.read_partitions(root, "d", "date", [DAY]).equals(df)
    # A fresh temp folder may be a live writer's: kept; a stale one is removed.
    lake.write_frame(root, "d", "date", DAY, df)
    assert junk.exists()
    old = time.time() - lake.STALE_TMP_SECONDS - 1
    os.utime(junk, (old, old))
    lake.write_frame(root, "d", "date", DAY, df)
    assert not junk.exists()
