"""A lake written before `match_edges` existed: EventLogs derives a day's edges from its events
partition (the bytes the extract writes), even when the day's server logs are gone."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import luigi
import pytest
from luigi.execution_summary import LuigiStatusCode
from luigi.task_register import Register

from adperf import lake

from ..faults.harness import END, configure, planted_env

DAY = END.isoformat()


@pytest.fixture()
def extracted(tmp_path: Path) -> Iterator[Path]:
    """The tiny world's EventLogs of END, extracted into tmp_path/lake."""
    from adperf.sandbox.world import ensure_world
    from tasks.pipeline import EventLogs

    ensure_world(tmp_path / "world", end=END, profile="tiny", seed=7, report_timezone="Asia/Seoul")
    configure(tmp_path)
    with planted_env():
        result = luigi.build([EventLogs(date=END)], local_scheduler=True, detailed_summary=True)
        assert result.status == LuigiStatusCode.SUCCESS, result.summary_text
        yield tmp_path
    Register.clear_instance_cache()


def test_an_old_lake_gets_its_match_edges_from_the_events_without_the_logs(
    extracted: Path,
) -> None:
    from tasks.pipeline import EventLogs

    edges = lake.partition_path(extracted / "lake", "match_edges", "date", DAY)
    written = (edges / lake.DATA_FILE).read_bytes()
    assert len(lake.read_partition(extracted / "lake", "match_edges", "date", DAY)) > 5
    # The lake as an older adperf left it, and the day's logs rotated away since.
    shutil.rmtree(edges)
    logs = list((extracted / "world" / "logs").glob(f"{DAY}*"))
    assert logs
    for path in logs:
        path.unlink()

    assert EventLogs(date=END).complete()
    assert (edges / lake.DATA_FILE).read_bytes() == written
    # Not when the events themselves are missing: then the day is extracted again.
    shutil.rmtree(edges)
    shutil.rmtree(lake.partition_path(extracted / "lake", "events", "date", DAY))
    assert not EventLogs(date=END).complete()
    assert not edges.exists()
