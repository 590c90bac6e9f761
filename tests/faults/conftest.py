"""One tiny world and one clean, fully logged run per session; fault tests compare against it."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from luigi.execution_summary import LuigiStatusCode
from luigi.task_register import Register

from .harness import END, build, configure, planted_env


@pytest.fixture(scope="session")
def fault_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny world (40 days to END), built once for the fault tests."""
    from adperf.sandbox.world import ensure_world

    root = tmp_path_factory.mktemp("faultworld") / "world"
    ensure_world(root, end=END, profile="tiny", seed=7, report_timezone="Asia/Seoul")
    return root


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        self.lines.append(f"{record.name} {record.levelname} {text}")


@dataclass
class CleanRun:
    """A finished DailyReport of END: its root, every log line, and what Slack received."""

    root: Path
    logs: str
    messages: list[dict[str, Any]] = field(default_factory=list)
    files: list[dict[str, Any]] = field(default_factory=list)

    @property
    def warehouse_url(self) -> str:
        return f"sqlite:///{self.root / 'warehouse.db'}"


def full_run(root: Path, world: Path) -> CleanRun:
    """DailyReport of END in `root` with planted secrets, Slack token and DEBUG logs captured."""
    from adperf.sandbox.fake_slack import FakeSlack

    from .harness import SLACK_TOKEN

    shutil.copytree(world, root / "world")
    slack = FakeSlack(SLACK_TOKEN)
    url = slack.start()
    handler = _Collect()
    loggers = [logging.getLogger(n) for n in ("", "luigi", "luigi-interface")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG)
    try:
        configure(root, slack_url=url)
        with planted_env(slack=True):
            result = build()
        assert result.status == LuigiStatusCode.SUCCESS, result.summary_text
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.removeHandler(handler)
            lg.setLevel(level)
        slack.stop()
        Register.clear_instance_cache()
    return CleanRun(root, "\n".join(handler.lines), list(slack.messages), list(slack.files))


@pytest.fixture(scope="session")
def clean(tmp_path_factory: pytest.TempPathFactory, fault_world: Path) -> Iterator[CleanRun]:
    """The reference run every fault test compares with (row for row, byte for byte)."""
    yield full_run(tmp_path_factory.mktemp("clean"), fault_world)
    Register.clear_instance_cache()
