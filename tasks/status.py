"""`adperf status`: which task families are complete, failed or missing over the last days."""

from __future__ import annotations

import datetime as dt
import sys
from collections import defaultdict

import luigi
from luigi.task import flatten

from adperf import warehouse
from adperf.ops import render_status
from tasks import config

DEFAULT_DAYS = 7


def day_tasks(day: dt.date) -> dict[str, list[luigi.Task]]:
    """The tasks of DailyReport(day) that belong to `day`, by family (wrappers and external
    inputs left out: they have no output of their own)."""
    from tasks.load import DailyReport

    found: dict[str, list[luigi.Task]] = defaultdict(list)
    seen: set[str] = set()
    todo: list[luigi.Task] = [DailyReport(date=day)]
    while todo:
        task = todo.pop()
        if task.task_id in seen:
            continue
        seen.add(task.task_id)
        todo += flatten(task.requires())
        if isinstance(task, (luigi.WrapperTask, luigi.ExternalTask)):
            continue
        if getattr(task, "date", None) == day:
            found[task.task_family].append(task)
    return dict(found)


def status_grid(days: list[dt.date]) -> dict[str, dict[dt.date, str]]:
    """complete / failed / missing per task family and day."""
    engine = warehouse.make_engine(config.adperf().warehouse_url)
    try:
        runs = warehouse.latest_pipeline_runs(engine, days[0], days[-1])
    finally:
        engine.dispose()
    last = {(r.family, r.day): r.status for r in runs.itertuples()}
    grid: dict[str, dict[dt.date, str]] = defaultdict(dict)
    for day in days:
        for family, tasks in day_tasks(day).items():
            if all(t.complete() for t in tasks):
                grid[family][day] = "complete"
            elif last.get((family, day)) == "FAILED":
                grid[family][day] = "failed"
            else:
                grid[family][day] = "missing"
    order = _graph_order(days[-1])
    return {f: grid[f] for f in sorted(grid, key=lambda f: order.get(f, len(order)))}


def _graph_order(day: dt.date) -> dict[str, int]:
    """Families from the sources down to DailyReport's direct inputs (extract first)."""
    depth: dict[str, int] = {}
    memo: dict[str, int] = {}

    def visit(task: luigi.Task) -> int:
        if task.task_id not in memo:
            d = 1 + max((visit(t) for t in flatten(task.requires())), default=-1)
            depth[task.task_family] = max(depth.get(task.task_family, 0), d)
            memo[task.task_id] = d
        return memo[task.task_id]

    from tasks.load import DailyReport

    for dep in flatten(DailyReport(date=day).requires()):
        visit(dep)
    return {f: i for i, f in enumerate(sorted(depth, key=lambda f: (depth[f], f)))}


def main(end: dt.date | None, n_days: int = DEFAULT_DAYS) -> int:
    """Print the table; exit 1 when a task of these days failed, else 0."""
    from adperf.timeutil import zone
    from tasks import ops

    ops.flush_stale_spools()  # alerts a killed run left behind are sent, once, by whoever looks
    last = end or dt.datetime.now(zone(config.adperf().report_timezone)).date() - dt.timedelta(1)
    days = [last - dt.timedelta(days=i) for i in reversed(range(n_days))]
    grid = status_grid(days)
    print(f"adperf status {days[0]} .. {days[-1]} ({config.adperf().report_timezone})")
    print(render_status(grid, days, colour=sys.stdout.isatty()))
    return 1 if any(s == "failed" for row in grid.values() for s in row.values()) else 0
