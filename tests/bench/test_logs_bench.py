"""bench.logs_data (the fast log-day generator) and bench.logs_scale (1 vs 2 workers) on a
small day: the lines are what the profile says, and both configurations extract the same."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from adperf.sources.logs import fetch_events
from bench.logs_data import log_day_files
from bench.logs_scale import REPO
from bench.profiles import REPORT_DAY, TIMEZONE


@pytest.mark.parametrize("compress", [True, False], ids=["gzip", "plain"])
def test_generated_day_has_the_profiles_lines(tmp_path: Path, compress: bool) -> None:
    files = log_day_files(
        tmp_path, REPORT_DAY, events=30_000, users=2_000, files=3, compress=compress
    )
    assert len(files) == 3 and all(f.stat().st_size > 0 for f in files)
    suffix = ".jsonl.gz" if compress else ".jsonl"
    df, counts = fetch_events(
        str(tmp_path / f"{{date}}-*{suffix}"), day=REPORT_DAY, timezone=TIMEZONE, hmac_key=b"k"
    )
    assert counts["lines"] == 30_000 and counts["out_of_day"] == 0
    assert 5 <= counts["bad"] <= 80  # ~0.1%
    assert 0.37 < len(df) / 30_000 < 0.43  # matches kept, session starts counted
    assert 0.07 < df["premium"].mean() < 0.13
    assert df["ts"].is_monotonic_increasing  # files cut by time, each in time order
    # Built once: a second call reuses the files.
    mtimes = [f.stat().st_mtime_ns for f in files]
    log_day_files(tmp_path, REPORT_DAY, events=30_000, users=2_000, files=3, compress=compress)
    assert [f.stat().st_mtime_ns for f in files] == mtimes


def _run(lake: Path, glob: str, workers: int) -> dict:  # type: ignore[type-arg]
    """One bench run in its own process, as `measure` starts it (it sets luigi's config)."""
    lake.mkdir()
    out = lake / "result.json"
    cmd = [sys.executable, "-m", "bench.logs_scale", "--one", str(workers), "--lake", str(lake)]
    subprocess.run([*cmd, "--glob", glob, "--out", str(out)], cwd=REPO, check=True)
    return json.loads(out.read_text())  # type: ignore[no-any-return]


def test_one_and_two_workers_extract_the_same_day(tmp_path: Path) -> None:
    log_day_files(tmp_path / "logs", REPORT_DAY, events=20_000, users=2_000, files=4)
    glob = str(tmp_path / "logs" / "{date}-*.jsonl.gz")
    one = _run(tmp_path / "one", glob, 1)
    two = _run(tmp_path / "two", glob, 2)
    assert one["lines"] == two["lines"] == 20_000
    assert one["rows"] == two["rows"] > 7_000
