"""Extract tasks: one task per source x period, each writing one lake partition."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import luigi
import pandas as pd
from luigi.contrib.spark import PySparkTask

from adperf import lake, platforms, warehouse
from adperf.errors import AdperfError, DataNotReady, QuotaExhausted
from adperf.schema import AD_SPEND, EVENTS, INSTALLS, PAYMENTS
from adperf.timeutil import month_days
from tasks import config
from tasks import resources as endpoints
from tasks.base import (
    PLATFORMS,
    LakeTask,
    _fx,
    _iso,
    _read_json,
    _write_json,
)
from tasks.targets import LakePartition

log = logging.getLogger(__name__)


class AdSpend(LakeTask):
    """One pull of a platform: ad-level delivery of the `lookback_days` days up to the report
    day, in each account's currency, kept whole under the day it was pulled.

    Platforms restate recent days, so every report day re-pulls the window in one request per
    account; SpendLatest picks each day's figure from the latest pull (later pull wins).
    """

    platform = luigi.ChoiceParameter(choices=PLATFORMS, description="ad platform")
    date = luigi.DateParameter(description="report day = pull day; the window ends on it")

    @property
    def priority(self) -> int:
        # The longest pulls (Facebook's 28-day windows) start first: adperf.platforms.
        return platforms.get(self.platform).priority

    @property
    def resources(self) -> dict[str, int]:
        # [resources] api_facebook / api_google_ads cap concurrent pulls per platform.
        return {f"api_{self.platform}": 1}

    def output(self) -> LakePartition:
        folder = f"ad_spend_pulls/platform={self.platform}"
        return LakePartition(config.data_root(), folder, "pulled", _iso(self.date))

    def complete(self) -> bool:
        # A pull cut into other days ([adperf] account_days changed since) is pulled again:
        # its `date`s mean other days. Pulls from before the setting were account days.
        out = self.output()
        return bool(out.exists()) and out.meta().get("account_days", "account") == _account_days()

    def run(self) -> None:
        from adperf.transform.restatement import window_first

        first = window_first(self.date, _lookback_days(self.platform))
        df = _fetch_ad_spend(self.platform, first, self.date)
        meta = {"platform": self.platform, "first_day": _iso(first), "last_day": _iso(self.date)}
        lake.write_partition(
            config.data_root(),
            AD_SPEND,
            "pulled",
            _iso(self.date),
            df,
            allow_empty=True,
            folder=f"ad_spend_pulls/platform={self.platform}",
            meta={**meta, "account_days": _account_days()},
        )


def _account_days() -> str:
    return str(config.adperf().account_days)


def _platforms() -> tuple[str, ...]:
    """The platforms to pull: in production those with accounts configured (a Facebook-only
    company lists no Google customers); with none, Facebook, whose pull then fails naming the
    missing key. The sandbox has every registered platform."""
    if config.adperf().sandbox:
        return PLATFORMS
    configured = [
        p.name for p in platforms.entries() if config.csv_list(_section(p, p.accounts_key))
    ]
    return tuple(configured) or (platforms.FACEBOOK,)


def _section(platform: platforms.Platform, key: str) -> Any:
    """A key of the platform's luigi.cfg section (its tasks.config class)."""
    return getattr(_section_config(platform), key)


def _section_config(platform: platforms.Platform) -> Any:
    """The platform's luigi.cfg section: the tasks.config class its entry names."""
    return getattr(config, platform.section)()


def _lookback_days(platform: str) -> int:
    return int(_section(platforms.get(platform), "lookback_days"))


def _fetch_ad_spend(platform: str, first: dt.date, last: dt.date) -> pd.DataFrame:
    """A platform's ad-level delivery of [first, last]: its registry entry's fetch, given the
    endpoint of tasks/resources.py's function of its name and its config section's settings."""
    entry = platforms.get(platform)
    endpoint = getattr(endpoints, entry.name)(last)
    frame: pd.DataFrame = entry.load_fetch()(
        **dataclasses.asdict(endpoint),
        **_section_config(entry).spend_settings(),
        first_day=first,
        day=last,
        report_timezone=config.adperf().report_timezone,
        account_days=_account_days(),
    )
    return frame


class MmpReady(luigi.ExternalTask):
    """The MMP has published one day's installs: false while it answers 'not ready yet'.

    Installs requires it once the MMP has said 'not ready' for the day (a marker in the lake,
    removed when the day is read). An incomplete external input is luigi's missing data: the
    run ends 20 ([retcode] missing_data) with a wait notice, no failure alert, and the MMP is
    asked again by the next run (or within the run: [worker] keep_alive, retry_external_tasks).
    """

    date = luigi.DateParameter(description="install day")
    source = "mmp"

    def marker(self) -> Path:
        return config.files_root() / "_not_ready" / self.source / f"{_iso(self.date)}.json"

    def complete(self) -> bool:
        marker = self.marker()
        if not marker.is_file() or _probe_key(self.date) in _probed_installs:
            return True
        if time.time() - marker.stat().st_mtime < config.mmp().recheck_s:
            return False
        retry_at = (_read_json(marker) or {}).get("retry_at")  # a used-up quota's reset
        if retry_at and dt.datetime.now(dt.UTC) < dt.datetime.fromisoformat(retry_at):
            return False
        return _probe_installs(self)

    def waiting(self, exc: DataNotReady) -> MmpReady:
        """Record a 'not ready' answer; the input Installs.run then yields."""
        _probed_installs.pop(_probe_key(self.date), None)
        entry = {"source": exc.source, "date": exc.day, "problem": exc.problem}
        if isinstance(exc, QuotaExhausted):
            entry["retry_at"] = exc.retry_at.isoformat()
        _write_json(self.marker(), entry)
        return self

    def waiting_for(self) -> str:
        """What the wait notice says."""
        problem = (_read_json(self.marker()) or {}).get("problem") or "not ready"
        return f"{self.source} has not published {_iso(self.date)} yet: {problem}"


# Installs of a day whose MmpReady probe found it ready, for Installs.run in this process (or a
# worker forked from it): the day is downloaded once, not once to probe and once to read.
_probed_installs: dict[tuple[str, dt.date], pd.DataFrame] = {}


def _probe_key(day: dt.date) -> tuple[str, dt.date]:
    return str(config.data_root()), day


def _probe_installs(ready: MmpReady) -> bool:
    """Ask the MMP for the day once, without retries. 'Not ready' renews the marker; any other
    error counts as ready here: Installs then runs, retries and fails with its named error."""
    expected = _expected_installs(ready.date)
    try:
        df = _fetch_installs(ready.date, ready.date, expected_min=expected, max_retries=0)
    except DataNotReady as exc:
        ready.waiting(exc)
        return False
    except AdperfError:
        return True
    _probed_installs[_probe_key(ready.date)] = df
    return True


class Installs(LakeTask):
    """Installs (attributed and organic) of one day from the MMP, ids pseudonymized."""

    date = luigi.DateParameter(description="install day")
    outputs = ("installs",)
    resources = {"api_mmp": 1}

    def requires(self) -> list[MmpReady]:
        # Only after a 'not ready' answer: ordinary days cost no probe. Then a static input
        # (luigi's summary follows only static requires: yielded alone it would be 'not run').
        ready = MmpReady(date=self.date)
        return [ready] if ready.marker().is_file() else []

    def run(self) -> Any:
        ready = MmpReady(date=self.date)
        df = _probed_installs.pop(_probe_key(self.date), None)
        try:
            if df is None:
                expected = _expected_installs(self.date)
                df = _fetch_installs(self.date, self.date, expected_min=expected)
        except DataNotReady as exc:
            yield ready.waiting(exc)  # missing data, not a failure: asked again later
            return
        _write_installs(df, "date", _iso(self.date))
        ready.marker().unlink(missing_ok=True)


class InstallsMonth(LakeTask):
    """Installs of one closed month (one pull): the long install history costs 12 tasks, not 365."""

    month = luigi.MonthParameter(description="closed month")
    outputs = ("installs_monthly",)
    resources = {"api_mmp": 1}

    def partition(self) -> tuple[str, str]:
        return "month", self.month.strftime("%Y-%m")

    def requires(self) -> list[MmpReady]:
        # As Installs: after a 'not ready' answer (a used-up daily quota, typically), the month
        # waits on its first day's probe.
        ready = MmpReady(date=month_days(self.month)[0])
        return [ready] if ready.marker().is_file() else []

    def run(self) -> Any:
        first, last = month_days(self.month)
        ready = MmpReady(date=first)
        try:
            df = _fetch_installs(first, last)
        except DataNotReady as exc:
            yield ready.waiting(exc)  # missing data, not a failure: asked again later
            return
        _write_installs(df, *self.partition(), folder="installs_monthly")
        ready.marker().unlink(missing_ok=True)


def _write_installs(df: pd.DataFrame, key: str, value: str, folder: str | None = None) -> None:
    """One installs partition (a day, or a closed month in `folder`), with its key version."""
    lake.write_partition(
        config.data_root(),
        INSTALLS,
        key,
        value,
        df,
        allow_empty=True,
        folder=folder,
        key_version=config.hmac_key_version(),
    )


def _expected_installs(day: dt.date) -> int:
    from adperf.sources.mmp import expected_min_installs

    return expected_min_installs(_previous_install_counts(day))


def _previous_install_counts(day: dt.date) -> list[int]:
    """Install counts of the 7 days before `day` from their partitions' metadata (those present)."""
    root, week = config.data_root(), [day - dt.timedelta(days=k) for k in range(7, 0, -1)]
    present = [_iso(d) for d in week if lake.partition_exists(root, "installs", "date", _iso(d))]
    return [int(lake.read_meta(root, "installs", "date", d)["rows"]) for d in present]


def _fetch_installs(
    first: dt.date, last: dt.date, expected_min: int = 0, max_retries: int = 5
) -> pd.DataFrame:
    from adperf.sources.mmp import fetch_installs

    res = endpoints.mmp(last)
    return fetch_installs(
        base_url=res.base_url,
        app_ids=res.app_ids,
        api_token=config.secrets().mmp_token,
        day=first,
        last_day=last,
        timezone=config.adperf().report_timezone,
        hmac_key=config.secrets().hmac_key,
        media_source_map=res.media_source_map,
        expected_min=expected_min,
        max_retries=max_retries,
        timeout=config.mmp().timeout_s,
    )


class Payments(LakeTask):
    """Payments of one report day from the product DB, refunds negative, in report currency."""

    date = luigi.DateParameter(description="report day")
    outputs = ("payments",)

    def run(self) -> None:
        df, counts = _fetch_payments(self.date, self.date)
        lake.write_partition(
            config.data_root(),
            PAYMENTS,
            "date",
            _iso(self.date),
            df,
            meta=counts,
            allow_empty=True,
            key_version=config.hmac_key_version(),
        )


class PaymentsMonth(LakeTask):
    """Payments of one closed month, for the LTV history (one task per month)."""

    month = luigi.MonthParameter(description="closed month")
    outputs = ("payments_monthly",)

    def partition(self) -> tuple[str, str]:
        return "month", self.month.strftime("%Y-%m")

    def run(self) -> None:
        df, counts = _fetch_payments(*month_days(self.month))
        lake.write_partition(
            config.data_root(),
            PAYMENTS,
            *self.partition(),
            df,
            meta=counts,
            allow_empty=True,
            folder="payments_monthly",
            key_version=config.hmac_key_version(),
        )


def _fetch_payments(first: dt.date, last: dt.date) -> tuple[pd.DataFrame, dict[str, Any]]:
    from adperf.sources.payments import fetch_payments

    engine = warehouse.make_engine(endpoints.payments_url(last))
    try:
        return fetch_payments(
            engine,
            first=first,
            last=last,
            timezone=config.adperf().report_timezone,
            hmac_key=config.secrets().hmac_key,
            fx=_fx(),
            table=config.payments().table,
            query=config.payments().query or None,
        )
    finally:
        engine.dispose()


class DayFiles(luigi.Target):
    """The files of one day matching a glob with {date}; exists once at least one is there."""

    def __init__(self, pattern: str, day: dt.date) -> None:
        self.pattern, self.day = pattern, day

    def exists(self) -> bool:
        from adperf.sources.logs import log_files

        return bool(log_files(self.pattern, self.day))


class LogFiles(luigi.ExternalTask):
    """The server-log files of one report day: the servers write them, adperf only reads.

    External, so a day whose logs are not rotated yet is 'missing data' ([retcode]
    missing_data), not a failure; with [worker] retry_external_tasks it is re-checked.
    """

    date = luigi.DateParameter(description="report day")

    def output(self) -> DayFiles:
        return DayFiles(endpoints.logs_path(self.date), self.date)


class EventLogsShard(LakeTask):
    """The events of one shard's share of a report day's log bytes (see `plan_pieces`), with
    that share's match edges and hashes, which let the merge combine the shards' files as
    they are (`adperf.sources.logs.merge_shard_partitions`)."""

    date = luigi.DateParameter(description="report day")
    shard = luigi.IntParameter(description="shard number, 0..shards-1")
    shards = luigi.IntParameter(description="number of shards ([logs] shards)")

    def requires(self) -> LogFiles:
        return LogFiles(date=self.date)

    def output(self) -> dict[str, LakePartition]:
        from adperf.sources.logs import SHARD_EDGES, SHARD_HASHES, shard_folder

        names = {"events": EVENTS.name, "edges": SHARD_EDGES, "hashes": SHARD_HASHES}
        return {
            k: LakePartition(
                config.data_root(),
                shard_folder(v, self.shard, self.shards),
                "date",
                _iso(self.date),
            )
            for k, v in names.items()
        }

    def complete(self) -> bool:
        # The three were written by one run (a run killed between them, then the logs
        # changed and a rerun killed again, would otherwise pair one run's events with
        # another's hashes).
        targets = list(self.output().values())
        if not all(t.exists() for t in targets):
            return False
        return len({t.meta().get("shard_run") for t in targets}) == 1

    def run(self) -> None:
        self.progress(0, f"reading the logs of {self.date}, shard {self.shard + 1}/{self.shards}")
        _write_events(self.date, self.shard, self.shards)


class EventLogs(LakeTask):
    """Server-log events of one report day, ids pseudonymized, and its match edges: read
    whole, or merged from `[logs] shards` EventLogsShard tasks (several workers share a day)."""

    date = luigi.DateParameter(description="report day")
    outputs = ("events", "match_edges")

    def requires(self) -> luigi.Task | list[luigi.Task]:
        n = config.logs().shards
        if config.logs().engine == "spark":
            return EventLogsSpark(date=self.date)
        if n <= 1:
            return LogFiles(date=self.date)
        return [EventLogsShard(date=self.date, shard=k, shards=n) for k in range(n)]

    def complete(self) -> bool:
        from adperf.sources.logs import derive_match_edges

        # A lake written before match_edges existed: derived from the day's events partition,
        # where a re-extract would need the day's logs (maybe long gone) (docs/lake.md).
        root, version = config.data_root(), config.hmac_key_version()
        return super().complete() or (
            derive_match_edges(root, self.date, version) and super().complete()
        )

    def run(self) -> None:
        from adperf.sources.logs import merge_shard_partitions

        if config.logs().engine == "spark":
            return  # EventLogsSpark wrote this task's partitions
        shards = config.logs().shards
        if shards <= 1:
            _write_events(self.date)
            return
        self.progress(50, f"merging {shards} shards of {self.date}")
        how = merge_shard_partitions(
            config.data_root(),
            self.date,
            shards,
            key_version=config.hmac_key_version(),
            max_bad_fraction=config.logs().max_bad_fraction,
        )
        log.info("events of %s: %d shards merged (%s)", self.date, shards, how)


class EventLogsSpark(PySparkTask):
    """EventLogs of one report day computed by Spark ([logs] engine = spark), for days too big
    for one machine: the same partitions as the DuckDB path (adperf.sources.logs_spark).

    luigi's [spark] section picks the cluster (master, spark-submit, py-packages = adperf for
    a real cluster). The HMAC key reaches the driver in its environment only, never in its
    arguments (the process list) or the pickled task.
    """

    date = luigi.DateParameter(description="report day")
    # luigi's PySparkTask writes the whole spark-submit output to the log only on failure.
    always_log_stderr = False

    def requires(self) -> LogFiles:
        return LogFiles(date=self.date)

    def output(self) -> dict[str, LakePartition]:
        root, iso = config.data_root(), _iso(self.date)
        return {n: LakePartition(root, n, "date", iso) for n in EventLogs.outputs}

    @property
    def spark_submit(self) -> str:
        # The pyspark wheel puts spark-submit beside this Python, which may not be on PATH.
        found = luigi.configuration.get_config().get("spark", "spark-submit", None)
        return str(found or Path(sys.executable).with_name("spark-submit"))

    def program_environment(self) -> dict[str, str]:
        env = dict(super().program_environment())
        env["ADPERF_HMAC_KEY"] = config.secrets().hmac_key.decode("utf-8")
        env.setdefault("PYSPARK_PYTHON", sys.executable)
        env.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
        return env

    def app_options(self) -> list[str]:
        return [
            _iso(self.date),
            endpoints.logs_path(self.date),
            config.adperf().report_timezone,
            str(config.data_root()),
            str(config.logs().max_bad_fraction),
            config.hmac_key_version(),
        ]

    def run(self) -> None:
        from luigi.contrib.external_program import ExternalProgramRunError

        from adperf.errors import SourceError
        from adperf.ops import scrub

        try:
            super().run()
        except ExternalProgramRunError as e:
            # Its message lists the child's whole environment (every secret in it): never
            # let it reach a log, luigid or Slack; keep the end of Spark's stderr, scrubbed.
            tail = scrub(str(e.err or "")[-1500:])
            raise SourceError(
                "logs", _iso(self.date), f"the Spark job failed: ...{tail}",
                "see the worker's log above the error; [spark] configures the cluster",
            ) from None  # fmt: skip

    def main(self, sc: Any, *args: str) -> None:
        """In the Spark driver (spark-submit's process): read, then write the partitions."""
        from pyspark.sql import SparkSession

        from adperf.sources.logs import MATCH_EDGES, MatchEdges
        from adperf.sources.logs_spark import fetch_events_spark

        iso, pattern, timezone, root, max_bad, key_version = args
        day = dt.date.fromisoformat(iso)
        table, counts = fetch_events_spark(
            SparkSession(sc),
            pattern,
            day=day,
            timezone=timezone,
            hmac_key=os.environ["ADPERF_HMAC_KEY"].encode("utf-8"),
            max_bad_fraction=float(max_bad),
        )
        edges = MatchEdges(day)
        edges.add(table)
        for name, data, meta in ((MATCH_EDGES, edges.table(), None), (EVENTS.name, table, counts)):
            lake.write_table(Path(root), name, "date", iso, data, meta=meta,
                             key_version=key_version)  # fmt: skip


def _write_events(day: dt.date, shard: int = 0, shards: int = 1) -> None:
    """Read the day's server logs (or one shard's share) and write them to the lake, batch
    by batch: pseudonyms are made while Parquet encodes (bench: logs.adperf)."""
    from adperf.sources.logs import DayEvents, write_day

    with DayEvents(
        endpoints.logs_path(day),
        day=day,
        timezone=config.adperf().report_timezone,
        hmac_key=config.secrets().hmac_key,
        max_bad_fraction=config.logs().max_bad_fraction,
        shard=shard,
        shards=shards,
    ) as events:
        write_day(config.data_root(), events, key_version=config.hmac_key_version())
