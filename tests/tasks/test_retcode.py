"""The luigi CLI exits non-zero on every failure class cron cares about ([retcode] in luigi.cfg)."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest

from .conftest import END

REPO = Path(__file__).resolve().parents[2]


def _luigi(
    tmp_path: Path, cfg: str, env: dict[str, str], args: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "override.cfg"
    path.write_text(cfg)
    full = {k: v for k, v in os.environ.items() if not k.startswith("ADPERF_")}
    full.update(env, LUIGI_CONFIG_PATH=str(path))
    return subprocess.run(
        [sys.executable, "-m", "luigi", "--module", "tasks"]
        + list(args or ("DailyReport", "--date", "2026-11-20"))
        + ["--local-scheduler"],
        cwd=REPO,
        env=full,
        capture_output=True,
        text=True,
        timeout=120,
    )


PROD = """
[adperf]
sandbox = false
data_root = {root}/lake
warehouse_url = sqlite:///{root}/w.db
[logs]
path = {root}/logs/{{date}}.jsonl.gz
[slack]
outbox = {root}/outbox
"""


def test_production_without_hmac_key_refuses_to_start(tmp_path: Path) -> None:
    proc = _luigi(tmp_path, PROD.format(root=tmp_path), {})
    assert proc.returncode == 35  # [retcode] scheduling_error: requires() raised
    assert "ADPERF_HMAC_KEY is not set" in proc.stdout + proc.stderr
    assert not (tmp_path / "lake").exists()


def test_failed_task_exits_with_task_failed_code(tmp_path: Path) -> None:
    proc = _luigi(tmp_path, PROD.format(root=tmp_path), {"ADPERF_HMAC_KEY": "k" * 32})
    assert proc.returncode == 30, proc.stderr[-2000:]  # [retcode] task_failed in luigi.cfg
    assert "[payments] url or ADPERF_PAYMENTS_URL is not set" in proc.stderr
    # One alert per failed task, written when the run ends (no token: beside the outbox);
    # the absent log files are wait notices, not failures.
    alerts = {a.name: a.read_text() for a in (tmp_path / "alerts").glob("alert-*.json")}
    failed = {n for n, text in alerts.items() if ":x: adperf:" in text}
    assert f"alert-{END}-Payments_" in " ".join(failed)
    assert all(":hourglass:" in alerts[n] for n in alerts if "-LogFiles_" in n)
    assert not {n for n in failed if "-LogFiles_" in n}


def test_unparsable_parameter_exits_with_unhandled_exception_code(tmp_path: Path) -> None:
    proc = _luigi(tmp_path, PROD.format(root=tmp_path), {}, ("DailyReport", "--date", "2026-13-45"))
    assert proc.returncode == 40, proc.stderr[-2000:]  # [retcode] unhandled_exception


# ---------------------------------------------------------------- missing data, already running

SANDBOX = """
[adperf]
sandbox = true
data_root = {root}/lake
warehouse_url = sqlite:///{root}/w.db
[sandbox]
root = {root}/world
profile = tiny
[slack]
outbox = {root}/outbox
"""

# The worker waits for missing data and re-checks it (luigi docs: [worker] keep_alive,
# retry_external_tasks; [scheduler] retry_delay), instead of exiting at once.
PATIENT = """
[worker]
keep_alive = true
retry_external_tasks = true
wait_interval = 0.2
[scheduler]
retry_delay = 0.5
"""


@pytest.fixture()
def no_logs_today(tmp_path: Path, tiny_world: Path) -> Iterator[Path]:
    """A copy of the tiny world whose logs of END are not rotated yet (moved aside)."""
    shutil.copytree(tiny_world, tmp_path / "world")
    log = tmp_path / "world" / "logs" / f"{END}.jsonl.gz"
    os.replace(log, tmp_path / "held-back.jsonl.gz")
    yield log


def test_logs_not_rotated_is_missing_data_and_a_wait_notice(
    tmp_path: Path, no_logs_today: Path
) -> None:
    proc = _luigi(
        tmp_path, SANDBOX.format(root=tmp_path), {}, ("EventLogs", "--date", END.isoformat())
    )
    assert proc.returncode == 20, proc.stderr[-2000:]  # [retcode] missing_data, not task_failed
    assert "were missing external dependencies" in proc.stderr
    assert not (tmp_path / "lake" / "events" / f"date={END}").exists()
    # One notice, as a wait for data, not a failure (no token: written to the outbox).
    alerts = sorted((tmp_path / "alerts").glob("alert-*.json"))
    assert [a.name.split("-LogFiles")[0] for a in alerts] == [f"alert-{END}"]
    text = json.loads(alerts[0].read_text())["text"]
    assert "waiting for data" in text and "failed" not in text


def test_second_run_while_the_first_waits_exits_already_running(
    tmp_path: Path, no_logs_today: Path
) -> None:
    cfg = tmp_path / "patient.cfg"
    cfg.write_text(SANDBOX.format(root=tmp_path) + PATIENT)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADPERF_")}
    env["LUIGI_CONFIG_PATH"] = str(cfg)
    cmd = [sys.executable, "-m", "luigi", "--module", "tasks", "EventLogs"]
    cmd += [
        "--date",
        END.isoformat(),
        "--local-scheduler",
        "--lock-pid-dir",
        str(tmp_path / "pids"),
    ]
    first = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        _wait_for(lambda: any((tmp_path / "pids").glob("*.pid")), first)
        second = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 10, second.stderr[-2000:]  # [retcode] already_running
        assert "already running" in second.stdout
        # The logs arrive: the waiting run re-checks, reads them and succeeds.
        os.replace(tmp_path / "held-back.jsonl.gz", no_logs_today)
        out, _ = first.communicate(timeout=120)
    finally:
        first.kill()
    assert first.returncode == 0, out[-3000:]
    assert (tmp_path / "lake" / "events" / f"date={END}" / "part-0.parquet").is_file()
    # A wait that ended with the data is no alert at all.
    assert not list((tmp_path / "alerts").glob("alert-*.json"))


def _wait_for(cond: Callable[[], bool], proc: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


# ---------------------------------------------------------------- MMP report not ready

# Ask the MMP again at once after a 'not ready' answer (default: at most every 300 s).
RECHECK_NOW = """
[mmp]
recheck_s = 0
"""


def _hold_back_installs(world: Path, day: dt.date) -> pd.DataFrame:
    """Take `day`'s installs out of the sandbox MMP (AppsFlyer answers an unexported day with an
    empty report); return the full table to put back."""
    path = world / "installs.parquet"
    full = pd.read_parquet(path)
    local_day = full["install_time"].dt.tz_convert("Asia/Seoul").dt.date
    full[local_day != day].to_parquet(path)
    return full


def _alert_texts(root: Path) -> dict[str, str]:
    return {a.name: json.loads(a.read_text())["text"] for a in (root / "alerts").glob("alert-*")}


def test_mmp_not_ready_is_missing_data_then_the_next_run_reads_it(
    tmp_path: Path, tiny_world: Path
) -> None:
    shutil.copytree(tiny_world, tmp_path / "world")
    cfg = SANDBOX.format(root=tmp_path) + RECHECK_NOW
    week = ("--start", str(END - dt.timedelta(days=7)), "--stop", END.isoformat())
    proc = _luigi(tmp_path, cfg, {}, ("RangeDailyBase", "--of", "Installs", *week))
    assert proc.returncode == 0, proc.stderr[-2000:]  # a week of >= 20 installs a day
    full = _hold_back_installs(tmp_path / "world", END)

    proc = _luigi(tmp_path, cfg, {}, ("Installs", "--date", END.isoformat()))
    # Missing data (20), not 'not run' (25) nor a failure (30); luigi's own words say so.
    assert proc.returncode == 20, proc.stderr[-3000:]
    assert "were missing external dependencies" in proc.stderr
    assert f"MmpReady(date={END})" in proc.stderr
    assert not (tmp_path / "lake" / "installs" / f"date={END}").exists()
    notices = _alert_texts(tmp_path)
    assert [n.split("-MmpReady")[0] for n in notices] == [f"alert-{END}"], notices
    (text,) = notices.values()
    assert "waiting for data" in text and "no install at all" in text
    assert "failed" not in text

    full.to_parquet(tmp_path / "world" / "installs.parquet")  # AppsFlyer has exported the day
    proc = _luigi(tmp_path, cfg, {}, ("Installs", "--date", END.isoformat()))
    assert proc.returncode == 0, proc.stderr[-3000:]
    partition = tmp_path / "lake" / "installs" / f"date={END}"
    # The tiny world's installs of END (every registered platform's, organic, restricted).
    assert json.loads((partition / "_meta.json").read_text())["rows"] == 64
    assert not (tmp_path / "lake" / "_not_ready" / "mmp" / f"{END}.json").exists()
    assert _alert_texts(tmp_path) == notices  # no new alert, and never a failure alert
