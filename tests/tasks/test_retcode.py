"""The luigi CLI exits non-zero on failures, with the repository's luigi.cfg [retcode]."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _luigi(tmp_path: Path, cfg: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "override.cfg"
    path.write_text(cfg)
    full = {k: v for k, v in os.environ.items() if not k.startswith("ADPERF_")}
    full.update(env, LUIGI_CONFIG_PATH=str(path))
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "luigi",
            "--module",
            "tasks",
            "DailyReport",
            "--date",
            "2026-11-20",
            "--local-scheduler",
        ],
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
"""


def test_production_without_hmac_key_refuses_to_start(tmp_path: Path) -> None:
    proc = _luigi(tmp_path, PROD.format(root=tmp_path), {})
    assert proc.returncode != 0
    assert "ADPERF_HMAC_KEY is not set" in proc.stdout + proc.stderr
    assert not (tmp_path / "lake").exists()


def test_failed_task_exits_with_task_failed_code(tmp_path: Path) -> None:
    proc = _luigi(tmp_path, PROD.format(root=tmp_path), {"ADPERF_HMAC_KEY": "k" * 32})
    assert proc.returncode == 30, proc.stderr[-2000:]  # [retcode] task_failed in luigi.cfg
    assert "[payments] url or ADPERF_PAYMENTS_URL is not set" in proc.stderr
