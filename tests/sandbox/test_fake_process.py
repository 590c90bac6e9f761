"""FakeProcess: fakes served from a separate interpreter that never outlives its caller."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import requests

from adperf.sandbox.fake_graph import AD_ROW_COLUMNS, FakeGraphApi
from adperf.sandbox.fake_mmp import FakeMmp
from adperf.sandbox.loopback import FakeProcess

REPO = Path(__file__).resolve().parents[2]
GRAPH_TOKEN = "graph-token-for-fake-process"
MMP_TOKEN = "mmp-token-for-fake-process"
ACCOUNT = {
    "account_id": "1234567890",
    "name": "Fake Process Account",
    "currency": "USD",
    "timezone_name": "Asia/Seoul",
}
APP = "com.example.fakeprocess"


def build_fakes(device_id: str) -> list[Any]:
    """The factory FakeProcess runs in its own process (module-level: pickled by name)."""
    install = {
        "appsflyer_id": device_id, "customer_user_id": "u-1",
        "install_time": pd.Timestamp("2026-11-27 03:00", tz="UTC"), "app_id": APP,
        "media_source": "Facebook Ads", "campaign": "c", "campaign_id": "1", "adset": "s",
        "adset_id": "2", "ad": "a", "ad_id": "3", "country_code": "KR", "platform": "ios",
    }  # fmt: skip
    graph = FakeGraphApi(
        accounts=[ACCOUNT],
        ad_rows=pd.DataFrame(columns=list(AD_ROW_COLUMNS)),
        access_token=GRAPH_TOKEN,
    )
    mmp = FakeMmp(installs=pd.DataFrame([install]), api_token=MMP_TOKEN)
    return [graph, mmp]


def swap_installs(fakes: list[Any], device_id: str) -> int:
    """Run in the serving process by FakeProcess.apply: the MMP serves another install."""
    graph, mmp = fakes
    mmp.set_installs(build_fakes(device_id)[1]._installs.frame)
    return len(fakes)


@pytest.fixture(autouse=True)
def _child_imports_this_module(monkeypatch: pytest.MonkeyPatch) -> None:
    # The serving process unpickles `build_fakes` by module name: it must find `tests`.
    path = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", f"{REPO}{os.pathsep}{path}" if path else str(REPO))


def _account(graph_url: str) -> requests.Response:
    return requests.get(
        f"{graph_url}/v21.0/act_{ACCOUNT['account_id']}",
        params={"fields": "name,currency", "access_token": GRAPH_TOKEN},
        timeout=10,
    )


def _report(mmp_url: str) -> requests.Response:
    return requests.get(
        f"{mmp_url}/api/raw-data/export/app/{APP}/installs_report/v5",
        params={"from": "2026-11-27", "to": "2026-11-27", "timezone": "Asia/Seoul"},
        headers={"Authorization": f"Bearer {MMP_TOKEN}"},
        timeout=10,
    )


def _gone(pid: int) -> bool:
    """True when `pid` no longer runs (exited; a zombie waiting to be reaped counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def _wait_gone(pid: int, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _gone(pid):
            return True
        time.sleep(0.05)
    return False


def _refused(url: str) -> bool:
    try:
        requests.get(url, timeout=2)
    except requests.ConnectionError:
        return True
    return False


def test_serves_the_fakes_from_another_process_and_stops() -> None:
    process = FakeProcess(build_fakes, "af-device-7")
    try:
        graph_url, mmp_url = process.urls
        child = process._proc.pid
        assert child != os.getpid() and not _gone(child)

        account = _account(graph_url)
        assert account.status_code == 200
        assert account.json() == {
            "id": f"act_{ACCOUNT['account_id']}",
            "name": ACCOUNT["name"],
            "currency": "USD",
        }
        report = _report(mmp_url)
        assert report.status_code == 200
        lines = report.content.decode("utf-8").splitlines()
        assert len(lines) == 2 and "af-device-7" in lines[1]  # the factory's argument arrived

        # A method call runs on the fake in the serving process.
        graph, mmp = process.proxies()
        mmp.inject_errors([{"status": 503}])
        assert _report(mmp_url).status_code == 503
        assert _report(mmp_url).status_code == 200
        with pytest.raises(RuntimeError, match="AttributeError"):
            graph.no_such_method()

        # A function runs on all the fakes there: same process, same URL, new data.
        assert process.apply(swap_installs, "af-device-9") == 2
        lines = _report(mmp_url).content.decode("utf-8").splitlines()
        assert len(lines) == 2 and "af-device-9" in lines[1] and process.alive()
        with pytest.raises(RuntimeError, match="swap_installs\\(\\) failed.*TypeError"):
            process.apply(swap_installs)  # its argument is missing: the fakes keep serving
        assert _report(mmp_url).status_code == 200
    finally:
        process.stop()
    assert _wait_gone(child, timeout=5)
    assert _refused(graph_url) and _refused(mmp_url) and not process.alive()
    process.stop()  # a second stop is harmless


def test_a_factory_error_is_reported() -> None:
    with pytest.raises(RuntimeError, match="start failed in the serving process: TypeError"):
        FakeProcess(build_fakes)  # the factory's argument is missing


_PARENT = """
import json, os, sys, time
from adperf.sandbox.loopback import FakeProcess
from tests.sandbox.test_fake_process import build_fakes
process = FakeProcess(build_fakes, "af-parent")
print(json.dumps({"child": process._proc.pid, "urls": process.urls}), flush=True)
if sys.argv[1] == "exit":
    sys.exit(0)  # no stop(): the process ends and its end of the pipe closes
time.sleep(600)  # killed by the test
"""


@pytest.mark.parametrize("how", ["exit", "kill"])
def test_the_serving_process_does_not_outlive_its_caller(how: str) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT, how], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    try:
        assert parent.stdout is not None
        started = json.loads(parent.stdout.readline())
        child, (graph_url, mmp_url) = started["child"], started["urls"]
        assert _account(graph_url).status_code == 200  # serving while the caller lives
        if how == "kill":
            os.kill(parent.pid, signal.SIGKILL)  # no atexit, no finally: the pipe just closes
        parent.wait(timeout=30)
    finally:
        if parent.poll() is None:
            parent.kill()  # our own child, by its pid
            parent.wait()
    assert parent.returncode == (0 if how == "exit" else -signal.SIGKILL)
    outlived = not _wait_gone(child)
    if outlived:
        os.kill(child, signal.SIGKILL)  # the process this test started, by its pid
    assert not outlived, f"the serving process {child} outlived its caller"
    assert _refused(graph_url) and _refused(mmp_url)
