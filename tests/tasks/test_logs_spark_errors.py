"""EventLogsSpark's failure: luigi's ExternalProgramRunError prints the child's whole
environment (the HMAC key, every token); adperf's error names the day and leaks none of it."""

from __future__ import annotations

import os
from pathlib import Path

import luigi
import pytest

from adperf.errors import SourceError

from .conftest import END, configure


def test_a_failed_spark_job_names_the_day_and_leaks_no_environment(
    run_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "hmac-key-that-must-not-leak-0123"
    monkeypatch.setenv("ADPERF_HMAC_KEY", secret)
    monkeypatch.setenv("ADPERF_SLACK_TOKEN", "xoxb-must-not-leak")
    fail = run_root / "spark-submit"
    fail.write_text("#!/bin/sh\necho 'Exception in thread main: boom' >&2\nexit 3\n")
    fail.chmod(0o755)
    configure(run_root, logs={"engine": "spark"}, spark={"spark-submit": str(fail)})
    from tasks.extract import EventLogsSpark

    task = EventLogsSpark(date=END)
    try:
        with pytest.raises(SourceError) as info:
            task.run()
    finally:  # luigi's config is the process's: later tests read [logs] engine too
        configure(run_root, logs={"engine": "duckdb"})
        luigi.configuration.get_config().remove_option("spark", "spark-submit")
    text = str(info.value)
    assert f"logs for {END.isoformat()}: the Spark job failed" in text and "boom" in text
    assert "xoxb" not in text and "ENVIRONMENT" not in text
    assert os.environ["ADPERF_HMAC_KEY"] not in text and "SANDBOX" not in text.upper()
    assert info.value.__suppress_context__
    # The key went to the child in its environment, not on its command line.
    assert all(secret not in a for a in map(str, task.program_args()))
    env = task.program_environment()
    assert env["ADPERF_HMAC_KEY"] and env["ADPERF_HMAC_KEY"] not in " ".join(
        map(str, task.program_args())
    )
