"""Shared fixtures: a MariaDB database per test session (fails instead of skipping under CI)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

MYSQL_URL = os.environ.get("ADPERF_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306")


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"MySQL test cannot run under CI=true: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def mysql_server_url() -> Iterator[str]:
    """URL of a fresh database on the MariaDB server, dropped at the end of the session."""
    name = f"adperf_test_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(MYSQL_URL + "/test")
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f"CREATE DATABASE {name} CHARACTER SET utf8mb4"))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        _unavailable(f"MariaDB at {MYSQL_URL} is not reachable ({exc.orig})")
    try:
        yield f"{MYSQL_URL}/{name}?charset=utf8mb4"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
        admin.dispose()


@pytest.fixture()
def mysql_engine(mysql_server_url: str) -> Iterator[sa.Engine]:
    """An engine on the session's MariaDB database; tables are dropped after each test."""
    engine = sa.create_engine(mysql_server_url)
    try:
        yield engine
    finally:
        meta = sa.MetaData()
        meta.reflect(engine)
        meta.drop_all(engine)
        engine.dispose()
