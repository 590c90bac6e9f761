"""A private MariaDB server for one test module: its own data folder, socket and loopback port.

The fault tests stop and SIGKILL it; the shared server at 127.0.0.1:3306 (CI, other tests) is
never touched.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

MARIADBD_PATHS = ("mariadbd", "/usr/sbin/mariadbd", "/usr/libexec/mariadbd", "mysqld")
INSTALL_DB = ("mariadb-install-db", "mysql_install_db")


def _which(names: tuple[str, ...]) -> str | None:
    for name in names:
        found = shutil.which(name) or (name if Path(name).is_file() else None)
        if found:
            return found
    return None


def binaries() -> tuple[str, str] | None:
    """(mariadbd, mariadb-install-db) if both are installed."""
    server, install = _which(MARIADBD_PATHS), _which(INSTALL_DB)
    return (server, install) if server and install else None


def unavailable(reason: str) -> None:
    """Skip, or fail under CI=true (CI must run every MariaDB test)."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"private MariaDB test cannot run under CI=true: {reason}")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# Small buffers and logs: a test server holds a few thousand rows, and starts in well under 1 s.
_SMALL = ["--innodb-buffer-pool-size=16M", "--innodb-log-file-size=8M", "--skip-log-bin"]


class PrivateMariaDB:
    """`mariadbd --no-defaults` on 127.0.0.1:<free port>, data under `folder`."""

    refused = "Can't connect"  # what a client sees when nothing listens on the port

    def __init__(self, folder: Path) -> None:
        found = binaries()
        if found is None:
            unavailable("mariadbd / mariadb-install-db are not installed")
        self.server_bin, self.install_bin = found  # type: ignore[misc]
        self.folder, self.data, self.port = folder, folder / "data", _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        # Running as root, mariadbd refuses to start unless told which user to be.
        self._user = ["--user=root"] if os.geteuid() == 0 else []

    def install(self) -> None:
        """Create the system tables (root without a password, on TCP too)."""
        proc = subprocess.run(
            [self.install_bin, "--no-defaults", f"--datadir={self.data}", "--skip-test-db"]
            + ["--auth-root-authentication-method=normal", *self._user, *_SMALL],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if proc.returncode != 0:
            unavailable(f"mariadb-install-db failed: {proc.stderr[-500:]}")

    def start(self) -> None:
        """Start the server (again) on the same port and data; wait until it answers."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.proc = subprocess.Popen(
            [self.server_bin, "--no-defaults", f"--datadir={self.data}", *self._user, *_SMALL]
            + [f"--socket={self.folder / 'sock'}", f"--port={self.port}"]
            + ["--bind-address=127.0.0.1", "--skip-name-resolve"]
            + [f"--log-error={self.folder / 'error.log'}", f"--pid-file={self.folder / 'pid'}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        engine = sa.create_engine(self.url())
        try:
            while True:
                try:
                    with engine.connect() as conn:
                        conn.execute(sa.text("SELECT 1"))
                    return
                except sa.exc.OperationalError:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        log = (self.folder / "error.log").read_text(errors="replace")
                        msg = f"private mariadbd did not start:\n{log[-2000:]}"
                        raise RuntimeError(msg) from None
                    time.sleep(0.05)
        finally:
            engine.dispose()

    def kill(self) -> None:
        """SIGKILL the server (a crash: no shutdown, open transactions die with it)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def url(self, database: str = "") -> str:
        return f"mysql+pymysql://root@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A fresh database; its URL."""
        engine = sa.create_engine(self.url())
        try:
            with engine.begin() as conn:
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))  # a test's own name
                conn.execute(sa.text(f"CREATE DATABASE {name} CHARACTER SET utf8mb4"))
        finally:
            engine.dispose()
        return self.url(name) + "?charset=utf8mb4"
