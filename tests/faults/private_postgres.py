"""A private PostgreSQL server for one test module: its own data folder, socket and loopback port.

The fault tests SIGKILL it; the shared server at 127.0.0.1:5432 (CI, other tests) is never
touched. PostgreSQL refuses to run as root: as root, the cluster belongs to the `postgres`
system user the server package creates, in a folder of its own under the temp directory
(pytest's temp folders are private to root).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import sqlalchemy as sa

# What a client sees when nothing listens on the port (libpq's wording).
REFUSED = "Connection refused"


def binaries() -> tuple[str, str] | None:
    """(postgres, initdb): on PATH, else Debian's newest /usr/lib/postgresql/N/bin."""
    server, initdb = shutil.which("postgres"), shutil.which("initdb")
    if server and initdb:
        return server, initdb
    folders = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
    for folder in reversed(folders):
        if Path(folder, "postgres").is_file() and Path(folder, "initdb").is_file():
            return f"{folder}/postgres", f"{folder}/initdb"
    return None


def unavailable(reason: str) -> None:
    """Skip, or fail under CI=true (CI must run every PostgreSQL test)."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"private PostgreSQL test cannot run under CI=true: {reason}")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivatePostgres:
    """`postgres` on 127.0.0.1:<free port>, data in a temp folder; same API as PrivateMariaDB."""

    refused = REFUSED

    def __init__(self) -> None:
        found = binaries()
        if found is None:
            unavailable("postgres / initdb are not installed")
        self.server_bin, self.initdb_bin = found  # type: ignore[misc]
        self._as: dict[str, Any] = {}
        owner = None
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                unavailable("running as root and there is no postgres user to run the server")
            self._as = {"user": owner.pw_uid, "group": owner.pw_gid}  # type: ignore[union-attr]
        self.folder = Path(tempfile.mkdtemp(prefix="adperf-private-pg-"))
        if owner is not None:
            os.chown(self.folder, owner.pw_uid, owner.pw_gid)
        self.data, self.port = self.folder / "data", _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def install(self) -> None:
        """initdb: user postgres, trust on the socket and loopback (a test server)."""
        proc = subprocess.run(
            [self.initdb_bin, "-D", str(self.data), "-U", "postgres", "--auth=trust"]
            + ["--encoding=UTF8", "--no-sync"],
            capture_output=True,
            text=True,
            timeout=120,
            **self._as,
        )
        if proc.returncode != 0:
            unavailable(f"initdb failed: {proc.stderr[-500:]}")

    def start(self) -> None:
        """Start the server (again) on the same port and data; wait until it answers."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        log = (self.folder / "server.log").open("ab")
        self.proc = subprocess.Popen(
            [self.server_bin, "-D", str(self.data), "-p", str(self.port)]
            + ["-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.folder}"]
            + ["-c", "fsync=off", "-c", "shared_buffers=16MB", "-c", "max_connections=30"],
            stdout=log,
            stderr=log,
            **self._as,
        )
        log.close()
        deadline = time.monotonic() + 60
        engine = sa.create_engine(self.url("postgres"))
        try:
            while True:
                try:
                    with engine.connect() as conn:
                        conn.execute(sa.text("SELECT 1"))
                    return
                except sa.exc.OperationalError:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        text = (self.folder / "server.log").read_text(errors="replace")
                        raise RuntimeError(
                            f"private postgres did not start:\n{text[-2000:]}"
                        ) from None
                    time.sleep(0.05)
        finally:
            engine.dispose()

    def kill(self) -> None:
        """SIGKILL the server and its backends (a crash: open transactions die with it).

        The backends go too, as in a machine's crash; left alone they would exit on their own
        once they noticed, but the restart must not find them still attached to the old shared
        memory.
        """
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            children = []
        self.proc.send_signal(signal.SIGKILL)
        for child in children:
            try:
                child.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass
        self.proc.wait(timeout=30)
        psutil.wait_procs(children, timeout=30)

    def url(self, database: str = "") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A fresh database; its URL."""
        engine = sa.create_engine(self.url("postgres"), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                conn.execute(sa.text(f"CREATE DATABASE {name} ENCODING 'UTF8'"))
        finally:
            engine.dispose()
        return self.url(name)

    def remove(self) -> None:
        """Kill the server and delete its folder."""
        self.kill()
        shutil.rmtree(self.folder, ignore_errors=True)
