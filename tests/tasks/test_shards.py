"""Scale-out: two worker processes on one luigid share a day's log shards; the merge equals
the unsharded read (tests/sources/test_logs.py checks N shards of split files byte for byte)."""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pandas as pd

from adperf import lake, warehouse
from adperf.sources.logs import fetch_events
from tasks.config import SANDBOX_HMAC_KEY

from .conftest import END, configure
from .test_luigid import REPO, api, start_luigid

SHARDS = 2


def test_two_workers_run_each_shard_once_and_the_merge_equals_the_whole(
    tmp_path: Path, tiny_world: Path
) -> None:
    shutil.copytree(tiny_world, tmp_path / "world")
    cfg = tmp_path / "luigi.cfg"
    cfg.write_text(
        f"[adperf]\nsandbox = true\ndata_root = {tmp_path}/lake\n"
        f"warehouse_url = sqlite:///{tmp_path}/w.db\n"
        f"[sandbox]\nroot = {tmp_path}/world\nprofile = tiny\n"
        f"[slack]\noutbox = {tmp_path}/outbox\n"
        f"[logs]\nshards = {SHARDS}\n"
        # A worker whose tasks are taken by the other waits for them instead of exiting.
        "[worker]\nkeep_alive = true\nwait_interval = 0.2\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADPERF_")}
    env["LUIGI_CONFIG_PATH"] = str(cfg)
    var = tmp_path / "var"
    var.mkdir()
    # pipeline_runs exists before the workers start, as after any first run: two processes
    # creating it at the same instant race (adperf.warehouse.record_pipeline_run, checkfirst).
    engine = warehouse.make_engine(f"sqlite:///{tmp_path}/w.db")
    warehouse.pipeline_runs.create(engine, checkfirst=True)
    engine.dispose()
    for port in start_luigid(var):
        # --no-lock: the same command twice on one machine is the point here.
        cmd = [sys.executable, "-m", "luigi", "--module", "tasks", "EventLogs"]
        cmd += ["--date", END.isoformat(), "--workers", "1", "--no-lock"]
        cmd += ["--scheduler-host", "127.0.0.1", "--scheduler-port", str(port)]
        procs = [
            subprocess.Popen(
                cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
            for _ in range(2)
        ]
        outs = [p.communicate(timeout=240)[0] for p in procs]
        # Both end with the day's outcome (tasks.ops patches): a worker whose share the other
        # ran waits for it (keep_alive) and counts it as done, not 10 'run by another worker'
        # or 25 'not run' as stock luigi 3.8.1 does.
        assert [p.returncode for p in procs] == [0, 0], [o[-3000:] for o in outs]
        assert not any(re.search(r"\* \d+ failed", o) for o in outs)
        assert not any("were being run by another worker" in o for o in outs)
        assert any("were completed by another worker" in o for o in outs)  # they did share
        done = api(port, "task_list", {"status": "DONE"})
        shard_tasks = sorted(
            t["params"]["shard"] for t in done.values() if t["name"] == "EventLogsShard"
        )
        assert shard_tasks == [str(k) for k in range(SHARDS)]

    # Each shard ran exactly once, in one of the two processes (pipeline_runs, one row a run).
    with sqlite3.connect(tmp_path / "w.db") as conn:
        runs = conn.execute(
            "SELECT task_id, status FROM pipeline_runs WHERE family = 'EventLogsShard'"
        ).fetchall()
    assert len(runs) == SHARDS and {s for _, s in runs} == {"DONE"}
    assert len({t for t, _ in runs}) == SHARDS
    assert sum("running   EventLogsShard" in o for o in outs) >= 1

    merged = lake.read_partition(tmp_path / "lake", "events", "date", END.isoformat())
    whole, counts = fetch_events(
        str(tmp_path / "world" / "logs" / "{date}.jsonl.gz"),
        day=END,
        timezone="Asia/Seoul",
        hmac_key=SANDBOX_HMAC_KEY.encode(),
    )
    assert len(whole) > 0
    key = ["ts", "user_pid", "event", "peer_pid"]
    pd.testing.assert_frame_equal(
        merged.sort_values(key, kind="stable").reset_index(drop=True),
        whole.sort_values(key, kind="stable").reset_index(drop=True),
        check_dtype=False,
    )
    meta = lake.read_meta(tmp_path / "lake", "events", "date", END.isoformat())
    assert meta["rows"] == len(whole)
    assert {k: meta[k] for k in counts} == counts
    shard_rows = [
        lake.read_meta(
            tmp_path / "lake", f"events_shards/shards={SHARDS}/shard={k}", "date", END.isoformat()
        )["rows"]
        for k in range(SHARDS)
    ]
    # The sandbox writes a day as one gzip, which is never cut: one shard reads it all.
    assert sorted(shard_rows) == [0, len(whole)]
    edges = lake.read_partition(tmp_path / "lake", "match_edges", "date", END.isoformat())
    matches = whole[whole["peer_pid"].notna() & (whole["user_pid"] != whole["peer_pid"])]
    assert len(edges) > 0 and edges["matches"].sum() == len(matches)


def test_a_shard_is_complete_only_with_its_three_parts_from_one_run(run_root: Path) -> None:
    import luigi

    from adperf.sources.logs import SHARD_HASHES, shard_folder
    from tasks.extract import EventLogsShard

    # The shard's parameters say its share: no [logs] shards (which would outlive this test).
    configure(run_root)
    shard = EventLogsShard(date=END, shard=0, shards=SHARDS)
    assert not shard.complete()
    assert luigi.build([shard], local_scheduler=True, log_level="WARNING")
    assert shard.complete()
    # A rerun killed after rewriting its events: the hashes are another run's.
    lake_root, hashes = run_root / "lake", shard_folder(SHARD_HASHES, 0, SHARDS)
    table = lake.read_arrow(lake_root, hashes, "date", END.isoformat())
    meta = lake.read_meta(lake_root, hashes, "date", END.isoformat())
    lake.write_table(
        lake_root, hashes, "date", END.isoformat(), table,
        meta={"shard_run": "another run", "hash_function": meta["hash_function"]},
    )  # fmt: skip
    assert not shard.complete()
    # Without its hashes (killed before the last write) it is not complete either.
    shutil.rmtree(lake.partition_path(lake_root, hashes, "date", END.isoformat()))
    assert not shard.complete()
