"""Shared fixtures: databases on the MariaDB and PostgreSQL servers (fail instead of skipping
under CI), and a warehouse engine on each backend."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

MYSQL_URL = os.environ.get("ADPERF_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306")
POSTGRES_URL = os.environ.get(
    "ADPERF_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432"
)


def _unavailable(reason: str, server: str = "MySQL") -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{server} test cannot run under CI=true: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def mysql_server_url() -> Iterator[str]:
    """URL of a fresh database on the MariaDB server, dropped at the end of the session."""
    with _mysql_database("adperf_test_", 8) as url:
        yield url


@pytest.fixture()
def mysql_engine(mysql_server_url: str) -> Iterator[sa.Engine]:
    """An engine on the session's MariaDB database; tables are dropped after each test."""
    with _dropping_tables(mysql_server_url) as engine:
        yield engine


@pytest.fixture()
def mysql_database() -> Iterator[str]:
    """URL of a database of its own for this test on the MariaDB server, dropped after it."""
    with _mysql_database("adperf_t_", 12) as url:
        yield url


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """URL of a fresh database on the PostgreSQL server, dropped at the end of the session."""
    with _postgres_database("adperf_test_", 8) as url:
        yield url


@pytest.fixture()
def postgres_engine(postgres_server_url: str) -> Iterator[sa.Engine]:
    """An engine on the session's PostgreSQL database; tables are dropped after each test."""
    with _dropping_tables(postgres_server_url) as engine:
        yield engine


@pytest.fixture()
def postgres_database() -> Iterator[str]:
    """URL of a database of its own for this test on the PostgreSQL server, dropped after it."""
    with _postgres_database("adperf_t_", 12) as url:
        yield url


# The warehouse backends every warehouse test runs on; the servers' marks select or skip them.
WAREHOUSE_BACKENDS = [
    "sqlite",
    pytest.param("mariadb", marks=pytest.mark.mysql),
    pytest.param("postgres", marks=pytest.mark.postgres),
]
SERVER_BACKENDS = WAREHOUSE_BACKENDS[1:]
_SERVER_ENGINES = {"mariadb": "mysql_engine", "postgres": "postgres_engine"}


@pytest.fixture(params=WAREHOUSE_BACKENDS)
def warehouse_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    """An empty warehouse on SQLite (a file in tmp_path), MariaDB or PostgreSQL."""
    if request.param != "sqlite":
        yield request.getfixturevalue(_SERVER_ENGINES[request.param])
        return
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'warehouse.db'}")
    yield engine
    engine.dispose()


@pytest.fixture(params=SERVER_BACKENDS)
def server_warehouse_engine(request: pytest.FixtureRequest) -> sa.Engine:
    """An empty warehouse on a database server: MariaDB or PostgreSQL."""
    engine: sa.Engine = request.getfixturevalue(_SERVER_ENGINES[request.param])
    return engine


@contextlib.contextmanager
def _mysql_database(prefix: str, digits: int) -> Iterator[str]:
    name = f"{prefix}{uuid.uuid4().hex[:digits]}"
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


@contextlib.contextmanager
def _postgres_database(prefix: str, digits: int) -> Iterator[str]:
    name = f"{prefix}{uuid.uuid4().hex[:digits]}"
    try:
        # CREATE/DROP DATABASE cannot run inside a transaction block.
        admin = sa.create_engine(POSTGRES_URL + "/postgres", isolation_level="AUTOCOMMIT")
    except ModuleNotFoundError as exc:
        _unavailable(f"no PostgreSQL driver ({exc}): pip install -e '.[test]'", "PostgreSQL")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f"CREATE DATABASE {name} ENCODING 'UTF8' TEMPLATE template0"))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        _unavailable(f"PostgreSQL at {POSTGRES_URL} is not reachable ({exc.orig})", "PostgreSQL")
    try:
        yield f"{POSTGRES_URL}/{name}"
    finally:
        with admin.connect() as conn:
            # FORCE: a killed worker's connection may still be closing (PostgreSQL 13+).
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


@contextlib.contextmanager
def _dropping_tables(url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()  # no connection of the test holds a lock the drops would wait for
        meta = sa.MetaData()
        meta.reflect(engine)
        meta.drop_all(engine)
        engine.dispose()


# ---------------------------------------------------------------- heavy setups in the background
#
# Two module setups are long and self-contained: the bench's small profile (a subprocess) and
# the LTV truth test's 210-day medium world. When their tests are selected they start as
# background processes as soon as collection ends, on the machine's second core, while the rest
# of the suite runs; their fixtures then wait for them (`background_result`). Nothing is
# skipped or shared: the same commands the fixtures would run, started earlier.

_BACKGROUND: dict[str, tuple[subprocess.Popen[str], Path]] = {}
_REPO = Path(__file__).resolve().parents[1]


def background_commands(out: Path) -> dict[str, tuple[str, list[str], dict[str, str]]]:
    """name -> (test module whose selection starts it, argv, extra environment)."""
    return {
        "bench-small": (
            "tests/bench/test_bench_smoke.py",
            [sys.executable, "-m", "bench", "--profile", "small", "--repeat", "1", "--out",
             str(out)],
            {"BENCH_WORKERS": "1"},
        ),
        "ltv-truth-world": (
            "tests/transform/test_ltv_truth.py",
            [sys.executable, "-m", "tests.transform.test_ltv_truth", str(out / "world")],
            {},
        ),
    }  # fmt: skip


def pytest_collection_modifyitems(session: pytest.Session, items: list[pytest.Item]) -> None:
    """The modules with a background setup run last, so the suite never waits for them early."""
    late = {module for module, _, _ in background_commands(Path()).values()}
    items.sort(key=lambda item: item.nodeid.split("::")[0] in late)  # stable: order kept


def pytest_collection_finish(session: pytest.Session) -> None:
    selected = {item.nodeid.split("::")[0] for item in session.items}
    base = Path(tempfile.mkdtemp(prefix="adperf-tests-bg-"))
    for name, (module, _, _) in background_commands(base).items():
        if module not in selected or len(selected) == 1:
            continue  # a run of that one module alone gains nothing
        out = base / name
        out.mkdir()
        _, argv, env = background_commands(out)[name]
        with (out / "stdout.txt").open("w") as stdout, (out / "stderr.txt").open("w") as stderr:
            proc = subprocess.Popen(
                argv, cwd=_REPO, stdout=stdout, stderr=stderr, text=True,
                env={**os.environ, **env},
            )  # fmt: skip
        _BACKGROUND[name] = (proc, out)


def background_result(name: str, timeout: float) -> tuple[int, Path, str, str] | None:
    """(exit code, output folder, stdout, stderr) of a background setup; None if not started."""
    if name not in _BACKGROUND:
        return None
    proc, out = _BACKGROUND[name]
    proc.wait(timeout=timeout)
    read = lambda f: (out / f).read_text(errors="replace")  # noqa: E731
    return proc.returncode, out, read("stdout.txt"), read("stderr.txt")


def pytest_sessionfinish(session: pytest.Session) -> None:
    for proc, out in _BACKGROUND.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(out.parent, ignore_errors=True)
