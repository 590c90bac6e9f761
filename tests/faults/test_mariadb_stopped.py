"""A MariaDB server SIGKILLed mid-extract (payments source); a MariaDB or PostgreSQL warehouse
server SIGKILLed mid-load, and down when `complete()` runs. Private servers (private_mariadb.py,
private_postgres.py), never the shared ones."""

from __future__ import annotations

import logging
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
from luigi.execution_summary import LuigiStatusCode
from luigi.task_register import Register

from adperf import lake, warehouse
from adperf.sandbox.world import create_payments_table, insert_payments
from tasks import resources
from tasks.extract import Payments
from tasks.load import LoadReport

from .conftest import CleanRun
from .harness import (
    DAY,
    END,
    assert_no_report_rows_but_the_ltv_model,
    assert_same_warehouse,
    build,
    configure,
    copy_run,
    planted_env,
    warehouse_rows,
)
from .private_mariadb import PrivateMariaDB
from .private_postgres import PrivatePostgres
from .test_dependencies import run_report_cli

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateMariaDB]:
    db = PrivateMariaDB(tmp_path_factory.mktemp("mariadb"))
    db.install()
    db.start()
    try:
        yield db
    finally:
        db.kill()


@pytest.fixture(
    scope="module", params=["mariadb", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def warehouse_server(
    request: pytest.FixtureRequest,
) -> Iterator[PrivateMariaDB | PrivatePostgres]:
    """The warehouse's server: the module's private MariaDB, or a private PostgreSQL."""
    if request.param == "mariadb":
        yield request.getfixturevalue("server")
        return
    db = PrivatePostgres()
    try:
        db.install()
        db.start()
        yield db
    finally:
        db.remove()


@pytest.fixture(scope="module")
def payments_url(server: PrivateMariaDB, clean: CleanRun) -> str:
    """The world's payments table, copied into the private server."""
    url = server.create_database("payments_src")
    with sqlite3.connect(clean.root / "world" / "payments.sqlite") as conn:
        rows = pd.read_sql("SELECT * FROM payments", conn)
    engine = sa.create_engine(url)
    try:
        create_payments_table(engine)
        insert_payments(engine, rows)
    finally:
        engine.dispose()
    return url


class _Errors(logging.Handler):
    """The text of every ERROR luigi logs (a failed task's exception)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.text = ""

    def emit(self, record: logging.LogRecord) -> None:
        self.text += record.getMessage() + "\n"
        if record.exc_info:
            self.text += logging.Formatter().formatException(record.exc_info) + "\n"


def _build(task: Any) -> tuple[Any, str]:
    """Run `task` in this process (so the patches below apply); (result, error log text)."""
    errors = _Errors()
    logger = logging.getLogger("luigi-interface")
    logger.addHandler(errors)
    try:
        with planted_env():
            result = build(task)
    finally:
        logger.removeHandler(errors)
        Register.clear_instance_cache()
    return result, errors.text


def _payments_from(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    """Point the sandbox's payments source at `url` (the other endpoints stay the fakes)."""
    monkeypatch.setattr(resources, "payments_url", lambda day=None: url)


def test_server_killed_mid_extract_fails_the_day_then_the_rerun_reads_it_whole(
    tmp_path: Path,
    clean: CleanRun,
    server: PrivateMariaDB,
    payments_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from adperf.sources import payments

    partition = f"payments/date={DAY}"
    _payments_from(monkeypatch, payments_url)
    # The reference: the day read from the healthy private server (then removed again; one
    # root for both runs, so the sandbox's fakes start once).
    root = copy_run(clean.root, tmp_path, drop=(partition,))
    configure(root)
    result, _ = _build(Payments(date=END))
    assert result.status == LuigiStatusCode.SUCCESS, result.summary_text
    want = (root / "lake" / partition / lake.DATA_FILE).read_bytes()
    shutil.rmtree(root / "lake" / partition)

    # Small chunks, and the server SIGKILLed once the first one is read: a crash mid-stream.
    real_iter, chunks = payments.iter_payments, []

    def iter_payments(*args: Any, **kw: Any) -> Iterator[pd.DataFrame]:
        for chunk in real_iter(*args, **(kw | {"chunk_rows": 10})):
            chunks.append(len(chunk))
            server.kill()
            yield chunk

    monkeypatch.setattr(payments, "iter_payments", iter_payments)
    configure(root)
    try:
        result, errors = _build(Payments(date=END))
    finally:
        server.start()
    # Killed after the first chunk; rows already in the socket may still arrive, but the read
    # cannot finish (its snapshot transaction is gone), and the retry cannot connect.
    assert chunks and chunks[0] == 10
    assert result.status == LuigiStatusCode.FAILED, result.summary_text
    assert f"payments for {DAY}:" in errors and "Fix:" in errors, errors[-2000:]
    assert not Payments(date=END).complete()
    assert not (root / "lake" / partition).exists()
    assert not list((root / "lake" / "payments").glob("_tmp-*"))

    monkeypatch.setattr(payments, "iter_payments", real_iter)
    configure(root)
    result, _ = _build(Payments(date=END))
    assert result.status == LuigiStatusCode.SUCCESS, result.summary_text
    assert (root / "lake" / partition / lake.DATA_FILE).read_bytes() == want


def test_server_killed_mid_load_loads_nothing_then_the_rerun_loads_the_clean_rows(
    tmp_path: Path,
    clean: CleanRun,
    warehouse_server: PrivateMariaDB | PrivatePostgres,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = warehouse_server
    # The reference: the day loaded into the healthy private server.
    want_url = server.create_database("wh_clean")
    root = copy_run(clean.root, tmp_path)
    configure(root, warehouse_url=want_url)
    result, _ = _build(LoadReport(date=END))
    assert result.status == LuigiStatusCode.SUCCESS, result.summary_text

    url = server.create_database("wh_run")
    real_rows, killed = warehouse.to_rows, []

    def to_rows(df: pd.DataFrame, table: sa.Table) -> Any:
        if table.name == "cohort_roas" and not killed:
            killed.append(table.name)  # inside the load's transaction, rows already sent
            server.kill()
        return real_rows(df, table)

    monkeypatch.setattr(warehouse, "to_rows", to_rows)
    configure(root, warehouse_url=url)
    try:
        result, errors = _build(LoadReport(date=END))
    finally:
        server.start()
    assert killed and result.status == LuigiStatusCode.FAILED, result.summary_text
    assert f"warehouse for {DAY}:" in errors and "Fix:" in errors, errors[-2000:]
    assert "INSERT" not in errors  # no SQL statement or row values in the error
    configure(root, warehouse_url=url)
    assert not LoadReport(date=END).complete()
    assert_no_report_rows_but_the_ltv_model(url)

    monkeypatch.setattr(warehouse, "to_rows", real_rows)
    result, _ = _build(LoadReport(date=END))
    assert result.status == LuigiStatusCode.SUCCESS, result.summary_text
    assert_same_warehouse(warehouse_rows(url), warehouse_rows(want_url))


def test_warehouse_server_down_at_complete_exits_non_zero_and_posts_nothing(
    tmp_path: Path, clean: CleanRun, warehouse_server: PrivateMariaDB | PrivatePostgres
) -> None:
    server = warehouse_server
    url = server.create_database("wh_down")
    server.kill()
    try:
        proc, slack, root = run_report_cli(tmp_path, clean, url)
    finally:
        server.start()
    assert proc.returncode == 35, proc.stderr[-2000:]  # [retcode] scheduling_error
    assert server.refused in proc.stderr
    assert slack.messages == [] and slack.files == []
    assert not (root / "outbox").exists() and not (root / "lake" / "slack_posts").exists()
