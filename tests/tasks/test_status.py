"""Monitoring: pipeline_runs rows per task run, and `adperf status` at a glance."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import luigi
import pandas as pd
import pytest
from luigi.execution_summary import LuigiStatusCode

from adperf import lake, warehouse
from adperf.ops import render_status
from tasks import status
from tasks.cli import main as cli

from .conftest import END


@pytest.fixture(scope="module")
def ran(module_root: Path) -> Path:
    from tasks.extract import EventLogs, Payments

    from .conftest import configure

    configure(module_root)
    result = luigi.build(
        [EventLogs(date=END), Payments(date=END)], local_scheduler=True, detailed_summary=True
    )
    assert result.status == LuigiStatusCode.SUCCESS, result.summary_text
    engine = warehouse.make_engine(f"sqlite:///{module_root / 'warehouse.db'}")
    warehouse.record_pipeline_run(
        engine,
        {
            "run_id": "test",
            "task_id": f"Installs_{END}",
            "family": "Installs",
            "day": END,
            "status": "FAILED",
            "started_at": dt.datetime(2026, 11, 21, 6, 30),
            "duration_s": 1.5,
            "error_class": "SourceError",
        },
    )
    engine.dispose()
    return module_root


def test_each_task_run_is_a_pipeline_runs_row_with_rows_bytes_and_duration(ran: Path) -> None:
    from .conftest import configure

    configure(ran)
    engine = warehouse.make_engine(f"sqlite:///{ran / 'warehouse.db'}")
    runs = warehouse.latest_pipeline_runs(engine, END, END).set_index("family")
    engine.dispose()
    events = runs.loc["EventLogs"]
    # EventLogs writes the day's events and its match edges: both are its output.
    outputs = ("events", "match_edges")
    rows = [lake.read_meta(ran / "lake", d, "date", END.isoformat())["rows"] for d in outputs]
    assert events["status"] == "DONE" and pd.isna(events["error_class"])
    assert events["rows_out"] == sum(rows) and min(rows) > 0
    parts = [lake.partition_path(ran / "lake", d, "date", END.isoformat()) for d in outputs]
    assert events["bytes_out"] == sum(f.stat().st_size for p in parts for f in p.iterdir())
    assert events["duration_s"] >= 0
    assert (
        runs.loc["Payments", "rows_out"]
        == lake.read_meta(ran / "lake", "payments", "date", END.isoformat())["rows"]
    )
    assert "LogFiles" not in runs.index  # external inputs are not runs of ours


def test_status_grid_shows_complete_failed_and_missing(ran: Path) -> None:
    from .conftest import configure

    configure(ran)
    days = [END - dt.timedelta(days=1), END]
    grid = status.status_grid(days)
    assert grid["EventLogs"] == {days[0]: "missing", days[1]: "complete"}
    assert grid["Payments"] == {days[0]: "missing", days[1]: "complete"}
    assert grid["Installs"][END] == "failed"
    assert grid["DailyReport" if "DailyReport" in grid else "LoadReport"][END] == "missing"
    families = list(grid)
    assert families.index("Payments") < families.index("LoadReport")  # sources first


def test_adperf_status_prints_a_plain_table_when_not_a_tty(
    ran: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from .conftest import configure

    configure(ran)
    code = cli(["status", "--end", END.isoformat(), "--days", "2"])
    out = capsys.readouterr().out
    assert code == 1  # a task failed in these days
    assert "\033[" not in out
    line = next(row for row in out.splitlines() if row.startswith("EventLogs "))
    assert line.split()[1:] == ["-", "ok"]
    assert next(r for r in out.splitlines() if r.startswith("Installs ")).split()[-1] == "FAIL"


def test_colour_only_when_asked() -> None:
    grid = {"Payments": {END: "complete"}, "Installs": {END: "failed"}}
    plain = render_status(grid, [END], colour=False)
    coloured = render_status(grid, [END], colour=True)
    assert "\033[" not in plain and "\033[31;1m" in coloured
    assert plain.splitlines()[-1] == "1 complete, 1 failed, 0 missing"


def test_recording_a_run_reads_each_partition_once_on_one_engine(
    ran: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from adperf import objstore
    from tasks import ops
    from tasks.extract import EventLogs

    from .conftest import configure

    configure(ran)
    task = EventLogs(date=END)
    outputs = luigi.task.flatten(task.output())
    reads: list[str] = []
    current = objstore.LocalFolder.current

    def counting(self: objstore.LocalFolder, part: str) -> objstore.Version | None:
        reads.append(part)
        return current(self, part)

    monkeypatch.setattr(objstore.LocalFolder, "current", counting)
    rows = [
        lake.read_meta(ran / "lake", t.folder, "date", END.isoformat())["rows"] for t in outputs
    ]
    nbytes = sum(t.nbytes() for t in outputs)
    reads.clear()
    assert ops._measure(outputs) == (sum(rows), nbytes)
    assert len(reads) == len(outputs) == 2  # one version read per partition, not three
    engines: list[str] = []
    make_engine = warehouse.make_engine
    monkeypatch.setattr(
        warehouse, "make_engine", lambda url: engines.append(url) or make_engine(url)
    )
    ops._engines.clear()
    for _ in range(3):
        ops._on_start(task)
        ops._record(task, "DONE", None)
    assert len(engines) == 1  # one engine for every row of the process
    engine = make_engine(f"sqlite:///{ran / 'warehouse.db'}")
    with engine.connect() as conn:
        done = pd.read_sql("SELECT * FROM pipeline_runs WHERE family = 'EventLogs'", conn)
    engine.dispose()
    assert len(done) == 4 and (done["rows_out"] == sum(rows)).all()
