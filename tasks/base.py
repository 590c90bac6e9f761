"""What the tasks of extract, transform and load share: the lake task, windows, FX, markers."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import luigi
import pandas as pd

from adperf import atomic, lake, platforms
from adperf.fx import FxTable, load_rates
from adperf.sinks import inputs
from adperf.timeutil import days, month_days
from tasks import config, ops  # noqa: F401 - ops registers the monitoring and alert handlers
from tasks import resources as endpoints
from tasks.targets import LakePartition

COHORT_WINDOW_DAYS = 30  # the oldest cohort age reported (D30)
PLATFORMS = platforms.NAMES


def _iso(day: dt.date) -> str:
    return day.isoformat()


def _fx() -> FxTable:
    return load_rates(Path(endpoints.fx_rates_path()), config.adperf().report_currency)


def _window(day: dt.date, n_days: int) -> list[dt.date]:
    return days(day - dt.timedelta(days=n_days - 1), day)


def _history(day: dt.date, history_days: int) -> tuple[list[dt.date], list[dt.date]]:
    """Closed months (first days) and the current month's days covering the history window."""
    first = day - dt.timedelta(days=history_days - 1)
    month_start = day.replace(day=1)
    months: list[dt.date] = []
    m = first.replace(day=1)
    while m < month_start:
        months.append(m)
        m = month_days(m)[1] + dt.timedelta(days=1)
    return months, days(max(month_start, first), day)


def _read_all(targets: list[LakePartition]) -> pd.DataFrame:
    return lake.frame_of([t.read_arrow() for t in targets])


class LakeTask(luigi.Task):
    """A task whose output is one lake partition per name in `outputs`."""

    outputs: tuple[str, ...] = ()

    def partition(self) -> tuple[str, str]:
        return "date", _iso(self.date)

    def output(self) -> Any:
        key, value = self.partition()
        root = config.data_root()
        targets = {name: LakePartition(root, name, key, value) for name in self.outputs}
        return targets if len(targets) > 1 else next(iter(targets.values()))

    def progress(self, percent: int, message: str) -> None:
        """Show progress in luigid's UI (a no-op outside a worker)."""
        _progress(self, percent, message)


def _progress(task: luigi.Task, percent: int, message: str) -> None:
    # The worker sets these callbacks only while the task runs (luigi/worker.py TaskProcess).
    if task.set_progress_percentage is not None:
        task.set_progress_percentage(percent)
    if task.set_status_message is not None:
        task.set_status_message(message)


def _as_money(df: pd.DataFrame) -> pd.DataFrame:
    """`x_micros` columns → `x` floats in currency units (for display only)."""
    return inputs.as_money(df)


def _first_row(df: pd.DataFrame) -> dict[str, Any]:
    return inputs.first_row(df)


def _read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object written by `_write_json`, or None when there is none."""
    data: dict[str, Any] | None = atomic.read_json(path)
    return data


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    atomic.write_json(path, payload, indent=None, sort_keys=True, ensure_ascii=True)
