"""[sandbox] days: how much history a first build of the sandbox world has."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _ensure(tmp_path: Path, days: int | None, end: str) -> dict[str, str]:
    cfg = tmp_path / "luigi.cfg"
    lines = ["[sandbox]", f"root = {tmp_path / 'world'}", "profile = tiny", "seed = 7"]
    if days is not None:
        lines.append(f"days = {days}")
    cfg.write_text("\n".join(lines) + "\n")
    code = (
        "import datetime as dt, json; from tasks.resources import ensure_sandbox_world; "
        f"print(json.dumps(ensure_sandbox_world(dt.date.fromisoformat({end!r}))))"
    )
    env = {**os.environ, "LUIGI_CONFIG_PATH": str(cfg)}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True
    )
    meta: dict[str, str] = json.loads(out.stdout.strip().splitlines()[-1])
    return meta


def test_a_first_build_has_the_configured_history_and_an_extension_keeps_its_start(
    tmp_path: Path,
) -> None:
    meta = _ensure(tmp_path, 5, "2026-03-10")
    assert (meta["start"], meta["end"]) == ("2026-03-06", "2026-03-10")
    # An existing world keeps its start whatever the setting says now; it only grows.
    meta = _ensure(tmp_path, 30, "2026-03-12")
    assert (meta["start"], meta["end"]) == ("2026-03-06", "2026-03-12")
    assert json.loads((tmp_path / "world" / "world.json").read_text())["start"] == "2026-03-06"
