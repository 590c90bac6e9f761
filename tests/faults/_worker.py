"""A luigi worker process the kill tests SIGKILL at a chosen point of DailyReport.

python _worker.py ROOT MODE READY_FILE [WAREHOUSE_URL [SLACK_URL]]

At the point MODE names, the process writes READY_FILE and sleeps: the test then kills it
with SIGKILL, so the kill lands exactly there (no timing guesses). Modes:
  lake          inside the lake write of campaign_report (half a Parquet file in the temp folder)
  warehouse     inside load_day's transaction, after ad_spend_daily and campaign_daily inserts
  slack_post    after chat.postMessage answered, before the marker with its ts is saved
  slack_upload  after the marker was saved, before the chart and CSV are uploaded
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import harness  # noqa: E402  (this folder, not a package import: a script)


def _stop_here(ready: Path) -> None:
    ready.write_text("ready")
    time.sleep(600)  # the test kills us now
    raise SystemExit("not killed")


def _patch(mode: str, ready: Path) -> None:
    if mode == "lake":
        from adperf import lake

        real = lake.pq.write_table

        def write_table(table: Any, where: Any, **kw: Any) -> None:
            real(table, where, **kw)
            if "campaign_report" in str(where):
                data = Path(where).read_bytes()
                Path(where).write_bytes(data[: len(data) // 2])
                _stop_here(ready)

        lake.pq.write_table = write_table
    elif mode == "warehouse":
        from adperf import warehouse

        real_rows = warehouse.to_rows

        def to_rows(df: Any, table: Any) -> Any:
            if table.name == "cohort_roas":
                _stop_here(ready)
            return real_rows(df, table)

        warehouse.to_rows = to_rows
    elif mode in ("slack_post", "slack_upload"):
        from adperf.sinks import slack

        if mode == "slack_post":
            real_post = slack.post_message

            def post_message(*args: Any, **kw: Any) -> Any:
                real_post(*args, **kw)
                _stop_here(ready)

            slack.post_message = post_message
        else:

            def upload_files(*args: Any, **kw: Any) -> Any:
                _stop_here(ready)

            slack.upload_files = upload_files
    else:
        raise SystemExit(f"unknown mode {mode}")


def main() -> None:
    root, mode, ready = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    warehouse_url = sys.argv[4] if len(sys.argv) > 4 and sys.argv[4] else None
    slack_url = sys.argv[5] if len(sys.argv) > 5 else None
    harness.configure(root, warehouse_url=warehouse_url, slack_url=slack_url)
    _patch(mode, ready)
    harness.build()


if __name__ == "__main__":
    main()
