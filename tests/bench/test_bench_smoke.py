"""The benchmark's small profile runs end to end once (a smoke test: no timing is asserted)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import background_commands, background_result

REPO = Path(__file__).resolve().parents[2]
CI = os.environ.get("CI") == "true"
STAGES = {
    "logs.adperf", "logs.duckdb", "logs.naive",
    "ltv.adperf", "ltv.adperf_warm", "ltv.lifetimes",
    "pagerank.adperf", "pagerank.networkx",
    "warehouse.adperf_sqlite", "warehouse.to_sql_sqlite",
    "pipeline.cold", "pipeline.rerun", "pipeline.backfill", "pipeline.check365",
}  # fmt: skip
# Skipped (not failed) only when MariaDB is not reachable, and never under CI.
MARIADB = {"warehouse.adperf_mariadb", "warehouse.to_sql_mariadb"}


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> dict:  # type: ignore[type-arg]
    # Started in the background by tests/conftest.py when the whole suite runs; else here.
    started = background_result("bench-small", timeout=600)
    if started is None:
        out = tmp_path_factory.mktemp("bench")
        argv, env = background_commands(out)["bench-small"][1:]
        proc = subprocess.run(
            argv, cwd=REPO, capture_output=True, text=True, timeout=600, env={**os.environ, **env}
        )
        started = proc.returncode, out, proc.stdout, proc.stderr
    returncode, out, stdout, stderr = started
    # Exit 1 means a stage failed: the smoke test fails with it (no stage may fail).
    assert returncode == 0, stderr[-3000:]
    data: dict = json.loads((out / "small" / "latest.json").read_text())  # type: ignore[type-arg]
    data["stdout"] = stdout
    data["stderr"] = stderr
    return data


def test_every_stage_ran_and_has_a_median(result: dict) -> None:  # type: ignore[type-arg]
    stages = result["stages"]
    assert STAGES | MARIADB == set(stages)
    ran = STAGES | (MARIADB if CI else {n for n in MARIADB if "error" not in stages[n]})
    for name in set(stages) - ran:
        assert stages[name]["error"].startswith("skipped: MariaDB"), (name, stages[name])
    for name in sorted(ran):
        s = stages[name]
        assert "error" not in s, (name, s.get("error"))
        assert len(s["runs"]) == 1 and not s.get("capped"), name
        assert s["median_s"] > 0 and s["rows"] > 0 and s["peak_rss_bytes"] > 10 * 2**20, name


def test_baselines_agree_with_adperf_on_the_same_data(result: dict) -> None:  # type: ignore[type-arg]
    stages, checks = result["stages"], result["checks"]
    # The three log readers read the same file: the same number of lines.
    assert len({stages[n]["rows"] for n in ("logs.adperf", "logs.duckdb", "logs.naive")}) == 1
    assert "same ranks" in checks["PageRank L1(adperf - networkx)"]
    # Both LTV fits reach the same maximum-likelihood parameters.
    rel = float(checks["LTV params, adperf vs lifetimes"].split()[-1])
    assert rel < 1e-2
    # adperf and the naive loop keep the same rows; DuckDB's bare parse one row per line.
    assert checks["logs adperf vs naive"] == "same rows kept"
    counts = stages["logs.adperf"]["info"]["counts"]
    assert stages["logs.naive"]["info"]["kept"] == stages["logs.adperf"]["info"]["kept"] > 0
    assert stages["logs.naive"]["info"]["bad"] == counts["bad"] > 0
    assert stages["logs.duckdb"]["info"]["kept"] == counts["lines"]
    assert stages["pipeline.cold"]["info"]["status"] == "SUCCESS"
    assert stages["pipeline.rerun"]["info"]["ran_nothing"] is True
    # RangeDaily's completeness pass over 365 days: only the report day is complete.
    assert stages["pipeline.backfill"]["info"]["missing"] == 364
    assert stages["pipeline.check365"]["info"]["complete"] == 365


def test_table_and_targets_are_printed(result: dict) -> None:  # type: ignore[type-arg]
    out = result["stdout"]
    assert "| logs.adperf |" in out and "| pipeline.cold |" in out
    assert "The targets are for `large`" in out
    whats = [t["what"] for t in result["targets"]]
    assert len(whats) == 11 and any("PageRank" in w for w in whats)
    assert any("warm start" in w for w in whats) and any("cold start" in w for w in whats)
    assert result["machine"]["nproc"] >= 1
