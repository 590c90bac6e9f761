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


def start_luigid(var: Path) -> Iterator[int]:
    """`python -m tasks.luigid` on a free loopback port with state and history under `var`."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "LUIGI_CONFIG_PATH"}
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
        deadline = time.monotonic() + 30
        while True:
            try:
                api(port, "task_list", {"status": "RUNNING"})
                break
            except OSError:
                assert proc.poll() is None, (var / "luigid.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "luigid did not start"
                time.sleep(0.1)
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
    from tasks.pipeline import DailyReport
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
