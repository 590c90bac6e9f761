"""One measurement in a fresh process: `python -m bench.stage NAME --profile P --data DIR --out F`.

The parent (`python -m bench`) starts one such process per run, so each run's peak RSS is its
own: imports, its inputs and the stage itself, nothing left over from an earlier stage. The
result (seconds of the timed block, rows, peak RSS, stage facts) is written as JSON to `--out`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import hashlib
import hmac
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench import data
from bench.profiles import PROFILES, REPORT_DAY, SEED, TIMEZONE, BenchProfile

HMAC_KEY = b"bench-key-not-a-secret"
TOL = 1e-10  # PageRank: L1 change between iterations (adperf's default)
MYSQL_URL = os.environ.get("ADPERF_BENCH_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306")


class PeakRss:
    """Peak memory of this process and its children (forked luigi workers add up).

    This process: its kernel high-water mark (VmHWM, reset at exec, unlike ru_maxrss which a
    child inherits from the process that forked it). With children: the sampled sum of their
    PSS, so pages a fork shares with its parent are counted once. The sandbox's fake APIs
    (their own process, `adperf.sandbox.loopback`) stand in for Facebook's, Google's and the
    MMP's servers: their memory is not adperf's and is kept apart, in `fakes_peak`.
    """

    FAKES = "adperf.sandbox.loopback"

    # Reading PSS walks a process's page tables (/proc/PID/smaps_rollup): at 0.1 s it took
    # ~10% of the machine during a cold run. A peak shorter than the interval can be missed.
    def __init__(self, interval: float = 0.5) -> None:
        import psutil

        self._proc = psutil.Process()
        self._interval = interval
        self.peak = 0
        self.fakes_peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        import psutil

        children = self._proc.children(recursive=True)
        if not children:
            self.peak = max(self.peak, self._proc.memory_info().rss)
            return
        total = fakes = 0
        for p in [self._proc, *children]:
            try:
                if self.FAKES in " ".join(p.cmdline()):
                    fakes += p.memory_info().rss  # not shared with ours: RSS, cheap to read
                else:
                    total += p.memory_full_info().pss
            except psutil.Error:
                continue
        self.peak = max(self.peak, total)
        self.fakes_peak = max(self.fakes_peak, fakes)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        self.peak = max(self.peak, _vm_hwm())


def _vm_hwm() -> int:
    """This process's peak RSS in bytes (Linux /proc/self/status VmHWM; 0 elsewhere)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@dataclass
class Ctx:
    """What a stage gets: the profile, its data folder, a scratch folder and the timer."""

    prof: BenchProfile
    data_dir: Path
    scratch: Path
    seconds: float = float("nan")
    cpu_seconds: float = float("nan")
    info: dict[str, Any] = field(default_factory=dict)

    @contextmanager
    def timed(self) -> Iterator[None]:
        """Time the block: the one measured part of the stage (wall and CPU seconds).

        CPU seconds are this process's threads plus the children it waited for (luigi's forked
        workers): on a shared machine they move less with the load than wall seconds do.
        """
        c0, t0 = _cpu(), time.perf_counter()
        yield
        self.seconds = time.perf_counter() - t0
        self.cpu_seconds = _cpu() - c0


def _cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


STAGES: dict[str, Callable[[Ctx], int]] = {}


def stage(name: str) -> Callable[[Callable[[Ctx], int]], Callable[[Ctx], int]]:
    """Register a stage function; it returns the number of rows it processed."""

    def register(fn: Callable[[Ctx], int]) -> Callable[[Ctx], int]:
        STAGES[name] = fn
        return fn

    return register


# --------------------------------------------------------------------------- logs extract


def _in_day_bounds() -> tuple[dt.datetime, dt.datetime]:
    from adperf.timeutil import day_bounds_utc

    start, end = day_bounds_utc(REPORT_DAY, REPORT_DAY, TIMEZONE)
    return start.replace(tzinfo=dt.UTC), end.replace(tzinfo=dt.UTC)


@stage("logs.adperf")
def logs_adperf(ctx: Ctx) -> int:
    """adperf.sources.logs.DayEvents + lake.write_batches of the EVENTS partition.

    The same calls as the pipeline's EventLogs task (tasks/extract.py `_write_events`):
    Arrow batches in, Parquet out, no pandas.
    """
    from adperf import lake
    from adperf.schema import EVENTS
    from adperf.sources.logs import DayEvents

    path = data.log_day(ctx.data_dir, ctx.prof)
    pattern = str(path.parent / "{date}.jsonl.gz")
    with ctx.timed():
        with DayEvents(pattern, day=REPORT_DAY, timezone=TIMEZONE, hmac_key=HMAC_KEY) as events:
            written = lake.write_batches(
                ctx.scratch / "lake",
                EVENTS.name,
                "date",
                REPORT_DAY.isoformat(),
                EVENTS.schema,
                events.batches(),
                meta=events.counts,
            )
    counts = events.counts
    kept = json.loads((written / lake.META_FILE).read_text())["rows"]
    ctx.info.update(kept=kept, counts={k: int(v) for k, v in counts.items()})
    return int(counts["lines"])


@stage("logs.duckdb")
def logs_duckdb(ctx: Ctx) -> int:
    """The limit: DuckDB's bare read_json of the same file, explicit columns, to Arrow."""
    import duckdb

    path = data.log_day(ctx.data_dir, ctx.prof)
    columns = (
        "{'ts': 'TIMESTAMPTZ', 'event': 'VARCHAR', 'user_id': 'VARCHAR', "
        "'peer_id': 'VARCHAR', 'props': 'STRUCT(premium BOOLEAN)'}"
    )
    con = duckdb.connect()
    with ctx.timed():
        table = con.sql(
            f"SELECT * FROM read_json('{path}', format='newline_delimited', "
            f"columns={columns}, ignore_errors=true, compression='gzip')"
        ).to_arrow_table()
    ctx.info.update(kept=table.num_rows)
    return _line_count(path)


@stage("logs.naive")
def logs_naive(ctx: Ctx) -> int:
    """The naive way to the same output: stdlib json per line, HMAC per row, pandas, Parquet.

    It keeps what adperf keeps (well-formed lines of the report day whose event is one adperf
    uses) and pseudonymizes user and peer of each kept row with its own `hmac.new`.
    """
    import pandas as pd

    from adperf.sources.logs import KEPT_EVENTS

    path = data.log_day(ctx.data_dir, ctx.prof)
    start, end = _in_day_bounds()

    def pid(raw: str) -> str:
        return hmac.new(HMAC_KEY, raw.encode(), hashlib.sha256).hexdigest()[:32]

    lines = bad = 0
    rows: list[tuple[Any, ...]] = []
    with ctx.timed():
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            for line in fh:
                lines += 1
                try:
                    rec = json.loads(line)
                    ts = dt.datetime.fromisoformat(rec["ts"])
                    user = rec["user_id"]
                    event = rec["event"]
                except (ValueError, KeyError, TypeError):
                    bad += 1
                    continue
                if not (start <= ts < end) or event not in KEPT_EVENTS:
                    continue
                peer = rec.get("peer_id")
                premium = (rec.get("props") or {}).get("premium")
                rows.append((ts, event, pid(user), pid(peer) if peer else None, premium))
        df = pd.DataFrame(rows, columns=["ts", "event", "user_pid", "peer_pid", "premium"])
        df.insert(0, "date", REPORT_DAY.isoformat())
        out = ctx.scratch / "naive"
        out.mkdir(parents=True, exist_ok=True)
        df.to_parquet(out / "part-0.parquet", index=False)
    ctx.info.update(kept=len(df), bad=bad)
    return lines


def _line_count(path: Path) -> int:
    with gzip.open(path, "rb") as fh:
        return sum(1 for _ in fh)


# --------------------------------------------------------------------------- LTV


def _ltv_frames(ctx: Ctx) -> tuple[Any, Any]:
    import pandas as pd

    pay, inst = data.ltv_inputs(ctx.data_dir, ctx.prof)
    return pd.read_parquet(pay), pd.read_parquet(inst)


def _ltv_params(row: dict[str, Any]) -> dict[str, Any]:
    params: dict[str, Any] = json.loads(row["params"])
    return {"bgnbd": params.get("bgnbd"), "gammagamma": params.get("gammagamma")}


# What the ltv.adperf stages time (ADPERF_BENCH_LTV): 'core' = RFM summary + fits + cohort
# predictions, no backtest, no bootstrap (like for like with ltv.lifetimes, issue 3's baseline);
# 'full' (default) = build_ltv as the Ltv task runs it, with the 90-day backtest (its D-90 model
# taken from the lake as the task does, or fitted when ADPERF_BENCH_LTV_BACKTEST_MODEL=fit) and
# the bootstrap interval.
LTV_SCOPES = ("full", "core")


def _ltv_model_cache(ctx: Ctx, day: dt.date) -> Any:
    """The model fitted as of `day` on the profile's payments (cached beside the inputs): what the
    lake holds for an earlier report day."""
    from adperf.transform.ltv import LtvModel, build_rfm, fit_ltv

    cache = ctx.data_dir / f"ltv_model_{day.isoformat()}.json"
    if not cache.exists():
        payments, _ = _ltv_frames(ctx)
        model = fit_ltv(build_rfm(payments[payments["date"] <= day.isoformat()], day.isoformat()))
        cache.write_text(model.to_json())
    return LtvModel.from_json(cache.read_text())


def _ltv_run(ctx: Ctx, *, warm: bool) -> int:
    from adperf.transform.ltv import BACKTEST_DAYS, build_ltv

    scope = os.environ.get("ADPERF_BENCH_LTV", "full")
    if scope not in LTV_SCOPES:
        raise SystemExit(f"ADPERF_BENCH_LTV={scope!r}: use one of {LTV_SCOPES}")
    kwargs: dict[str, Any] = {}
    if warm:
        kwargs["initial"] = _ltv_model_cache(ctx, REPORT_DAY - dt.timedelta(days=1))
    backtest_source = "none"
    if scope == "core":
        kwargs.update(backtest_days=0, replicates=0)
    elif warm and os.environ.get("ADPERF_BENCH_LTV_BACKTEST_MODEL", "stored") == "stored":
        # Warm = a daily run: D-1 (warm start) and D-90 (backtest) models are in the lake.
        kwargs["backtest_model"] = _ltv_model_cache(
            ctx, REPORT_DAY - dt.timedelta(days=BACKTEST_DAYS)
        )
    payments, installs = _ltv_frames(ctx)
    cpu0 = time.process_time()
    with ctx.timed():
        row, pltv = build_ltv(REPORT_DAY.isoformat(), payments, installs, **kwargs)
    params = json.loads(row["params"])
    if scope == "full":
        backtest_source = params.get("backtest_model", "none")
    ctx.info.update(
        scope=scope,
        warm=warm,
        cpu_seconds=round(time.process_time() - cpu0, 3),
        backtest_model=backtest_source,
        backtest_mape=row["backtest_mape"],
        customers=int(row["n_customers"]),
        converged=bool(row["converged"]),
        params=_ltv_params(row),
        pltv_rows=len(pltv),
    )
    return len(payments)


@stage("ltv.adperf")
def ltv_adperf(ctx: Ctx) -> int:
    """adperf.transform.ltv.build_ltv, cold start (no earlier model); scope: ADPERF_BENCH_LTV."""
    return _ltv_run(ctx, warm=False)


@stage("ltv.adperf_warm")
def ltv_adperf_warm(ctx: Ctx) -> int:
    """build_ltv warm-started from the previous day's model, the backtest's D-90 model stored
    (what the daily pipeline passes); scope: ADPERF_BENCH_LTV."""
    return _ltv_run(ctx, warm=True)


@stage("ltv.lifetimes")
def ltv_lifetimes(ctx: Ctx) -> int:
    """lifetimes' own summary_data_from_transaction_data + fits on raw per-customer rows."""
    import contextlib
    import io
    import warnings

    import pandas as pd
    from lifetimes import BetaGeoFitter, GammaGammaFitter
    from lifetimes.utils import summary_data_from_transaction_data

    payments, _ = _ltv_frames(ctx)
    tx = pd.DataFrame(
        {
            "user_pid": payments["user_pid"],
            "date": pd.to_datetime(payments["date"]),
            "amount": payments["amount_micros"] / 1e6,
        }
    )
    cpu0 = time.process_time()
    with (
        ctx.timed(),
        contextlib.redirect_stdout(io.StringIO()),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")
        rfm = summary_data_from_transaction_data(
            tx,
            "user_pid",
            "date",
            monetary_value_col="amount",
            observation_period_end=pd.Timestamp(REPORT_DAY),
            freq="D",
        )
        bgf = BetaGeoFitter(penalizer_coef=0.0).fit(rfm["frequency"], rfm["recency"], rfm["T"])
        repeat = rfm[(rfm["frequency"] > 0) & (rfm["monetary_value"] > 0)]
        ggf = GammaGammaFitter(penalizer_coef=0.0).fit(
            repeat["frequency"], repeat["monetary_value"]
        )
        purchases = bgf.conditional_expected_number_of_purchases_up_to_time(
            365, rfm["frequency"], rfm["recency"], rfm["T"]
        )
        value = purchases * ggf.conditional_expected_average_profit(
            rfm["frequency"], rfm["monetary_value"]
        )
    ctx.info.update(
        customers=len(rfm),
        params={
            "bgnbd": {k: float(bgf.params_[k]) for k in ("a", "alpha", "b", "r")},
            "gammagamma": {k: float(ggf.params_[k]) for k in ("p", "q", "v")},
        },
        total_value=float(value.sum()),
        cpu_seconds=round(time.process_time() - cpu0, 3),
    )
    return len(payments)


# --------------------------------------------------------------------------- PageRank


def _graph(ctx: Ctx) -> dict[str, np.ndarray]:
    with np.load(data.graph(ctx.data_dir, ctx.prof)) as z:
        return {k: z[k] for k in z.files}


@stage("pagerank.adperf")
def pagerank_adperf(ctx: Ctx) -> int:
    """adperf.transform.contribution.pagerank, CSR graph build included, both directions."""
    from adperf.transform.contribution import pagerank

    g = _graph(ctx)
    n = int(g["n"][0])
    with ctx.timed():
        scores = pagerank(
            np.concatenate([g["src"], g["dst"]]),
            np.concatenate([g["dst"], g["src"]]),
            n,
            personalization=g["revenue"],
            tol=TOL,
            weights=np.concatenate([g["weight"], g["weight"]]),
        )
    np.save(ctx.scratch / "pagerank.adperf.npy", scores)
    ctx.info.update(nodes=n, edges=len(g["src"]))
    return len(g["src"])


@stage("pagerank.networkx")
def pagerank_networkx(ctx: Ctx) -> int:
    """networkx.pagerank on the same undirected weighted graph, graph build included."""
    import networkx as nx

    g = _graph(ctx)
    n = int(g["n"][0])
    seeds = {int(i): float(g["revenue"][i]) for i in np.flatnonzero(g["revenue"])}
    with ctx.timed():
        graph = nx.Graph()
        graph.add_nodes_from(range(n))
        graph.add_weighted_edges_from(
            zip(g["src"].tolist(), g["dst"].tolist(), g["weight"].tolist(), strict=True)
        )
        # networkx stops when the L1 change < n * tol: divide by n for the same criterion.
        ranks = nx.pagerank(graph, alpha=0.85, personalization=seeds, tol=TOL / n, max_iter=10_000)
    scores = np.zeros(n)
    scores[np.fromiter(ranks.keys(), dtype=np.int64)] = np.fromiter(ranks.values(), dtype=float)
    np.save(ctx.scratch / "pagerank.networkx.npy", scores)
    ctx.info.update(nodes=n, edges=len(g["src"]))
    return len(g["src"])


# --------------------------------------------------------------------------- warehouse


def _engine(ctx: Ctx, backend: str) -> Any:
    import sqlalchemy as sa

    if backend == "sqlite":
        db = ctx.scratch / "warehouse.db"
        db.unlink(missing_ok=True)
        return sa.create_engine(f"sqlite:///{db}")
    name = f"adperf_bench_{os.getpid()}"
    admin = sa.create_engine(MYSQL_URL + "/")
    with admin.begin() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
        conn.execute(sa.text(f"CREATE DATABASE {name} CHARACTER SET utf8mb4"))
    admin.dispose()
    ctx.info["mysql_db"] = name
    return sa.create_engine(f"{MYSQL_URL}/{name}?charset=utf8mb4")


def _drop_mysql(ctx: Ctx) -> None:
    import sqlalchemy as sa

    if "mysql_db" not in ctx.info:
        return
    admin = sa.create_engine(MYSQL_URL + "/")
    with admin.begin() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {ctx.info.pop('mysql_db')}"))
    admin.dispose()


def _load_adperf(ctx: Ctx, backend: str) -> int:
    from adperf.warehouse import load_day

    frames = data.warehouse_frames(ctx.prof)
    engine = _engine(ctx, backend)
    try:
        with ctx.timed():
            counts = load_day(engine, REPORT_DAY.isoformat(), frames)
    finally:
        engine.dispose()
        _drop_mysql(ctx)
    return sum(counts.values())


def _load_to_sql(ctx: Ctx, backend: str) -> int:
    frames = data.warehouse_frames(ctx.prof)
    engine = _engine(ctx, backend)
    try:
        with ctx.timed():
            for name, df in frames.items():
                df.to_sql(name, engine, if_exists="append")  # pandas' defaults otherwise
    finally:
        engine.dispose()
        _drop_mysql(ctx)
    return sum(len(df) for df in frames.values())


@stage("warehouse.adperf_sqlite")
def warehouse_adperf_sqlite(ctx: Ctx) -> int:
    """adperf.warehouse.load_day of one report day into a fresh SQLite warehouse."""
    return _load_adperf(ctx, "sqlite")


@stage("warehouse.to_sql_sqlite")
def warehouse_to_sql_sqlite(ctx: Ctx) -> int:
    """pandas.DataFrame.to_sql with its defaults, same frames, fresh SQLite file."""
    return _load_to_sql(ctx, "sqlite")


@stage("warehouse.adperf_mariadb")
def warehouse_adperf_mariadb(ctx: Ctx) -> int:
    """load_day into a fresh MariaDB database on 127.0.0.1."""
    return _load_adperf(ctx, "mysql")


@stage("warehouse.to_sql_mariadb")
def warehouse_to_sql_mariadb(ctx: Ctx) -> int:
    """pandas.DataFrame.to_sql defaults into a fresh MariaDB database on 127.0.0.1."""
    return _load_to_sql(ctx, "mysql")


# --------------------------------------------------------------------------- pipeline


def _configure(ctx: Ctx, root: Path) -> None:
    """Point luigi's adperf sections at `root` and the profile's cached world."""
    import luigi
    from luigi.task_register import Register

    cfg = luigi.configuration.get_config()
    values = {
        "adperf": {
            "sandbox": "true",
            "data_root": str(root / "lake"),
            "warehouse_url": f"sqlite:///{root / 'warehouse.db'}",
            "report_timezone": TIMEZONE,
            "report_currency": "USD",
        },
        "sandbox": {
            "root": str(ctx.data_dir / data.WORLD),
            "profile": ctx.prof.world,
            "seed": str(SEED),
        },
        "slack": {"outbox": str(root / "outbox"), "channel": "#marketing-daily"},
    }
    for section, opts in values.items():
        for key, value in opts.items():
            cfg.set(section, key, value)
    Register.clear_instance_cache()


def _lake_state(root: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime for p in sorted((root / "lake").rglob("*.parquet"))}


def _build(tasks: list[Any], workers: int) -> str:
    import luigi

    result = luigi.build(
        tasks, local_scheduler=True, workers=workers, detailed_summary=True, log_level="WARNING"
    )
    return str(result.status.name)


@stage("pipeline.cold")
def pipeline_cold(ctx: Ctx) -> int:
    """DailyReport cold, end to end, on the world profile (fresh lake and warehouse)."""
    from tasks.load import DailyReport
    from tasks.resources import resources

    root = ctx.data_dir / "pipeline"
    data.reset(root)
    root.mkdir(parents=True)
    _configure(ctx, root)
    workers = int(os.environ.get("BENCH_WORKERS", "2"))
    # The fakes (the vendors' servers of the sandbox, in their own process) start before the
    # clock: loading a year of the world's delivery is not part of adperf's run.
    t0 = time.perf_counter()
    resources(REPORT_DAY)
    fakes_start_s = time.perf_counter() - t0
    with ctx.timed():
        status = _build([DailyReport(date=REPORT_DAY)], workers)
    ctx.info.update(
        status=status,
        workers=workers,
        partitions=len(_lake_state(root)),
        fakes_start_s=round(fakes_start_s, 1),
    )
    if status != "SUCCESS":
        raise RuntimeError(f"DailyReport cold run ended {status}")
    return len(_lake_state(root))


@stage("pipeline.rerun")
def pipeline_rerun(ctx: Ctx) -> int:
    """luigi.build of DailyReport on the completed day: completeness checks only."""
    from tasks.load import DailyReport

    root = ctx.data_dir / "pipeline"
    _configure(ctx, root)
    before = _lake_state(root)
    if not before:
        raise RuntimeError("pipeline.rerun needs a completed pipeline.cold run first")
    with ctx.timed():
        status = _build([DailyReport(date=REPORT_DAY)], 1)
    ctx.info.update(status=status, ran_nothing=_lake_state(root) == before)
    return 1


BACKFILL_DAYS = 365


@stage("pipeline.backfill")
def pipeline_backfill(ctx: Ctx) -> int:
    """luigi's RangeDaily --of DailyReport over 365 days: its completeness pass, run nothing.

    Times RangeDaily.complete(), the check luigi's worker makes before scheduling anything: it
    finds the missing days (bulk_complete, or luigi's file-system inference). Only the report
    day is complete here, so the other 364 come back missing; nothing is run.
    """
    from luigi.tools.range import RangeDaily

    from tasks.load import DailyReport

    root = ctx.data_dir / "pipeline"
    if not _lake_state(root):
        raise RuntimeError("pipeline.backfill needs a completed pipeline.cold run first")
    _configure(ctx, root)
    first = REPORT_DAY - dt.timedelta(days=BACKFILL_DAYS - 1)
    now = dt.datetime.combine(REPORT_DAY + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    task = RangeDaily(
        of=DailyReport,
        start=first,
        stop=REPORT_DAY + dt.timedelta(days=1),
        days_back=BACKFILL_DAYS + 1,
        task_limit=BACKFILL_DAYS,
        now=int(now.timestamp()),
    )
    with ctx.timed():
        missing = len(task.requires())
    ctx.info.update(days=BACKFILL_DAYS, missing=missing)
    return BACKFILL_DAYS


@stage("pipeline.check365")
def pipeline_check365(ctx: Ctx) -> int:
    """365 x DailyReport(day).complete() on the complete report day: a 365-day backfill's checks.

    Each check is the one luigi makes for a complete day (the wrapper's requirements' complete());
    the other days of a real year cost the same, so 365 checks of one day stand for them.
    """
    from luigi.task_register import Register

    from tasks.load import DailyReport

    root = ctx.data_dir / "pipeline"
    if not _lake_state(root):
        raise RuntimeError("pipeline.check365 needs a completed pipeline.cold run first")
    _configure(ctx, root)
    complete = 0
    with ctx.timed():
        for _ in range(BACKFILL_DAYS):
            Register.clear_instance_cache()  # a fresh task tree each time, as for another day
            complete += DailyReport(date=REPORT_DAY).complete()
    ctx.info.update(complete=complete)
    if complete != BACKFILL_DAYS:
        raise RuntimeError(f"the report day looked complete {complete} of {BACKFILL_DAYS} times")
    return BACKFILL_DAYS


# --------------------------------------------------------------------------- entry point


def run(name: str, prof: BenchProfile, data_dir: Path, out: Path) -> dict[str, Any]:
    """Run one stage in this process and write its result JSON to `out`."""
    scratch = data_dir / "scratch" / name
    data.reset(scratch)
    scratch.mkdir(parents=True)
    ctx = Ctx(prof, data_dir, scratch)
    with PeakRss() as rss:
        rows = STAGES[name](ctx)
    result = {
        "stage": name,
        "profile": prof.name,
        "seconds": ctx.seconds,
        "cpu_seconds": ctx.cpu_seconds,
        "rows": rows,
        "peak_rss_bytes": rss.peak,
        "fakes_peak_rss_bytes": rss.fakes_peak,
        "info": ctx.info,
    }
    out.write_text(json.dumps(result, sort_keys=True, default=str))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stage", description=__doc__)
    parser.add_argument("name", choices=sorted(STAGES))
    parser.add_argument("--profile", choices=sorted(PROFILES), required=True)
    parser.add_argument("--data", type=Path, required=True, help="the profile's cache folder")
    parser.add_argument("--out", type=Path, required=True, help="result JSON file")
    args = parser.parse_args(argv)
    run(args.name, PROFILES[args.profile], args.data, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
