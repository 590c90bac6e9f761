"""`adperf demo` / `adperf run`: a progress line instead of luigi's log flood (issue 19, point 1).

The commands run as subprocesses on the tiny world, with a pipe (cron, CI) or a pseudo-terminal
as their output; the Progress counts are checked without luigi too."""

from __future__ import annotations

import datetime as dt
import fcntl
import io
import json
import os
import pty
import re
import shutil
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from tasks.progress import Progress, error_text, log_path

from .conftest import END

TIMEOUT_S = 300


def _config(root: Path, world: Path, *, lake: str = "lake", extra: str = "") -> Path:
    cfg = root / f"{lake}.cfg"
    cfg.write_text(
        f"[adperf]\nsandbox = true\ndata_root = {root / lake}\n"
        f"warehouse_url = sqlite:///{root / lake}.db\nreport_timezone = Asia/Seoul\n"
        f"[sandbox]\nroot = {world}\nprofile = tiny\nseed = 7\n"
        f"[slack]\noutbox = {root / 'outbox'}\n"
        "[retcode]\nmissing_data = 20\ntask_failed = 30\nscheduling_error = 35\n" + extra
    )
    return cfg


def _env(cfg: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ADPERF_", "COLUMNS"))}
    return env | {"LUIGI_CONFIG_PATH": str(cfg)}


def _adperf(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`adperf ARGS` with stdout and stderr pipes, from a folder without a luigi.cfg."""
    cmd = [sys.executable, "-m", "tasks.cli", *args]
    return subprocess.run(
        cmd, cwd=cfg.parent, env=_env(cfg), capture_output=True, text=True, timeout=TIMEOUT_S
    )


def _adperf_on_terminal(cfg: Path, *args: str, columns: int = 100) -> tuple[int, str]:
    """`adperf ARGS` with a pseudo-terminal `columns` wide as stdout and stderr."""
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    cmd = [sys.executable, "-m", "tasks.cli", *args]
    proc = subprocess.Popen(
        cmd, cwd=cfg.parent, env=_env(cfg), stdin=child, stdout=child, stderr=child
    )
    os.close(child)
    out = bytearray()
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # EIO: the child side is closed
            break
        if not chunk:
            break
        out += chunk
    os.close(main)
    return proc.wait(timeout=TIMEOUT_S), out.decode("utf-8", "replace")


@pytest.fixture(scope="module")
def demo(
    tmp_path_factory: pytest.TempPathFactory, tiny_world: Path
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """One cold `adperf demo` on the tiny world, output to pipes."""
    root = tmp_path_factory.mktemp("demo")
    shutil.copytree(tiny_world, root / "world")
    cfg = _config(root, root / "world")
    return cfg, _adperf(cfg, "demo", "--date", END.isoformat())


def test_demo_without_a_terminal_prints_a_few_lines_and_names_the_log(
    demo: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    cfg, run = demo
    assert run.returncode == 0, run.stderr[-3000:]
    progress = run.stderr.splitlines()
    # Before: ~1,300 lines of luigi's log. Now: start, to do, end, and between them a line
    # per tenth of the tasks at most every 10 s (or one a minute): 3 to 5 lines in practice.
    assert len(progress) <= 20, run.stderr
    assert progress[0].startswith(f"DailyReport {END}: started (luigi log: ")
    assert re.fullmatch(r"\d+ tasks to run \(\d+ complete already\)", progress[1]), progress
    done = re.fullmatch(rf"DailyReport {END}: (\d+)/(\d+) tasks done .* in \d+:\d\d", progress[-1])
    assert done and done[1] == done[2] and int(done[1]) > 100, progress[-1]
    # ... and the summary: the tiny world's campaigns and actions (one line each, as many as
    # the world has), the totals, where everything is: a few lines besides those.
    from adperf import platforms

    names = "|".join((*platforms.NAMES, "organic", "restricted"))
    rows = re.compile(rf"^({names}) |^(SCALE|SCALE BACK|PAUSE|EXPAND) ")
    others = [x for x in run.stdout.splitlines() if not rows.match(x)]
    assert len(others) <= 20, run.stdout
    assert f"adperf report for {END}" in run.stdout
    assert "\r" not in run.stdout + run.stderr
    for line in (run.stdout + run.stderr).splitlines():
        assert not line.startswith(("DEBUG", "INFO", "WARNING")), line
    (log_line,) = [x for x in run.stdout.splitlines() if x.startswith("log:")]
    log = Path(log_line.split(None, 1)[1])
    assert log.parent == cfg.parent / "log" and log.name.startswith("adperf-demo-")
    text = log.read_text()
    assert f"Checking if DailyReport(date={END}) is complete" in text
    assert "Informed scheduler that task" in text
    # The count on the terminal is luigi's own count of what ran.
    ran = re.search(r"\* (\d+) ran successfully", text)
    assert ran and ran[1] == done[1], text[-2000:]
    # A first report compares with the day before and the week before: the demo loaded both
    # (their tables only), so no headline change is "n/a" ([adperf] load_comparison_days).
    assert f"LoadReport(date={END - dt.timedelta(days=7)})" in text
    message = json.loads((cfg.parent / "outbox" / f"slack-{END}.json").read_text())
    (headline,) = [b for b in message["blocks"] if b["type"] == "section" and "fields" in b]
    changes = [f["text"].splitlines()[-1] for f in headline["fields"]]
    assert len(changes) == 7 and all("d/d" in c and "w/w" in c for c in changes), changes
    assert not [c for c in changes if "n/a" in c], changes


def test_verbose_brings_luigis_log_back(
    demo: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    cfg, first = demo
    assert first.returncode == 0
    run = _adperf(cfg, "demo", "--date", END.isoformat(), "-v")  # the day is complete now
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"DEBUG: Checking if DailyReport(date={END}) is complete" in run.stderr
    assert "===== Luigi Execution Summary =====" in run.stderr
    assert f"DailyReport {END}: 0/0 tasks done" in run.stderr


def test_backfill_runs_the_missing_days_of_the_range(
    demo: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    cfg, first = demo
    assert first.returncode == 0
    before = END - dt.timedelta(days=1)
    stop = END + dt.timedelta(days=1)  # exclusive, as RangeDaily's
    run = _adperf(cfg, "backfill", "--start", before.isoformat(), "--stop", stop.isoformat())
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Warning" not in run.stderr
    done = re.search(rf"DailyReport {before} .. {END}: (\d+)/(\d+) tasks done", run.stderr)
    assert done and done[1] == done[2] and int(done[1]) > 0, run.stderr
    (log,) = (cfg.parent / "log").glob("adperf-backfill-*.log")
    text = log.read_text()
    ran = re.search(r"\* (\d+) ran successfully", text)
    assert ran and ran[1] == done[1]
    assert f"DailyReport(date={before})" in text and f"DailyReport(date={stop})" not in text


@pytest.mark.parametrize("workers", [1, 2])
def test_a_terminal_gets_one_line_redrawn_in_place(
    tmp_path: Path, tiny_world: Path, workers: int
) -> None:
    cfg = _config(tmp_path, tiny_world)
    code, out = _adperf_on_terminal(
        cfg, "run", "Spend", "--date", END.isoformat(), "--workers", str(workers), columns=72
    )
    assert code == 0, out[-3000:]
    frames = [f for f in re.split(r"\r|\n", out.replace("\x1b[K", "")) if f]
    bars = [f for f in frames if f.startswith("[")]
    assert len(bars) >= 2, out[-3000:]
    assert all(len(f) <= 71 for f in bars), [f for f in bars if len(f) > 71]
    assert any(re.match(r"\[[#-]{20}\] \d+/\d+ tasks  \d+:\d\d  AdSpend\(", f) for f in bars)
    final = re.search(rf"Spend {END}: (\d+)/(\d+) tasks done", out)
    assert final and final[1] == final[2] and int(final[1]) >= 3, out[-2000:]
    (log,) = (tmp_path / "log").glob("adperf-run-*.log")
    ran = re.search(r"\* (\d+) ran successfully", log.read_text())
    assert ran and ran[1] == final[1]
    assert "DEBUG" not in out


def test_a_failed_task_shows_its_error_and_the_exit_code(tmp_path: Path, tiny_world: Path) -> None:
    # The world's log days hold a few malformed lines: none allowed fails EventLogs on them.
    cfg = _config(tmp_path, tiny_world, extra="[logs]\nmax_bad_fraction = 0\n")
    run = _adperf(cfg, "run", "EventLogs", "--date", END.isoformat())
    assert run.returncode == 30, run.stderr[-3000:]
    assert f"FAILED EventLogs(date={END}): adperf.errors.SourceError: logs for {END}: " in (
        run.stderr
    )
    assert "[logs] max_bad_fraction 0.0). Fix: inspect the day's log files" in run.stderr
    assert "* 1 failed:" in run.stderr  # luigi's summary
    assert f"EventLogs {END}: FAILED, exit code 30; log: " in run.stderr
    assert "DEBUG" not in run.stderr
    assert run.stdout == ""


def test_a_scheduling_error_shows_its_error_and_the_exit_code(tmp_path: Path) -> None:
    cfg = tmp_path / "broken.cfg"
    cfg.write_text(
        f"[adperf]\nsandbox = false\ndata_root = {tmp_path / 'lake'}\n"
        "[retcode]\nscheduling_error = 35\n[logs]\nshards = two\n"
    )
    run = _adperf(cfg, "run", "EventLogs", "--date", END.isoformat())
    assert run.returncode == 35, run.stderr[-3000:]
    assert f"could not schedule EventLogs(date={END}): ValueError: " in run.stderr
    assert "Error when parsing the default value of 'shards'" in run.stderr
    assert "(see the log)" not in run.stderr  # said once, with the error
    assert f"EventLogs {END}: SCHEDULING_FAILED, exit code 35; log: " in run.stderr


def test_run_refuses_a_task_without_a_date(tmp_path: Path, tiny_world: Path) -> None:
    run = _adperf(_config(tmp_path, tiny_world), "run", "InstallsMonth", "--date", "2026-11-20")
    assert run.returncode == 2
    assert "no task 'InstallsMonth' with a --date" in run.stderr


# ---------------------------------------------------------------- Progress without luigi


_TRACEBACK = 'Runtime error:\nTraceback (most recent call last):\n  File "a.py"\nValueError: bad\n'


def _added(p: Progress, task_id: str, status: str, runnable: bool = True, **kw: object) -> None:
    p.added({"task_id": task_id, "status": status, "runnable": runnable, "family": task_id, **kw})


def test_progress_counts_what_the_worker_tells_the_scheduler() -> None:
    out = io.StringIO()
    p = Progress("DailyReport 2026-11-20", out, tty=False)
    _added(p, "A", "PENDING")
    _added(p, "B", "PENDING")
    _added(p, "C", "DONE", runnable=False)  # complete before the run
    _added(p, "L", "PENDING", runnable=False)  # an input not there yet
    p.got_work({"task_id": "A", "task_family": "A", "task_params": {"date": "2026-11-20"}})
    assert p._running_text() == "A(date=2026-11-20)"
    _added(p, "A", "FAILED", expl=json.dumps(_TRACEBACK))
    p.got_work({"task_id": "A", "task_family": "A", "task_params": {}})  # a retry
    _added(p, "A", "DONE")
    p.got_work({"task_id": "B", "task_family": "B", "task_params": {}})
    _added(p, "B", "DONE")
    assert (p.done, p.failed, p.total, p.complete_before) == (2, 0, 2, 1)
    p.close()
    assert out.getvalue().splitlines() == [
        "waiting for data: L is not there yet",
        "2 tasks to run (1 complete already)",
        "FAILED A: ValueError: bad",
        "DailyReport 2026-11-20: 2/2 tasks done (1 complete already) in 0:00",
    ]


def test_the_terminal_line_fits_the_width() -> None:
    p = Progress("x", io.StringIO(), tty=True)
    _added(p, "A", "PENDING")
    p.got_work({"task_id": "A", "task_family": "AdSpend", "task_params": {"date": "2026-11-20"}})
    assert p.status_line(42) == "[--------------------] 0/1 task  0:00  AdS"


def test_error_text_is_the_exception_of_the_traceback() -> None:
    tb = (
        "Runtime error:\nTraceback (most recent call last):\n"
        '  File "x.py", line 1, in run\n    raise SourceError(...)\n'
        "adperf.errors.SourceError: logs for 2026-11-20: broken.\nFix: look at it\n"
    )
    assert error_text(json.dumps(tb)) == (
        "adperf.errors.SourceError: logs for 2026-11-20: broken.\n  Fix: look at it"
    )


def test_the_log_goes_beside_the_lake() -> None:
    import datetime as dt

    now = dt.datetime(2026, 12, 7, 3, 4, 5)
    assert log_path("demo", "var/lake", now) == Path("var/log/adperf-demo-20261207-030405.log")
    assert log_path("run", "s3://bucket/lake", now) == Path(
        "var/log/adperf-run-20261207-030405.log"
    )
