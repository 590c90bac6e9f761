"""`luigi --module tasks DailyReport --date D --local-scheduler` from the repo root (sandbox)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .conftest import END

REPO = Path(__file__).resolve().parents[2]


def test_luigi_cli_runs_the_day_then_has_nothing_to_do(tmp_path: Path, tiny_world: Path) -> None:
    import shutil

    shutil.copytree(tiny_world, tmp_path / "world")
    cfg = tmp_path / "luigi.cfg"
    cfg.write_text(
        f"[adperf]\nsandbox = true\ndata_root = {tmp_path}/lake\n"
        f"warehouse_url = sqlite:///{tmp_path}/w.db\n"
        f"[sandbox]\nroot = {tmp_path}/world\nprofile = tiny\n"
        f"[slack]\noutbox = {tmp_path}/outbox\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADPERF_")}
    env["LUIGI_CONFIG_PATH"] = str(cfg)
    cmd = [
        sys.executable,
        "-m",
        "luigi",
        "--module",
        "tasks",
        "DailyReport",
        "--date",
        END.isoformat(),
        "--local-scheduler",
    ]
    first = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "ran successfully" in first.stderr
    assert (tmp_path / "outbox" / f"slack-{END}.json").is_file()
    second = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0
    assert "ran successfully" not in second.stderr
    assert "already" in second.stderr or "complete ones were encountered" in second.stderr
