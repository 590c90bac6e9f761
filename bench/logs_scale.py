"""`python -m bench.logs_scale --profile large|xlarge`: the log extract on 1 and on 2 workers.

One day of server logs in several gzip files (`bench.logs_data`), extracted by the pipeline's
own `EventLogs` task through `luigi.build` (local scheduler): with 1 worker and `[logs] shards
= 1`, and with 2 workers and `[logs] shards = 2` (two `EventLogsShard` tasks, each reading
its share of the bytes, then the merge). Each run is a fresh process with a fresh lake, the
configurations interleaved run by run so both see the same machine load; the median of
`repeats` runs is reported with every run's seconds, as a Markdown table, and written to
`<data>/<profile>/logs-scale.json`.

With `--s3 s3://bucket/prefix` (and `--s3-endpoint`, credentials from the environment as for
the pipeline: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY), every worker count also runs with the
lake in that bucket (each run under a fresh prefix), so the table compares events/s of the
object store with the local folder.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.profiles import REPORT_DAY, TIMEZONE

REPO = Path(__file__).resolve().parent.parent
HMAC_KEY = "bench-key-not-a-secret"


@dataclass(frozen=True)
class LogProfile:
    """A day of server logs: events, distinct users, files (gzip, cut by time)."""

    name: str
    events: int
    users: int
    files: int


LOG_PROFILES = {
    p.name: p
    for p in (
        LogProfile("small", 200_000, 20_000, 4),
        LogProfile("large", 5_000_000, 1_000_000, 4),
        LogProfile("xlarge", 20_000_000, 3_000_000, 8),
    )
}


@dataclass(frozen=True)
class S3Target:
    """Where the object-store runs put their lakes: `url` (s3://bucket/prefix) at `endpoint`."""

    url: str
    endpoint: str = ""
    region: str = "us-east-1"


def _configure(lake: Path, logs_glob: str, shards: int, data_root: str | None = None) -> None:
    """Point luigi's adperf sections at a production-like setup: real files, no sandbox."""
    import luigi
    from luigi.task_register import Register

    values = {
        "adperf": {
            "sandbox": "false",
            "data_root": data_root or str(lake / "lake"),
            "warehouse_url": f"sqlite:///{lake / 'warehouse.db'}",
            "report_timezone": TIMEZONE,
        },
        "logs": {"path": logs_glob, "shards": str(shards), "max_bad_fraction": "0.01"},
    }
    cfg = luigi.configuration.get_config()
    for section, opts in values.items():
        for key, value in opts.items():
            cfg.set(section, key, value)
    Register.clear_instance_cache()


def run_once(
    lake: Path, logs_glob: str, workers: int, pin: bool = False, s3: S3Target | None = None
) -> dict[str, Any]:
    """One luigi.build of EventLogs with `workers` workers and as many shards (this process),
    the lake in `lake` or, given `s3`, under a fresh prefix of that bucket.

    With `pin`, each task runs on one CPU (shard k on CPU k, the merge and the unsharded read
    on CPU 0): a worker with one core of its own, as on one machine per worker, instead of
    every process spreading its threads over the machine's cores.
    """
    import luigi

    from adperf import lake as lake_io

    os.environ["ADPERF_HMAC_KEY"] = HMAC_KEY
    root: Any = lake / "lake"
    if s3 is not None:
        import luigi.configuration

        url = f"{s3.url.rstrip('/')}/logs-scale-{lake.name}-{time.time_ns()}"
        cfg = luigi.configuration.get_config()
        cfg.set("s3", "endpoint_url", s3.endpoint)
        cfg.set("s3", "region", s3.region)
        _configure(lake, logs_glob, workers, data_root=url)
        from adperf.objstore import S3Bucket

        root = S3Bucket.connect(url, endpoint_url=s3.endpoint, region=s3.region)
    else:
        _configure(lake, logs_glob, workers)
    from tasks.extract import EventLogs

    if pin:
        cpus = sorted(os.sched_getaffinity(0))

        @luigi.Task.event_handler(luigi.Event.START)
        def _pin(task: luigi.Task) -> None:
            os.sched_setaffinity(0, {cpus[getattr(task, "shard", 0) % len(cpus)]})

    t0, c0 = time.perf_counter(), _cpu()
    result = luigi.build(
        [EventLogs(date=REPORT_DAY)],
        local_scheduler=True,
        workers=workers,
        detailed_summary=True,
        log_level="WARNING",
    )
    seconds, cpu = time.perf_counter() - t0, _cpu() - c0
    if result.status != luigi.LuigiStatusCode.SUCCESS:
        raise RuntimeError(f"EventLogs ended {result.status.name}: {result.summary_text}")
    meta = lake_io.read_meta(root, "events", "date", REPORT_DAY.isoformat())
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "lines": meta["lines"],
        "rows": meta["rows"],
        "pinned": pin,
        "lake": "local" if s3 is None else "s3",
    }


def _cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def measure(
    prof: LogProfile,
    data_dir: Path,
    repeats: int,
    workers: list[int],
    pin: bool = False,
    s3: S3Target | None = None,
) -> dict[str, Any]:
    """Every configuration (lake x workers) `repeats` times, interleaved, each run in a fresh
    process."""
    from bench.logs_data import log_day_files

    folder = data_dir / prof.name / "logs-days"
    t0 = time.perf_counter()
    files = log_day_files(
        folder, REPORT_DAY, events=prof.events, users=prof.users, files=prof.files
    )
    generate_s = time.perf_counter() - t0
    logs_glob = str(folder / "{date}-*.jsonl.gz")
    configs = [(where, w) for where in ["local"] + (["s3"] if s3 else []) for w in workers]
    runs: dict[str, list[dict[str, Any]]] = {run_key(*c): [] for c in configs}
    for k in range(repeats):
        for where, w in configs:
            lake = data_dir / prof.name / "logs-scale-run"
            shutil.rmtree(lake, ignore_errors=True)
            lake.mkdir(parents=True)
            out = lake / "result.json"
            cmd = one_run_argv(lake, logs_glob, w, out, pin, s3 if where == "s3" else None)
            subprocess.run(cmd, cwd=REPO, check=True)
            key = run_key(where, w)
            runs[key].append(json.loads(out.read_text()))
            print(f"[logs_scale] {prof.name} run {k + 1} {key}: "
                  f"{runs[key][-1]['seconds']:.2f} s", file=sys.stderr, flush=True)  # fmt: skip
    shutil.rmtree(data_dir / prof.name / "logs-scale-run", ignore_errors=True)
    return {
        "profile": prof.name,
        "pinned": pin,
        "events": prof.events,
        "files": len(files),
        "gzip_bytes": sum(p.stat().st_size for p in files),
        "generate_s": round(generate_s, 1),
        "machine": {"cpus": os.cpu_count(), "loadavg_1m_at_end": os.getloadavg()[0]},
        "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "runs": runs,
    }


def run_key(where: str, workers: int) -> str:
    """A configuration's key in the result: '2' (local folder, as before s3 runs) or 's3:2'."""
    return str(workers) if where == "local" else f"{where}:{workers}"


def one_run_argv(
    lake: Path, logs_glob: str, workers: int, out: Path, pin: bool, s3: S3Target | None
) -> list[str]:
    """The command of one run in a fresh process (`run_once` there)."""
    cmd = [sys.executable, "-m", "bench.logs_scale", "--one", str(workers)]
    cmd += ["--lake", str(lake), "--glob", logs_glob, "--out", str(out)]
    cmd += ["--pin"] if pin else []
    if s3 is not None:
        cmd += ["--s3", s3.url, "--s3-endpoint", s3.endpoint, "--s3-region", s3.region]
    return cmd


def table(result: dict[str, Any]) -> str:
    """The Markdown table of one profile's result."""
    lines = [
        "| profile | events | files | lake | workers (shards) | median s | runs s | median CPU s "
        "| events/s | events/s per worker | time vs local, 1 worker |",
        "| --- | ---: | ---: | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    base = None

    def order(key: str) -> tuple[bool, int]:
        where, _, w = key.rpartition(":")
        return where != "", int(w)

    for key, runs in sorted(result["runs"].items(), key=lambda kv: order(kv[0])):
        where, _, w = key.rpartition(":")
        secs = [r["seconds"] for r in runs]
        med = statistics.median(secs)
        cpu = statistics.median(r["cpu_seconds"] for r in runs)
        base = base or med  # the first row: the local folder, 1 worker
        rate = runs[0]["lines"] / med
        lines.append(
            f"| {result['profile']} | {result['events']:,} | {result['files']} "
            f"| {where or 'local'} "
            f"| {w}{' (1 CPU each)' if result.get('pinned') else ''} "
            f"| {med:.1f} | {', '.join(f'{s:.1f}' for s in secs)} | {cpu:.1f} "
            f"| {rate / 1e6:.2f} M | {rate / int(w) / 1e6:.2f} M | {med / base:.2f}x |"
        )
    return "\n".join(lines)


def _result_name(pin: bool) -> str:
    return "logs-scale-pinned.json" if pin else "logs-scale.json"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=sorted(LOG_PROFILES), default="large")
    parser.add_argument("--data", type=Path, default=REPO / "var" / "bench")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--table", action="store_true", help="print the last result's table")
    parser.add_argument("--pin", action="store_true", help="one CPU per worker (shard k on CPU k)")
    parser.add_argument("--s3", help="also run with the lake in this s3://bucket/prefix")
    parser.add_argument("--s3-endpoint", default="", help="the S3 endpoint URL (empty: AWS)")
    parser.add_argument("--s3-region", default="us-east-1", help="the S3 region")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a child: one run
    parser.add_argument("--lake", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--glob", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    s3 = S3Target(args.s3, args.s3_endpoint, args.s3_region) if args.s3 else None
    if args.one:
        result = run_once(args.lake, args.glob, args.one, args.pin, s3)
        args.out.write_text(json.dumps(result))
        return
    prof = LOG_PROFILES[args.profile]
    if args.table:
        print(table(json.loads((args.data / prof.name / _result_name(args.pin)).read_text())))
        return
    workers = [int(w) for w in args.workers.split(",")]
    result = measure(prof, args.data, args.repeats, workers, args.pin, s3)
    out = args.data / prof.name / _result_name(args.pin)
    out.write_text(json.dumps(result, indent=1))
    print(table(result))


if __name__ == "__main__":
    main()
