"""Workers on two hosts: one luigid, one S3 lake, one PostgreSQL warehouse, nothing else shared.

Each worker "host" is a network namespace made here with `ip netns` and a veth pair, with its
own host name, working folder, temp folder, `[adperf] files_root`, copy of the sandbox world and
luigi.cfg; it reaches luigid, the S3 server and PostgreSQL over its veth link (tests/multihost/
net.py). Where `ip netns add` is refused (no CAP_SYS_ADMIN), the hosts are plain processes on
loopback instead, still sharing nothing but the three services (ADPERF_TEST_HOSTS=loopback
chooses that anyway); luigid's history then cannot tell the hosts apart, their logs still do.

A 7-day `RangeDaily --of DailyReport` of the tiny world is split between them: each runs some
tasks and none runs a task the other ran (both workers' logs and luigid's task history say so);
host A is SIGKILLed in the middle of a task, and host B finishes, that task included. The
warehouse then holds exactly the rows of a one-machine run (local lake, its own database), and
each day's Slack report was delivered once, by one host.
"""

from __future__ import annotations

import collections
import datetime as dt
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..conftest import _postgres_database
from ..faults.harness import END, assert_same_warehouse, planted, warehouse_rows
from ..lake.conftest import CREDENTIALS, REGION, S3Server
from ..tasks.test_luigid import start_luigid
from .net import Host, hosts, namespaces_work

REPO = Path(__file__).resolve().parents[2]
START, STOP = END - dt.timedelta(days=6), END + dt.timedelta(days=1)  # STOP: exclusive
RANGE = ["RangeDaily", "--of", "DailyReport", "--start", START.isoformat()]
RANGE += ["--stop", STOP.isoformat()]

# luigi's worker log lines for a task it starts and one it finished (luigi/worker.py).
RUNNING = re.compile(r"\[pid \d+\] Worker Worker\(.*\) running\s+(\S.*)$")
DONE = re.compile(r"\[pid \d+\] Worker Worker\(.*\) done\s+(\S.*)$")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from adperf.sandbox.world import ensure_world

    root = tmp_path_factory.mktemp("hostsworld") / "world"
    ensure_world(root, end=END, profile="tiny", seed=7, report_timezone="Asia/Seoul")
    return root


def _machine(root: Path, world: Path, settings: dict[str, dict[str, str]]) -> dict[str, str]:
    """A host's own folder: the repository's luigi.cfg, its overrides, its world copy; its env."""
    root.mkdir(parents=True)
    shutil.copytree(world, root / "world")
    shutil.copy(REPO / "luigi.cfg", root / "luigi.cfg")
    (root / "tmp").mkdir()
    base = {
        "adperf": {
            "sandbox": "true",
            "files_root": str(root / "files"),
            "report_timezone": "Asia/Seoul",
            "report_currency": "USD",
        },
        "sandbox": {"root": str(root / "world"), "profile": "tiny", "seed": "7"},
        "slack": {"outbox": str(root / "outbox"), "channel": "#marketing-daily"},
    }
    for section, values in settings.items():
        base.setdefault(section, {}).update(values)
    text = "".join(
        f"[{section}]\n" + "".join(f"{k} = {v}\n" for k, v in values.items())
        for section, values in base.items()
    )
    (root / "host.cfg").write_text(text)
    keep = ("PATH", "LANG", "LC_ALL", "HOME")
    env = {k: v for k, v in os.environ.items() if k in keep}
    return (
        env
        | planted()
        | {
            "LUIGI_CONFIG_PATH": str(root / "host.cfg"),
            "TMPDIR": str(root / "tmp"),
            "PYTHONPATH": str(REPO),
        }
    )


def _start(argv: list[str], cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


@pytest.fixture()
def luigid(tmp_path: Path) -> Iterator[int]:
    """`python -m tasks.luigid` on loopback, quick to notice a dead worker and retry its task."""
    var = tmp_path / "luigid"
    var.mkdir()
    # A worker silent this long is dead: its running task fails and is retried at once.
    yield from start_luigid(
        var, "worker_disconnect_delay = 5\nretry_delay = 1\nprune_on_get_work = true\n"
    )


def _log_tasks(log: Path, pattern: re.Pattern[str]) -> list[str]:
    return [m.group(1).strip() for line in _lines(log) if (m := pattern.search(line))]


def _lines(log: Path) -> list[str]:
    return log.read_text(errors="replace").splitlines() if log.exists() else []


def _history(db: Path) -> dict[str, list[tuple[str, str]]]:
    """task id -> [(event, host)] in order, from luigid's task history."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT t.task_id, e.event_name, t.host FROM task_events e "
            "JOIN tasks t ON t.id = e.task_id ORDER BY e.id"
        ).fetchall()
    out: dict[str, list[tuple[str, str]]] = collections.defaultdict(list)
    for task_id, event, host in rows:
        out[task_id].append((event, host or ""))
    return out


# Two 7-day runs of the tiny world (one of them on two hosts with a kill and a retry): several
# minutes on the shared 2-core machine, so `slow` (pytest -m slow).
@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_two_hosts_share_a_week_and_survive_a_killed_worker(
    tmp_path: Path,
    world: Path,
    luigid: int,
    s3_server: S3Server,
    s3_env: dict[str, str],
    s3_prefix: str,
) -> None:
    with (
        _postgres_database("adperf_hosts_", 8) as shared_db,
        _postgres_database("adperf_one_", 8) as one_db,
    ):
        # The one-machine reference: local lake, local scheduler, its own database; at the same
        # time (it shares nothing with the two hosts).
        ref_env = _machine(
            tmp_path / "one",
            world,
            {"adperf": {"data_root": str(tmp_path / "one" / "lake"), "warehouse_url": one_db}},
        )
        reference = _start(
            [sys.executable, "-m", "luigi", "--module", "tasks", *RANGE, "--local-scheduler"],
            tmp_path / "one",
            ref_env,
            tmp_path / "one" / "worker.log",
        )
        try:
            _two_hosts(tmp_path, world, luigid, s3_server, s3_prefix, shared_db)
        finally:
            assert reference.wait(timeout=1500) == 0, _lines(tmp_path / "one" / "worker.log")[-40:]
        assert_same_warehouse(warehouse_rows(shared_db), warehouse_rows(one_db))


def _two_hosts(
    tmp_path: Path, world: Path, port: int, s3: S3Server, prefix: str, db_url: str
) -> None:
    pg_port = int(db_url.rsplit(":", 1)[1].split("/")[0])
    s3_port = int(s3.endpoint.rsplit(":", 1)[1])
    with hosts(["adperf-host-a", "adperf-host-b"], [port, s3_port, pg_port]) as (a, b):
        netns = namespaces_work() is None
        assert (a.services_ip != "127.0.0.1") == netns

        def machine(host: Host) -> tuple[Path, dict[str, str]]:
            root = tmp_path / host.name
            ip = host.services_ip
            env = _machine(
                root,
                world,
                {
                    "adperf": {
                        "data_root": s3.url(prefix),
                        "warehouse_url": db_url.replace("127.0.0.1", ip),
                    },
                    "s3": {"endpoint_url": s3.endpoint.replace("127.0.0.1", ip), "region": REGION},
                    # Stay while the other host runs tasks this one may have to take over.
                    "worker": {"keep_alive": "true", "wait_interval": "0.5"},
                },
            )
            return root, env | CREDENTIALS

        def worker(host: Host, root: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
            argv = [sys.executable, "-m", "luigi", "--module", "tasks", *RANGE]
            argv += ["--scheduler-host", host.services_ip, "--scheduler-port", str(port)]
            return _start(host.prefix + argv, root, env, root / "worker.log")

        (root_a, env_a), (root_b, env_b) = machine(a), machine(b)
        proc_a = worker(a, root_a, env_a)
        proc_b = worker(b, root_b, env_b)
        log_a, log_b = root_a / "worker.log", root_b / "worker.log"
        try:
            # Kill A in the middle of a task, once both hosts have done some of the week.
            deadline = time.monotonic() + 1200
            while True:
                assert proc_a.poll() is None, _lines(log_a)[-40:]
                assert proc_b.poll() is None, _lines(log_b)[-40:]
                assert time.monotonic() < deadline, "the hosts did not get going"
                done_a = _log_tasks(log_a, DONE)
                running_a = _log_tasks(log_a, RUNNING)
                busy = len(running_a) > len(done_a)
                if busy and len(done_a) >= 40 and len(_log_tasks(log_b, DONE)) >= 10:
                    os.killpg(proc_a.pid, signal.SIGKILL)
                    proc_a.wait()
                    break
                time.sleep(0.2)
            interrupted = running_a[-1]
            assert proc_b.wait(timeout=1200) == 0, _lines(log_b)[-40:]
        finally:
            for proc in (proc_a, proc_b):
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()

    # Split: each host ran some tasks, none a task the other ran; B ran A's interrupted one.
    done_a, done_b = _log_tasks(log_a, DONE), _log_tasks(log_b, DONE)
    assert len(done_a) == len(set(done_a)) and len(done_b) == len(set(done_b))
    assert set(done_a).isdisjoint(done_b), set(done_a) & set(done_b)
    assert interrupted not in done_a and interrupted in done_b
    assert len(done_b) >= 10 and sum("DailyReport(" in t for t in done_a + done_b) == 7

    # luigid's history agrees: every task of the week ran once, except the interrupted one,
    # which ran twice (luigi's history keeps one host per task: the last one to run it, B);
    # the hosts' counts are those of their logs.
    history = _history(tmp_path / "luigid" / "luigi-task-history.db")
    runs = {tid: [h for e, h in ev if e == "RUNNING"] for tid, ev in history.items()}
    twice = [tid for tid, hs in runs.items() if len(hs) > 1]
    assert len(twice) == 1 and twice[0].startswith(interrupted.split("(")[0] + "_"), twice
    assert all(len(hs) <= 1 for tid, hs in runs.items() if tid not in twice)
    assert sum(bool(hs) for hs in runs.values()) == len(done_a) + len(done_b)
    if netns:
        ran_on = collections.Counter(hs[-1] for hs in runs.values() if hs)
        assert ran_on == {a.name: len(done_a), b.name: len(done_b)}, ran_on

    # Each day's Slack report went out once, from one host (the marker in the bucket is shared).
    outboxes = [sorted(p.name for p in (r / "outbox").glob("slack-*")) for r in (root_a, root_b)]
    delivered = outboxes[0] + outboxes[1]
    assert sorted(delivered) == sorted(set(delivered)) and len(delivered) == 7, outboxes
