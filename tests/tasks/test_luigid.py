"""The luigid launcher: the SQLAlchemy 2 task-history shim; a real luigid running DailyReport."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import luigi
import pytest
import sqlalchemy as sa
from luigi.execution_summary import LuigiStatusCode

from tasks import luigid

from .conftest import END

REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- the shim


def _history(tmp_path: Path, name: str) -> Any:
    from luigi import db_task_history

    cfg = luigi.configuration.get_config()
    cfg.set("task_history", "db_connection", f"sqlite:///{tmp_path / name}")
    return db_task_history.DbTaskHistory()


def test_luigi_task_history_needs_the_shim_under_sqlalchemy_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from luigi import db_task_history

    original = db_task_history._upgrade_schema
    if original is luigid.upgrade_task_history_schema:
        pytest.skip("the shim is already installed in this process")
    if "sqlalchemy.text" in open(db_task_history.__file__).read():
        pytest.skip("this luigi wraps its SQL itself (spotify/luigi#3227 released)")
    with pytest.raises(sa.exc.ObjectNotExecutableError, match="PRAGMA table_info"):
        _history(tmp_path, "unshimmed.db")


def test_shim_records_task_history_and_upgrades_an_old_schema(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from luigi import db_task_history, scheduler

    monkeypatch.setattr(db_task_history, "_upgrade_schema", db_task_history._upgrade_schema)
    luigid.install_task_history_shim()
    # A database from an old luigi: tasks without task_id (upgrade 1 must add it).
    with sqlite3.connect(tmp_path / "old.db") as conn:
        conn.execute("CREATE TABLE tasks (id INTEGER PRIMARY KEY, name VARCHAR(128), host TEXT)")
    history = _history(tmp_path, "old.db")
    task = scheduler.Task("Payments_2026_11_20_x", "PENDING", [], params={"date": "2026-11-20"})
    task.family = "Payments"
    history.task_scheduled(task)
    history.task_started(task, "worker-host")
    history.task_finished(task, successful=True)
    with sqlite3.connect(tmp_path / "old.db") as conn:
        columns = [r[1] for r in conn.execute("PRAGMA table_info(tasks)")]
        rows = conn.execute("SELECT task_id, name, host FROM tasks").fetchall()
        events = [r[0] for r in conn.execute("SELECT event_name FROM task_events ORDER BY id")]
        params = conn.execute("SELECT name, value FROM task_parameters").fetchall()
    assert "task_id" in columns
    assert rows == [("Payments_2026_11_20_x", "Payments", "worker-host")]
    assert events == ["PENDING", "RUNNING", "DONE"]
    assert params == [("date", "2026-11-20")]


# ---------------------------------------------------------------- a real luigid


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def api(port: int, method: str, data: dict[str, Any]) -> Any:
    query = urllib.parse.urlencode({"data": json.dumps(data)})
    url = f"http://127.0.0.1:{port}/api/{method}?{query}"
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())["response"]


def start_luigid(var: Path, scheduler: str = "") -> Iterator[int]:
    """`python -m tasks.luigid` on a free loopback port with state and history under `var`;
    `scheduler`: lines of its luigi.cfg's [scheduler] section (none: luigi's defaults)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "LUIGI_CONFIG_PATH"}
    if scheduler:
        (var / "luigid.cfg").write_text(f"[scheduler]\n{scheduler}")
        env["LUIGI_CONFIG_PATH"] = str(var / "luigid.cfg")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tasks.luigid", "--address", "127.0.0.1", "--port", str(port)]
        + ["--state-path", str(var / "luigi-state.pickle")]
        + ["--history-db", f"sqlite:///{var / 'luigi-task-history.db'}"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(var / "luigid.log", "w"),  # noqa: SIM115 - closed with the process
    )
    try:
        wait_for_api(port, lambda: proc.poll() is None, var / "luigid.log")
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """A luigid for this module: its port and its var/ folder."""
    var = tmp_path_factory.mktemp("var")
    for port in start_luigid(var):
        yield port, var


def _family_edges(port: int, root_id: str) -> set[tuple[str, str]]:
    graph = api(port, "dep_graph", {"task_id": root_id})
    return {
        (node["name"], graph[dep]["name"])
        for node in graph.values()
        for dep in node["deps"]
        if dep in graph
    }


# The design's graph (DESIGN.md "Data flow"): each arrow a -> b means a depends on b, directly
# or through intermediate tasks (a graph may refine an arrow, never drop it).
DESIGN_EDGES = {
    ("DailyReport", "LoadReport"),
    ("DailyReport", "SlackReport"),
    ("SlackReport", "LoadReport"),
    ("SlackReport", "CampaignReport"),
    ("SlackReport", "Attribution"),
    ("LoadReport", "Spend"),
    ("LoadReport", "CampaignReport"),
    ("LoadReport", "CohortRoas"),
    ("LoadReport", "Ltv"),
    ("LoadReport", "Attribution"),
    ("CampaignReport", "AdSpend"),
    ("CampaignReport", "Installs"),
    ("CampaignReport", "Attribution"),
    ("CampaignReport", "Contribution"),
    ("CampaignReport", "Ltv"),
    ("CohortRoas", "Installs"),
    ("CohortRoas", "Payments"),
    ("CohortRoas", "AdSpend"),
    ("Spend", "AdSpend"),
    ("Attribution", "Payments"),
    ("Attribution", "InstallHistory"),
    ("Ltv", "PaymentHistory"),
    ("Ltv", "InstallHistory"),
    ("Contribution", "EventLogs"),
    ("Contribution", "Payments"),
    ("Contribution", "InstallHistory"),
    ("InstallHistory", "Installs"),
    ("InstallHistory", "InstallsMonth"),
    ("PaymentHistory", "Payments"),
    ("PaymentHistory", "PaymentsMonth"),
    ("EventLogs", "LogFiles"),
}


def test_daily_report_on_luigid_shows_the_design_graph_and_records_history(
    module_root: Path, server: tuple[int, Path]
) -> None:
    from tasks.load import DailyReport
    from tasks.resources import resources

    scheduler_port, var = server
    resources(END)  # the sandbox's fake endpoints start here, before the workers fork
    root = DailyReport(date=END)
    result = luigi.build(
        [root],
        scheduler_host="127.0.0.1",
        scheduler_port=scheduler_port,
        workers=2,
        detailed_summary=True,
    )

    edges = _family_edges(scheduler_port, root.task_id)
    unreached = {(a, b) for a, b in DESIGN_EDGES if b not in _reachable(edges, a)}
    assert not unreached
    assert edges == _local_edges(root)  # luigid shows exactly the graph the tasks declare

    with sqlite3.connect(var / "luigi-task-history.db") as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM tasks")}
        events = set(
            conn.execute(
                "SELECT t.name, e.event_name FROM task_events e JOIN tasks t ON t.id = e.task_id"
            )
        )
    assert {"DailyReport", "LoadReport", "EventLogs", "Payments"} <= names
    assert {("Payments", "PENDING"), ("Payments", "RUNNING"), ("Payments", "DONE")} <= events

    done = api(scheduler_port, "task_list", {"status": "DONE"})
    families = {t["name"] for t in done.values()}
    assert {"DailyReport", "LoadReport", "SlackReport", "CampaignReport", "Ltv"} <= families
    assert not api(scheduler_port, "task_list", {"status": "FAILED"})
    assert ("DailyReport", "DONE") in events
    assert result.status == LuigiStatusCode.SUCCESS, result.summary_text


def _reachable(edges: set[tuple[str, str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        for a, b in edges:
            if a == node and b not in seen:
                seen.add(b)
                todo.append(b)
    return seen


def _local_edges(root: luigi.Task) -> set[tuple[str, str]]:
    """Family edges of the graph walked from `root` through requires()."""
    from luigi.task import flatten

    edges: set[tuple[str, str]] = set()
    seen: set[str] = set()
    todo = [root]
    while todo:
        task = todo.pop()
        if task.task_id in seen:
            continue
        seen.add(task.task_id)
        for dep in flatten(task.requires()):
            edges.add((task.task_family, dep.task_family))
            todo.append(dep)
    return edges


# ---------------------------------------------------------------- plain luigid, adperf luigid


def repo_root_copy(dest: Path) -> Path:
    """The repository's tracked luigi.cfg and var/ (what a fresh checkout has) in `dest`."""
    tracked = subprocess.run(
        ["git", "ls-files", "luigi.cfg", "var"], cwd=REPO, capture_output=True, text=True
    ).stdout.split()
    assert "luigi.cfg" in tracked
    for name in tracked:
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        (dest / name).write_bytes((REPO / name).read_bytes())
    return dest


def wait_for_api(port: int, alive: Any, log: Path) -> None:
    """Until luigid's API answers (30 s at most); its log if it died (`alive()` false) instead."""
    deadline = time.monotonic() + 30
    while True:
        try:
            api(port, "task_list", {"status": "RUNNING"})
            return
        except OSError:
            assert alive(), log.read_text()[-3000:] if log.is_file() else "no log"
            assert time.monotonic() < deadline, "luigid did not start"
            time.sleep(0.1)


def test_plain_luigid_starts_with_the_repository_config(tmp_path: Path) -> None:
    """Stock `luigid` in a copy of the repository root: luigi.cfg must not kill it."""
    root = repo_root_copy(tmp_path)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "LUIGI_CONFIG_PATH"}
    luigid_bin = Path(sys.executable).parent / "luigid"
    with (root / "luigid.log").open("w") as log:
        proc = subprocess.Popen(
            [str(luigid_bin), "--address", "127.0.0.1", "--port", str(port)],
            cwd=root,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_api(port, lambda: proc.poll() is None, root / "luigid.log")
        url = f"http://127.0.0.1:{port}/api/graph"
        with urllib.request.urlopen(url, timeout=10) as resp:
            assert json.loads(resp.read()) == {"response": {}}
    finally:
        proc.terminate()
        code = proc.wait(timeout=30)
    text = (root / "luigid.log").read_text()
    assert code == 0, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    assert (root / "var" / "luigi-state.pickle").is_file()  # state saved on the way out
    assert not (root / "var" / "luigi-task-history.db").exists()  # history: adperf luigid's


TINY_TASK = """
import luigi


class Touch(luigi.Task):
    path = luigi.Parameter()

    def output(self):
        return luigi.LocalTarget(self.path)

    def run(self):
        with self.output().open("w") as f:
            f.write("done")
"""


def test_adperf_luigid_as_a_daemon_writes_its_pidfile_and_records_history(
    tmp_path: Path,
) -> None:
    """`adperf luigid --background --pidfile --logdir --port`: what a systemd unit runs."""
    root = repo_root_copy(tmp_path / "repo")
    port, pidfile, logdir = free_port(), tmp_path / "run" / "luigid.pid", tmp_path / "log"
    env = {k: v for k, v in os.environ.items() if k != "LUIGI_CONFIG_PATH"}
    adperf_bin = Path(sys.executable).parent / "adperf"
    start = subprocess.run(
        [str(adperf_bin), "luigid", "--background", "--pidfile", str(pidfile)]
        + ["--logdir", str(logdir), "--port", str(port), "--address", "127.0.0.1"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert start.returncode == 0, start.stderr[-3000:]  # the daemon detached
    log = logdir / "luigi-server.log"
    pid = 0
    try:
        deadline = time.monotonic() + 30
        while not (pidfile.is_file() and pidfile.read_text().strip()):
            assert time.monotonic() < deadline, "no pidfile"
            time.sleep(0.1)
        pid = int(pidfile.read_text())
        wait_for_api(port, lambda: _alive(pid), log)

        (tmp_path / "tiny_tasks.py").write_text(TINY_TASK)
        run = subprocess.run(
            [sys.executable, "-m", "luigi", "--module", "tiny_tasks", "Touch"]
            + ["--path", str(tmp_path / "touched.txt"), "--scheduler-host", "127.0.0.1"]
            + ["--scheduler-port", str(port)],
            cwd=tmp_path,
            env={**env, "PYTHONPATH": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0 and "1 ran successfully" in run.stderr, run.stderr[-3000:]
        assert (tmp_path / "touched.txt").read_text() == "done"
        # History is written as the scheduler hears of each event.
        history = root / "var" / "luigi-task-history.db"
        events: set[tuple[str, str]] = set()
        while ("Touch", "DONE") not in events:
            assert time.monotonic() < deadline + 30, events
            if history.is_file():
                with sqlite3.connect(history) as conn:
                    events = set(
                        conn.execute(
                            "SELECT t.name, e.event_name FROM task_events e "
                            "JOIN tasks t ON t.id = e.task_id"
                        )
                    )
            time.sleep(0.2)
        assert {("Touch", "PENDING"), ("Touch", "RUNNING"), ("Touch", "DONE")} <= events
        assert "Traceback" not in log.read_text()
    finally:
        if pid:
            os.kill(pid, 15)
            deadline = time.monotonic() + 30
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not _alive(pid), "the daemon did not stop on SIGTERM"
    assert (root / "var" / "luigi-state.pickle").is_file()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_adperf_luigid_passes_luigids_own_flags_on(monkeypatch: pytest.MonkeyPatch) -> None:
    args = luigid.parser().parse_args(
        ["--background", "--pidfile", "/run/l.pid", "--logdir", "/var/log/l", "--port", "9000"]
        + ["--address", "127.0.0.1", "--unix-socket", "/run/l.sock", "--history-db", "sqlite://"]
    )
    argv = luigid.luigid_argv(args, "var/s.pickle")
    assert argv == [
        "--port", "9000", "--state-path", "var/s.pickle", "--pidfile", "/run/l.pid",
        "--logdir", "/var/log/l", "--address", "127.0.0.1", "--unix-socket", "/run/l.sock",
        "--background",
    ]  # fmt: skip
    # Stock luigid's own parser takes every one of them (--background: the daemon test).
    import luigi.server
    from luigi import cmdline

    seen: dict[str, Any] = {}
    monkeypatch.setattr(luigi.server, "run", lambda **kw: seen.update(kw))
    monkeypatch.setattr(cmdline, "DaemonLogging", type("NoLogging", (), {"setup": print}))
    cfg = luigi.configuration.get_config()
    before = cfg.get("scheduler", "state_path", None)
    try:
        cmdline.luigid([a for a in argv if a != "--background"])
        assert cfg.get("scheduler", "state_path") == "var/s.pickle"
    finally:  # luigid sets it in this process's config
        if before is None:
            cfg.remove_option("scheduler", "state_path")
        else:
            cfg.set("scheduler", "state_path", before)
    assert seen == {"api_port": "9000", "address": "127.0.0.1", "unix_socket": "/run/l.sock"}
