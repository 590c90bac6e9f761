"""A tiny sandbox world and a luigi config pointing into tmp_path."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import luigi
import pytest
from luigi.task_register import Register

from adperf import platforms

END = dt.date(2026, 11, 20)


def configure(root: Path, **overrides: dict[str, str]) -> None:
    """Point every adperf section into `root` (a sandbox run) and reset luigi's caches."""
    cfg = luigi.configuration.get_config()
    values = {
        "adperf": {
            "sandbox": "true",
            "data_root": str(root / "lake"),
            "warehouse_url": f"sqlite:///{root / 'warehouse.db'}",
            "report_timezone": "Asia/Seoul",
            "report_currency": "USD",
            "account_days": "account",
        },
        "sandbox": {"root": str(root / "world"), "profile": "tiny", "seed": "7"},
        "slack": {"outbox": str(root / "outbox"), "channel": "#marketing-daily"},
        # One pull per platform then covers most of the 31-day window: 20 pulls a cold day
        # instead of 72, a quarter of a tiny DailyReport's time. test_spend_pulls (and the
        # CLI tests, with their own config files) run the shipped lookbacks.
        **{p.section: {"lookback_days": "28"} for p in platforms.entries()},
    }
    for section, opts in {**values, **overrides}.items():
        for key, value in opts.items():
            cfg.set(section, key, value)
    Register.clear_instance_cache()


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny world built once per session (copied by tests that change it)."""
    from adperf.sandbox.world import ensure_world

    root = tmp_path_factory.mktemp("world") / "world"
    ensure_world(root, end=END, profile="tiny", seed=7, report_timezone="Asia/Seoul")
    return root


def _run_root(root: Path, tiny_world: Path) -> Path:
    import shutil

    shutil.copytree(tiny_world, root / "world")
    configure(root)
    return root


@pytest.fixture()
def run_root(tmp_path: Path, tiny_world: Path) -> Iterator[Path]:
    """tmp_path configured as the lake/warehouse/outbox root, with the shared tiny world."""
    yield _run_root(tmp_path, tiny_world)
    Register.clear_instance_cache()


@pytest.fixture(scope="module")
def module_root(tmp_path_factory: pytest.TempPathFactory, tiny_world: Path) -> Iterator[Path]:
    """Like run_root, shared by a module's tests (one pipeline run for many checks)."""
    yield _run_root(tmp_path_factory.mktemp("run"), tiny_world)
    Register.clear_instance_cache()
