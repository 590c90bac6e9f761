"""Dependency faults at the pipeline level: an unreachable warehouse, a connection killed mid-load.

Source-level faults (API fakes' transient errors, rate limits, hangs, permanent errors; the
payments connection killed mid-extract) are tested beside each source: docs/reliability.md.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from adperf import lake, warehouse
from adperf.sandbox.fake_slack import FakeSlack
from adperf.transform.ltv import with_backtest

from .conftest import CleanRun
from .harness import DAY, SLACK_TOKEN, copy_run, planted, warehouse_rows

REPO = Path(__file__).resolve().parents[2]


def run_report_cli(
    tmp_path: Path, clean: CleanRun, warehouse_url: str
) -> tuple[subprocess.CompletedProcess[str], FakeSlack, Path]:
    """The luigi CLI's DailyReport of the clean run's day (Slack token set, fake Slack) on a
    copy of its lake whose report is not posted yet: (process, the fake Slack, run root)."""
    root = copy_run(clean.root, tmp_path, drop=("reports", "slack_posts"))
    slack = FakeSlack(SLACK_TOKEN)
    url = slack.start()
    cfg = tmp_path / "override.cfg"
    cfg.write_text(
        f"""
[adperf]
sandbox = true
data_root = {root}/lake
warehouse_url = {warehouse_url}
[sandbox]
root = {root}/world
profile = tiny
seed = 7
[slack]
outbox = {root}/outbox
base_url = {url}
"""
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADPERF_")}
    env |= planted() | {"ADPERF_SLACK_TOKEN": SLACK_TOKEN, "LUIGI_CONFIG_PATH": str(cfg)}
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "luigi", "--module", "tasks", "DailyReport", "--date", DAY]
            # --no-lock: luigi's pid lock would make a concurrent identical command exit 10.
            + ["--local-scheduler", "--no-lock"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        slack.stop()
    return proc, slack, root


def test_unreachable_warehouse_exits_non_zero_and_posts_nothing(
    tmp_path: Path, clean: CleanRun
) -> None:
    # Nothing listens on port 1: WarehouseDay.exists() cannot connect when complete() runs.
    proc, slack, root = run_report_cli(tmp_path, clean, "mysql+pymysql://root@127.0.0.1:1/adperf")
    assert proc.returncode == 35, proc.stderr[-2000:]  # [retcode] scheduling_error
    assert "OperationalError" in proc.stderr or "Can't connect" in proc.stderr
    assert slack.messages == [] and slack.files == []
    assert not (root / "outbox").exists()
    assert not (root / "lake" / "slack_posts").exists()
    assert SLACK_TOKEN not in proc.stdout + proc.stderr


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_connection_killed_mid_load_loads_nothing_then_the_retry_loads_once(
    clean: CleanRun, server_warehouse_engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kill the load's connection from another session inside its transaction (MariaDB and
    PostgreSQL)."""
    from adperf.transform.restatement import rows_in_windows

    server = server_warehouse_engine

    root = clean.root / "lake"

    def read(dataset: str):  # type: ignore[no-untyped-def]
        return lake.read_partition(root, dataset, "date", DAY)

    spend_meta = lake.read_meta(root, "spend_latest", "date", DAY)
    windows = {p: (w[0], w[1]) for p, w in spend_meta["windows"].items()}
    frames = {
        "campaign_daily": read("campaign_report"),
        "cohort_roas": read("cohort_roas"),
        "cohort_roas_segments": read("cohort_roas_segments"),
        # LtvModel's row with the backtest Ltv made of it, as LoadReport loads it.
        "ltv_model": pd.DataFrame(
            [
                with_backtest(
                    read("ltv_model").iloc[0].to_dict(), read("ltv_backtest").iloc[0].to_dict()
                )
            ]
        ),
        "revenue_reconciliation": read("reconciliation"),
        "actions": read("actions"),
        "source_discrepancy": read("source_discrepancy"),
        "action_outcomes": read("action_outcomes"),
    }
    pull = (rows_in_windows(read("spend_latest"), windows), windows)

    real = warehouse.to_rows
    killed: list[int] = []

    def to_rows(df, table):  # type: ignore[no-untyped-def]
        if table.name == "cohort_roas" and not killed:
            with server.connect() as admin:
                killed.extend(_kill_open_transactions(admin))
        return real(df, table)

    monkeypatch.setattr(warehouse, "to_rows", to_rows)
    engine = warehouse.make_engine(server.url.render_as_string(hide_password=False))
    try:
        with pytest.raises(sa.exc.OperationalError):
            warehouse.load_day(engine, DAY, frames, spend_pull=pull)
        assert killed
        assert not warehouse.is_loaded(engine, DAY)
        with engine.connect() as conn:
            for name, table in warehouse.REPORT_TABLES.items():
                n = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
                assert n == 0, name
        monkeypatch.setattr(warehouse, "to_rows", real)
        warehouse.load_day(engine, DAY, frames, spend_pull=pull)  # the retry
        warehouse.load_day(engine, DAY, frames, spend_pull=pull)  # and a re-run
    finally:
        engine.dispose()
    got = warehouse_rows(server.url.render_as_string(hide_password=False))
    want = warehouse_rows(clean.warehouse_url)
    for name, rows in want.items():
        # No action was applied in the clean run: no follow-ups.
        assert len(got[name]) == len(rows) > 0 or name in ("actions", "action_outcomes"), name
        key = [c.name for c in warehouse.REPORT_TABLES[name].primary_key.columns]
        assert not got[name].duplicated(key).any(), name
        assert got[name][key].equals(rows[key]), name


def _kill_open_transactions(admin: sa.Connection) -> list[int]:
    """Kill every other session on this test's database holding an open transaction (the
    load's), never another's on the shared server; their ids."""
    if admin.dialect.name == "postgresql":
        ids = admin.execute(
            sa.text(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND xact_start IS NOT NULL"
            )
        ).scalars()
        kill = "SELECT pg_terminate_backend(:id)"
    else:
        ids = admin.execute(
            sa.text(
                "SELECT t.trx_mysql_thread_id FROM information_schema.innodb_trx t "
                "JOIN information_schema.processlist p ON p.id = t.trx_mysql_thread_id "
                "WHERE p.db = DATABASE() AND t.trx_mysql_thread_id <> CONNECTION_ID()"
            )
        ).scalars()
        kill = "KILL CONNECTION :id"
    killed = list(ids)
    for session in killed:
        admin.execute(sa.text(kill), {"id": session})
    return killed
