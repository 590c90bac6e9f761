"""The Luigi graph of DESIGN.md: extract (one task per source x period), transform, load.

Tasks are thin: parameters, requires(), output(), and a run() that reads, calls one adperf
function, writes. A task instance is a partition: its output path follows from its parameters.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import luigi
import pandas as pd
import sqlalchemy as sa
from luigi.contrib.spark import PySparkTask

from adperf import lake, platforms, warehouse
from adperf.errors import AdperfError, ConfigError, DataNotReady, QuotaExhausted
from adperf.files import report_folder, slack_marker
from adperf.fx import FxTable, load_rates
from adperf.schema import AD_SPEND, EVENTS, INSTALLS, PAYMENTS, SPEND, to_table
from adperf.timeutil import days, month_days
from tasks import config, ops  # noqa: F401 - ops registers the monitoring and alert handlers
from tasks import resources as endpoints
from tasks.targets import LakePartition, SharedFile, SharedFolder, WarehouseDay

COHORT_WINDOW_DAYS = 30  # the oldest cohort age reported (D30)
PLATFORMS = platforms.NAMES


def _iso(day: dt.date) -> str:
    return day.isoformat()


def _fx() -> FxTable:
    return load_rates(Path(endpoints.fx_rates_path()), config.adperf().report_currency)


def _window(day: dt.date, n_days: int) -> list[dt.date]:
    return days(day - dt.timedelta(days=n_days - 1), day)


def _history(day: dt.date, history_days: int) -> tuple[list[dt.date], list[dt.date]]:
    """Closed months (first days) and the current month's days covering the history window."""
    first = day - dt.timedelta(days=history_days - 1)
    month_start = day.replace(day=1)
    months: list[dt.date] = []
    m = first.replace(day=1)
    while m < month_start:
        months.append(m)
        m = month_days(m)[1] + dt.timedelta(days=1)
    return months, days(max(month_start, first), day)


def _read_all(targets: list[LakePartition]) -> pd.DataFrame:
    frames = [t.read() for t in targets]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


class LakeTask(luigi.Task):
    """A task whose output is one lake partition per name in `outputs`."""

    outputs: tuple[str, ...] = ()

    def partition(self) -> tuple[str, str]:
        return "date", _iso(self.date)

    def output(self) -> Any:
        key, value = self.partition()
        root = config.data_root()
        targets = {name: LakePartition(root, name, key, value) for name in self.outputs}
        return targets if len(targets) > 1 else next(iter(targets.values()))

    def progress(self, percent: int, message: str) -> None:
        """Show progress in luigid's UI (a no-op outside a worker)."""
        _progress(self, percent, message)


def _progress(task: luigi.Task, percent: int, message: str) -> None:
    # The worker sets these callbacks only while the task runs (luigi/worker.py TaskProcess).
    if task.set_progress_percentage is not None:
        task.set_progress_percentage(percent)
    if task.set_status_message is not None:
        task.set_status_message(message)


# ---------------------------------------------------------------- extract


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
    return getattr(getattr(config, platform.section)(), key)


def _lookback_days(platform: str) -> int:
    return int(_section(platforms.get(platform), "lookback_days"))


def _fetch_ad_spend(platform: str, first: dt.date, last: dt.date) -> pd.DataFrame:
    tz = config.adperf().report_timezone
    more = _MORE_FETCHES.get(platform)
    if more is not None:
        return more(first, last)
    if platform == platforms.GOOGLE_ADS:
        from adperf.sources.google_ads import fetch_google_ads_spend

        gads = endpoints.google_ads(last)
        return fetch_google_ads_spend(
            endpoint=gads.endpoint,
            credentials=config.google_ads_credentials(),
            customer_ids=gads.customer_ids,
            login_customer_id=gads.login_customer_id,
            first_day=first,
            day=last,
            report_timezone=tz,
            account_days=_account_days(),
            insecure=gads.insecure,
            timeout=config.google_ads().timeout_s,
        )
    from adperf.sources.facebook import fetch_facebook_spend

    fb = endpoints.facebook(last)
    return fetch_facebook_spend(
        graph_url=fb.graph_url,
        api_version=config.facebook().api_version,
        access_token=config.secrets().facebook_token,
        account_ids=fb.account_ids,
        first_day=first,
        day=last,
        report_timezone=tz,
        account_days=_account_days(),
        use_async=config.facebook().use_async,
    )


def _fetch_tiktok(first: dt.date, last: dt.date) -> pd.DataFrame:
    from adperf.sources.tiktok import fetch_tiktok_spend

    endpoint = endpoints.tiktok(last)
    return fetch_tiktok_spend(
        base_url=endpoint.base_url,
        access_token=config.tiktok_token(),
        advertiser_ids=endpoint.advertiser_ids,
        first_day=first,
        day=last,
        report_timezone=config.adperf().report_timezone,
        account_days=_account_days(),
        timeout=config.tiktok().timeout_s,
    )


def _fetch_apple_ads(first: dt.date, last: dt.date) -> pd.DataFrame:
    from adperf.sources.apple_ads import fetch_apple_ads_spend

    endpoint = endpoints.apple_ads(last)
    return fetch_apple_ads_spend(
        api_url=endpoint.api_url,
        token_url=endpoint.token_url,
        credentials=config.apple_ads_credentials(),
        org_ids=endpoint.org_ids,
        first_day=first,
        day=last,
        report_timezone=config.adperf().report_timezone,
        account_days=_account_days(),
        timeout=config.apple_ads().timeout_s,
    )


_MORE_FETCHES = {platforms.TIKTOK: _fetch_tiktok, platforms.APPLE_ADS: _fetch_apple_ads}


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
        lake.write_partition(
            config.data_root(),
            INSTALLS,
            "date",
            _iso(self.date),
            df,
            allow_empty=True,
            key_version=config.hmac_key_version(),
        )
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
        lake.write_partition(
            config.data_root(),
            INSTALLS,
            *self.partition(),
            df,
            allow_empty=True,
            folder="installs_monthly",
            key_version=config.hmac_key_version(),
        )
        ready.marker().unlink(missing_ok=True)


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
    """The events of one shard's share of a report day's log bytes (see `plan_pieces`)."""

    date = luigi.DateParameter(description="report day")
    shard = luigi.IntParameter(description="shard number, 0..shards-1")
    shards = luigi.IntParameter(description="number of shards ([logs] shards)")

    def requires(self) -> LogFiles:
        return LogFiles(date=self.date)

    def output(self) -> LakePartition:
        return LakePartition(config.data_root(), self._folder(), "date", _iso(self.date))

    def _folder(self) -> str:
        return f"events_shards/shards={self.shards}/shard={self.shard}"

    def run(self) -> None:
        self.progress(0, f"reading the logs of {self.date}, shard {self.shard + 1}/{self.shards}")
        _write_events(self._folder(), self.date, self.shard, self.shards)


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
        from adperf.sources.logs import MATCH_EDGES, MatchEdges, merge_shards

        if config.logs().engine == "spark":
            return  # EventLogsSpark wrote this task's partitions
        if config.logs().shards <= 1:
            _write_events(EVENTS.name, self.date)
            return
        parts = self.input()
        self.progress(50, f"merging {len(parts)} shards of {self.date}")
        table, counts = merge_shards(
            [_read_arrow(p) for p in parts],
            [p.meta() for p in parts],
            day=self.date,
            max_bad_fraction=config.logs().max_bad_fraction,
        )
        edges = MatchEdges(self.date)
        edges.add(table)
        for name, data, meta in ((MATCH_EDGES, edges.table(), None), (EVENTS.name, table, counts)):
            lake.write_table(
                config.data_root(), name, "date", _iso(self.date), data, meta=meta,
                key_version=config.hmac_key_version(),
            )  # fmt: skip


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


def _read_arrow(target: LakePartition) -> Any:
    """One lake partition as an Arrow table (no pandas on the way), of the current key version."""
    # Through the lake, not the partition's path: on an s3:// root there is no local file.
    return lake.read_arrow(
        target.root, target.folder, target.key, target.value, key_version=config.hmac_key_version()
    )


def _write_events(folder: str, day: dt.date, shard: int = 0, shards: int = 1) -> None:
    """Read the day's server logs and write its EVENTS partition (of one shard) to `folder`,
    batch by batch: pseudonyms are made while Parquet encodes (bench: logs.adperf); the whole
    day's match edges too."""
    from adperf.sources.logs import MATCH_EDGES, DayEvents

    with DayEvents(
        endpoints.logs_path(day),
        day=day,
        timezone=config.adperf().report_timezone,
        hmac_key=config.secrets().hmac_key,
        max_bad_fraction=config.logs().max_bad_fraction,
        shard=shard,
        shards=shards,
    ) as events:
        lake.write_batches(
            config.data_root(),
            folder,
            "date",
            _iso(day),
            EVENTS.schema,
            events.batches(),
            meta=events.counts,
            key_version=config.hmac_key_version(),
        )
        if shards == 1:
            lake.write_table(
                config.data_root(), MATCH_EDGES, "date", _iso(day), events.edges.table(),
                key_version=config.hmac_key_version(),
            )  # fmt: skip


# ---------------------------------------------------------------- transform


class Spend(LakeTask):
    """All platforms' ad-level spend of one day in the report currency, from that day's pulls."""

    date = luigi.DateParameter(description="report day")
    outputs = ("spend",)

    def requires(self) -> list[AdSpend]:
        return [AdSpend(platform=p, date=self.date) for p in _platforms()]

    def run(self) -> None:
        from adperf.transform.spend import build_spend

        day = _iso(self.date)
        frames = [t.read() for t in self.input()]
        df = build_spend([f[f["date"] == day] for f in frames], _fx())
        lake.write_partition(config.data_root(), SPEND, "date", day, df, allow_empty=True)


class SpendLatest(LakeTask):
    """Ad-level spend of the cohort window (31 days up to the report day), each day's figure
    from the latest pull made by the report day (later pull wins)."""

    date = luigi.DateParameter(description="report day")
    outputs = ("spend_latest",)

    def requires(self) -> list[AdSpend]:
        from adperf.transform.restatement import pull_days_for

        return [
            AdSpend(platform=p, date=d)
            for p in _platforms()
            for d in pull_days_for(self.date, COHORT_WINDOW_DAYS + 1, _lookback_days(p))
        ]

    def run(self) -> None:
        from adperf.transform.restatement import build_latest, convert_pulls

        day, pulls = _iso(self.date), _pulls(self.input())
        first = _iso(self.date - dt.timedelta(days=COHORT_WINDOW_DAYS))
        latest = build_latest(convert_pulls(pulls, _fx()), first, day)
        # The windows of this day's pulls: LoadReport replaces those days in ad_spend_daily.
        windows = {p.platform: [p.first, p.last] for p in pulls if p.pulled == day}
        table = to_table(latest, SPEND, allow_empty=True)
        root = config.data_root()
        lake.write_table(root, "spend_latest", "date", day, table, meta={"windows": windows})


class Restatements(LakeTask):
    """How much the report day's pulls changed earlier days' spend (vs. the day before's)."""

    date = luigi.DateParameter(description="report day")
    outputs = ("restatements",)

    def requires(self) -> list[AdSpend]:
        before = self.date - dt.timedelta(days=1)
        return [AdSpend(platform=p, date=d) for p in _platforms() for d in (before, self.date)]

    def run(self) -> None:
        from adperf.transform.restatement import build_day_restatements, convert_pulls

        day = _iso(self.date)
        df = build_day_restatements(day, convert_pulls(_pulls(self.input()), _fx()))
        lake.write_frame(config.data_root(), "restatements", "date", day, df)


def _pulls(targets: list[LakePartition]) -> list[Any]:
    """AdSpend outputs as restatement.Pull objects (window from the partition's meta)."""
    from adperf.transform.restatement import Pull

    out = []
    for t in targets:
        meta = t.meta()
        out.append(Pull(meta["platform"], t.value, meta["first_day"], meta["last_day"], t.read()))
    return out


class InstallHistory(luigi.WrapperTask):
    """Every install of the history window: closed months plus the current month's days."""

    date = luigi.DateParameter(description="report day")

    def requires(self) -> list[luigi.Task]:
        months, current = _history(self.date, config.ltv().history_days)
        return [InstallsMonth(month=m) for m in months] + [Installs(date=d) for d in current]

    def read(self) -> pd.DataFrame:
        return _read_all([t.output() for t in self.requires()])


class PaymentHistory(luigi.WrapperTask):
    """Every payment of the history window: closed months plus the current month's days."""

    date = luigi.DateParameter(description="report day")

    def requires(self) -> list[luigi.Task]:
        months, current = _history(self.date, config.ltv().history_days)
        return [PaymentsMonth(month=m) for m in months] + [Payments(date=d) for d in current]

    def read(self) -> pd.DataFrame:
        return _read_all([t.output() for t in self.requires()])


class Attribution(LakeTask):
    """Revenue of one payment day by acquiring campaign, and its reconciliation."""

    date = luigi.DateParameter(description="report day")
    outputs = ("attribution", "reconciliation")

    def requires(self) -> dict[str, luigi.Task]:
        return {"payments": Payments(date=self.date), "installs": InstallHistory(date=self.date)}

    def run(self) -> None:
        from adperf.transform.attribution import (
            build_attribution,
            build_reconciliation,
            build_user_map,
        )

        day = _iso(self.date)
        payments = self.input()["payments"].read()
        attribution = build_attribution(
            day, payments, build_user_map(self.requires()["installs"].read())
        )
        recon = build_reconciliation(day, payments, attribution)
        root = config.data_root()
        lake.write_frame(
            root, "reconciliation", "date", day, pd.DataFrame([{"date": day, **recon}])
        )
        lake.write_frame(root, "attribution", "date", day, attribution)


class CohortRoas(LakeTask):
    """The cohort triangle as of the report day: every cohort of the window (30 days to it) at
    every age (0, 3, 7, 14, 30) it has reached."""

    date = luigi.DateParameter(description="report day")
    outputs = ("cohort_roas",)

    def requires(self) -> dict[str, list[luigi.Task]]:
        window = _window(self.date, COHORT_WINDOW_DAYS + 1)
        return {
            "installs": [Installs(date=d) for d in window],
            "payments": [Payments(date=d) for d in window],
            "spend": [SpendLatest(date=self.date)],  # the window, latest figures
        }

    def build(self, inputs: dict[str, pd.DataFrame]) -> pd.DataFrame:
        from adperf.transform.cohort import build_cohort_roas

        args = (inputs["installs"], inputs["payments"], inputs["spend"])
        return build_cohort_roas(_iso(self.date), *args, window_days=COHORT_WINDOW_DAYS)

    def run(self) -> None:
        inputs = {k: _read_all(v) for k, v in self.input().items()}
        df = self.build(inputs)
        lake.write_frame(config.data_root(), self.outputs[0], "date", _iso(self.date), df)


class CohortRoasSegments(CohortRoas):
    """The cohort triangle as of the report day by the MMP's country and device OS (spend
    shared among a campaign's segments by installs)."""

    outputs = ("cohort_roas_segments",)

    def build(self, inputs: dict[str, pd.DataFrame]) -> pd.DataFrame:
        from adperf.transform.cohort import build_cohort_roas_segments

        args = (inputs["installs"], inputs["payments"], inputs["spend"])
        return build_cohort_roas_segments(_iso(self.date), *args, window_days=COHORT_WINDOW_DAYS)


class LtvModel(LakeTask):
    """BG/NBD + Gamma-Gamma fitted on the payment history alone: the day's `ltv_model` row, in
    the lake and the warehouse. Needs payments (and FX) only: no MMP, logs or ad platform, so a
    team without an MMP still gets customer LTV."""

    date = luigi.DateParameter(description="report day = end of the fitted history")
    outputs = ("ltv_model",)

    def requires(self) -> PaymentHistory:
        return PaymentHistory(date=self.date)

    def output(self) -> dict[str, Any]:
        url = config.adperf().warehouse_url
        return {
            "ltv_model": LakePartition(config.data_root(), "ltv_model", "date", _iso(self.date)),
            "warehouse": WarehouseDay(url, _iso(self.date), marker="ltv_model"),
        }

    def run(self) -> None:
        from adperf.transform.ltv import build_ltv_model

        self.progress(10, f"fitting BG/NBD + Gamma-Gamma on the payment history to {self.date}")
        day = _iso(self.date)
        previous_date, previous = _previous_ltv_model(self.date)
        row = build_ltv_model(
            day,
            self.requires().read(),
            history_days=config.ltv().history_days,
            initial=previous,
            initial_date=previous_date,
        )
        frame = pd.DataFrame([row])
        # The warehouse first: the lake partition, written last, completes the task.
        _load_tables(day, {"ltv_model": frame}, marker="ltv_model")
        lake.write_frame(config.data_root(), "ltv_model", "date", day, frame)


class Ltv(LakeTask):
    """The day's cohort pLTV per campaign and adset with its interval, valued with the day's
    LtvModel; that model's 90-day backtest against each campaign's revenue; the install
    cohorts of the `[rules] window_days` days to it pooled, with their bootstrap draws."""

    date = luigi.DateParameter(description="report day")
    outputs = ("pltv", "ltv_backtest", "pltv_window", "pltv_draws")

    def requires(self) -> dict[str, luigi.Task]:
        return {
            "model": LtvModel(date=self.date),
            "payments": PaymentHistory(date=self.date),
            "installs": InstallHistory(date=self.date),
        }

    def run(self) -> None:
        from adperf.transform.ltv import BACKTEST_DAYS, build_pltv, build_pltv_window

        self.progress(10, f"valuing the install cohorts to {self.date}")
        day, cfg = _iso(self.date), config.ltv()
        model = _first_row(self.input()["model"]["ltv_model"].read())
        payments, installs = (self.requires()[n].read() for n in ("payments", "installs"))
        history = {"history_days": cfg.history_days, "horizon_days": cfg.horizon_days}
        backtest, pltv = build_pltv(
            day,
            model,
            payments,
            installs,
            **history,
            discount_rate_annual=cfg.discount_rate,
            backtest_model=_stored_ltv_model(self.date - dt.timedelta(days=BACKTEST_DAYS)),
        )
        window, draws = build_pltv_window(
            day,
            model,
            payments,
            installs,
            window_days=config.rules().window_days,
            **history,
            discount_rate_annual=cfg.discount_rate,
        )
        root = config.data_root()
        lake.write_frame(root, "pltv", "date", day, pltv)
        lake.write_frame(root, "ltv_backtest", "date", day, _backtest_frame(backtest))
        lake.write_frame(root, "pltv_window", "date", day, window)
        lake.write_frame(root, "pltv_draws", "date", day, draws)


def _backtest_frame(row: dict[str, Any]) -> pd.DataFrame:
    """One backtest row with its column types (nulls included)."""
    return pd.DataFrame([row]).astype(
        {
            "backtest_mape": "float64",
            "backtest_bias": "float64",
            "backtest_campaigns": "Int64",
            "backtest_model": "string",
        }
    )


def _load_tables(day: str, frames: dict[str, pd.DataFrame], marker: str) -> None:
    """Replace some tables of a day in the warehouse (one transaction, with `marker`)."""
    engine = warehouse.make_engine(config.adperf().warehouse_url)
    try:
        warehouse.load_day(engine, day, frames, marker=marker)
    except sa.exc.DBAPIError as exc:
        raise warehouse.load_failed(exc, engine, day) from None
    finally:
        engine.dispose()


def _previous_ltv_model(day: dt.date) -> tuple[str | None, Any]:
    """(model_date, model) of the newest usable ltv_model partition of the 7 days before `day`.

    Read if present, not required: a dependency on Ltv(day - 1) would chain every report day
    back to the first one (a long graph, backfills forced into sequence), while the previous
    model is only a warm start and the fallback when today's fit does not converge.
    """
    from adperf.transform.ltv import model_from_row

    root = config.data_root()
    for back in range(1, 8):
        d = _iso(day - dt.timedelta(days=back))
        if not lake.partition_exists(root, "ltv_model", "date", d):
            continue
        rows = lake.read_partition(root, "ltv_model", "date", d).to_dict("records")
        found = model_from_row({str(k): v for k, v in rows[0].items()}) if rows else None
        if found is not None:
            return found
    return None, None


def _stored_ltv_model(day: dt.date) -> Any:
    """The model fitted as of `day` from its ltv_model partition, or None (absent, or that day
    fell back to an older model): the backtest's model, reused instead of fitted again."""
    from adperf.transform.ltv import model_from_row

    root, d = config.data_root(), _iso(day)
    if not lake.partition_exists(root, "ltv_model", "date", d):
        return None
    rows = lake.read_partition(root, "ltv_model", "date", d).to_dict("records")
    found = model_from_row({str(k): v for k, v in rows[0].items()}) if rows else None
    return found[1] if found is not None and found[0] == d else None


class Contribution(LakeTask):
    """Assisted revenue: PageRank over the match graph, credited to acquiring campaigns."""

    date = luigi.DateParameter(description="report day")
    outputs = ("contribution",)
    # Run early (luigi passes a task's priority on to what it requires): its window's EventLogs
    # and the PageRank otherwise start last and run alone at the end of a cold run (16 s of 138
    # on the large world with 2 workers).
    priority = 10

    def requires(self) -> dict[str, Any]:
        window = _window(self.date, config.contribution().window_days)
        return {
            "events": [EventLogs(date=d) for d in window],
            "payments": Payments(date=self.date),
            "installs": InstallHistory(date=self.date),
        }

    def run(self) -> None:
        from adperf.transform.attribution import build_user_map
        from adperf.transform.contribution import build_contribution_from_edges

        self.progress(10, f"PageRank over the match graph of the {self.date} window")
        user_map = build_user_map(self.requires()["installs"].read())
        # The window's daily match edges, not its raw events: a pair's matches of a day are
        # one row (the log extract counts them), so 28 days stay small in memory.
        df = build_contribution_from_edges(
            _iso(self.date),
            _read_all([day["match_edges"] for day in self.input()["events"]]),
            self.input()["payments"].read(),
            user_map,
            partner_share=config.contribution().partner_share,
        )
        lake.write_frame(config.data_root(), "contribution", "date", _iso(self.date), df)


class CampaignReport(LakeTask):
    """campaign_daily and the recommended actions of one report day."""

    date = luigi.DateParameter(description="report day")
    outputs = ("campaign_report", "actions")

    def requires(self) -> dict[str, Any]:
        return {
            "spend": [SpendLatest(date=self.date)],  # the 31-day window, latest figures
            "installs": Installs(date=self.date),
            "attribution": Attribution(date=self.date),
            "contribution": Contribution(date=self.date),
            "ltv": Ltv(date=self.date),
            "outcomes": ActionOutcomes(date=self.date),
        }

    def run(self) -> None:
        from adperf.transform.report import (
            build_actions,
            build_adset_report,
            build_campaign_report,
            build_window_evidence,
        )

        day, inp, rules = _iso(self.date), self.input(), _rules()
        spend_window = _read_all(inp["spend"])
        spend_day, installs = spend_window[spend_window["date"] == day], inp["installs"].read()
        attribution, pltv = inp["attribution"]["attribution"].read(), inp["ltv"]["pltv"].read()
        report = build_campaign_report(
            day, spend_day, installs, attribution, inp["contribution"].read(), pltv
        )
        window = build_window_evidence(
            day,
            rules.window_days,
            spend_window,
            inp["ltv"]["pltv_window"].read(),
            inp["ltv"]["pltv_draws"].read(),
        )
        actions = build_actions(
            day,
            report,
            _first_spend_dates(spend_window),
            rules,
            currency=config.adperf().report_currency,
            adset_report=build_adset_report(day, spend_day, installs, attribution, pltv),
            adset_first_spend_dates=_first_spend_dates(spend_window, "adset_id"),
            window=window if config.rules().pooled else None,
        )
        actions = _with_follow_ups(day, actions, inp["outcomes"].read())
        root = config.data_root()
        lake.write_frame(root, "actions", "date", day, actions)
        lake.write_frame(root, "campaign_report", "date", day, report)


def _first_spend_dates(
    spend: pd.DataFrame, column: str = "campaign_id"
) -> dict[tuple[str, str], str]:
    paid = spend[spend["spend_micros"] > 0]
    firsts = paid.groupby(["platform", column])["date"].min()
    return {(str(p), str(c)): str(d) for p, c, d in firsts.reset_index().itertuples(index=False)}


def _rules() -> Any:
    from adperf.transform.report import Rules

    r = config.rules()
    if r.window_days > COHORT_WINDOW_DAYS + 1:
        raise ConfigError(
            f"[rules] window_days = {r.window_days}, but SpendLatest holds the "
            f"{COHORT_WINDOW_DAYS + 1} days to the report day. Fix: {COHORT_WINDOW_DAYS + 1} or "
            "fewer"
        )
    return Rules(
        target_roas=r.target_roas,
        scale_roas=r.scale_roas,
        pause_roas=r.pause_roas,
        min_spend_micros=round(r.min_spend * 1_000_000),
        min_installs=r.min_installs,
        min_age_days=r.min_age_days,
        window_days=r.window_days,
        confidence=r.confidence,
    )


class Watch(LakeTask):
    """The watch of one report day (adperf.transform.watch): what changed beyond normal noise,
    and each paid campaign's platform-reported vs MMP installs (source_discrepancy).

    Earlier days come from the warehouse as loaded, like RenderReport's history: reading them is
    not a dependency, so a day watched before its baseline days were loaded (a backfill out of
    order) has fewer checks, never wrong ones.
    """

    date = luigi.DateParameter(description="report day")
    outputs = ("watch", "source_discrepancy")

    def requires(self) -> dict[str, luigi.Task]:
        return {
            "report": CampaignReport(date=self.date),
            "cohorts": CohortRoas(date=self.date),
            "attribution": Attribution(date=self.date),
            "spend": SpendLatest(date=self.date),  # the day's reported installs; month to date
        }

    def run(self) -> None:
        from adperf.transform.watch import build_source_discrepancy, build_watch

        day, inp, settings = _iso(self.date), self.input(), config.watch_settings()
        today = _with_d0(_as_money(inp["report"]["campaign_report"].read()), inp["cohorts"].read())
        spend = _as_money(inp["spend"].read())
        history = _watch_history(self.date, settings)
        discrepancy = build_source_discrepancy(day, spend[spend["date"] == day], today, settings)
        found = build_watch(
            day,
            campaigns=pd.concat([history["campaigns"], today], ignore_index=True),
            reconciliation=pd.concat(
                [history["reconciliation"], _as_money(inp["attribution"]["reconciliation"].read())],
                ignore_index=True,
            ),
            discrepancy=discrepancy,
            pacing=_pacing(day, spend),
            settings=settings,
            currency=config.adperf().report_currency,
        )
        root = config.data_root()
        lake.write_frame(root, "source_discrepancy", "date", day, discrepancy)
        lake.write_frame(root, "watch", "date", day, found)


def _pacing(day: str, spend: pd.DataFrame) -> pd.DataFrame:
    """Month-to-date spend against [budgets], from the day's spend window (31 days to it)."""
    from adperf.transform.watch import build_pacing

    # Pro rata over the days the window holds: a lake (or a sandbox world) that starts in the
    # middle of the month would otherwise be 'behind plan' by the days before it.
    since = str(spend["date"].min()) if len(spend) else None
    month = spend[spend["date"] >= day[:8] + "01"]
    return build_pacing(day, month, config.budget_plan(), since=since)


def _with_d0(campaigns: pd.DataFrame, cohorts: pd.DataFrame) -> pd.DataFrame:
    """Campaign rows with the D0 revenue and payers of their cohort of the same day (`cohorts`:
    cohort_roas rows, lake or warehouse)."""
    d0 = cohorts[cohorts["age_days"] == 0].rename(columns={"cohort_date": "date"})
    if "revenue_micros" in d0.columns:
        d0 = d0.assign(revenue=d0["revenue_micros"].astype("float64") / 1_000_000)
    d0 = d0.assign(date=d0["date"].astype(str), revenue_d0=d0["revenue"].astype("float64"))
    d0 = d0.rename(columns={"payers": "payers_d0"})[
        ["date", "platform", "campaign_id", "revenue_d0", "payers_d0"]
    ]
    out = campaigns.assign(date=campaigns["date"].astype(str))
    return out.merge(d0, on=["date", "platform", "campaign_id"], how="left")


def _watch_history(day: dt.date, settings: Any) -> dict[str, pd.DataFrame]:
    """campaign_daily (with D0 cohorts) and revenue_reconciliation of the watch's baseline days
    before `day`, as loaded in the warehouse."""
    back = max(7 * settings.baseline_weeks, settings.share_days)
    first, last = _iso(day - dt.timedelta(days=back)), _iso(day - dt.timedelta(days=1))
    engine = warehouse.make_engine(config.adperf().warehouse_url)
    try:
        campaigns = warehouse.read_days(engine, "campaign_daily", first, last)
        # A triangle cell is stored as of the latest report that computed it (up to 30 days on).
        far = _iso(day + dt.timedelta(days=COHORT_WINDOW_DAYS))
        cohorts = warehouse.read_days(engine, "cohort_roas", first, far)
        recon = warehouse.read_days(engine, "revenue_reconciliation", first, last)
    finally:
        engine.dispose()
    cohorts = cohorts[cohorts["cohort_date"].astype(str).between(first, last)]
    for df in (campaigns, cohorts, recon):
        for col in ("spend", "revenue", "total_payments", "unattributed", "restricted"):
            if col in df.columns:
                df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    return {"campaigns": _with_d0(campaigns, cohorts), "reconciliation": recon}


class ActionOutcomes(LakeTask):
    """The follow-ups due on the report day: each action applied `[rules] follow_up_days`
    before it, its object's spend, installs, CPI and pROAS since the change against before.

    The earlier days' installs and pLTV come from their lake partitions and the actions from
    the warehouse (`action_log`, `actions`), read when present, not required: an action is
    applied after its day's report, so the day it is followed up on has them.
    """

    date = luigi.DateParameter(description="report day")
    outputs = ("action_outcomes",)

    def requires(self) -> dict[str, Any]:
        return {
            "spend": SpendLatest(date=self.date),  # 31 days: before and since, latest figures
            "installs": InstallHistory(date=self.date),
            "ltv": Ltv(date=self.date),
        }

    def run(self) -> None:
        from adperf.transform.outcomes import build_action_outcomes, build_object_days

        day, rules = _iso(self.date), _follow_up_rules()
        first = self.date - dt.timedelta(days=2 * rules.follow_up_days - 1)
        log, decisions = _warehouse_actions(self.date - dt.timedelta(days=rules.follow_up_days))
        installs = _installs_between(self.requires()["installs"], first, self.date)
        daily = build_object_days(self.input()["spend"].read(), installs, _pltv_days(first, day))
        outcomes = build_action_outcomes(
            day, rules, log, decisions, daily, config.adperf().report_currency
        )
        lake.write_frame(config.data_root(), "action_outcomes", "date", day, outcomes)


def _follow_up_rules() -> Any:
    from adperf.transform.outcomes import FollowUpRules

    r, a = config.rules(), config.actions()
    return FollowUpRules(
        follow_up_days=r.follow_up_days,
        scale_roas=r.scale_roas,
        pause_roas=r.pause_roas,
        scale_factor=a.scale_factor,
        max_budget_increase=a.max_budget_increase,
    )


def _warehouse_actions(action_day: dt.date | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(action_log, actions of `action_day`) from the warehouse; empty where absent (and the
    actions empty without an `action_day`: the caller needs only the log)."""
    engine = warehouse.make_engine(config.adperf().warehouse_url)
    try:
        has_log = sa.inspect(engine).has_table(warehouse.action_log.name)
        log = warehouse.read_table(engine, "action_log") if has_log else pd.DataFrame()
        decisions = (
            warehouse.read_days(engine, "actions", _iso(action_day), _iso(action_day))
            if action_day is not None
            else pd.DataFrame()
        )
    finally:
        engine.dispose()
    return log, decisions


def _installs_between(history: luigi.Task, first: dt.date, last: dt.date) -> pd.DataFrame:
    """The installs of [first, last] from the install history's partitions covering them."""
    parts = []
    for task in history.requires():
        if isinstance(task, Installs) and not first <= task.date <= last:
            continue
        if isinstance(task, InstallsMonth) and not (
            month_days(task.month)[1] >= first and month_days(task.month)[0] <= last
        ):
            continue
        parts.append(task.output())
    df = _read_all(parts)
    if not len(df):
        return pd.DataFrame(columns=["date", "platform", "campaign_id", "adset_id"])
    dates = df["date"].astype("str")
    return df.loc[(dates >= _iso(first)) & (dates <= _iso(last))]


def _pltv_days(first: dt.date, last: str) -> pd.DataFrame:
    """The `pltv` partitions (each day's cohort valued that day) of [first, last] present."""
    root, frames = config.data_root(), []
    for d in days(first, dt.date.fromisoformat(last)):
        if lake.partition_exists(root, "pltv", "date", _iso(d)):
            frames.append(lake.read_partition(root, "pltv", "date", _iso(d)))
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["level"])


def _with_follow_ups(day: str, actions: pd.DataFrame, outcomes: pd.DataFrame) -> pd.DataFrame:
    """The day's actions with the follow-ups' scale backs and the week cap's expands."""
    from adperf.transform.outcomes import with_follow_ups

    log, _ = _warehouse_actions(None)  # the log only: the day's own actions are `actions`
    return with_follow_ups(actions, outcomes, log, day, _follow_up_rules())


# ---------------------------------------------------------------- load


class LoadReport(luigi.Task):
    """The report tables of one day, replaced in the warehouse in one transaction."""

    date = luigi.DateParameter(description="report day")

    def requires(self) -> dict[str, luigi.Task]:
        return {
            "spend": Spend(date=self.date),
            "spend_latest": SpendLatest(date=self.date),
            # Written before the report is rendered: its notes say which days were restated.
            "restatements": Restatements(date=self.date),
            "report": CampaignReport(date=self.date),
            "cohorts": CohortRoas(date=self.date),
            "segments": CohortRoasSegments(date=self.date),
            "ltv": Ltv(date=self.date),
            "ltv_model": LtvModel(date=self.date),
            "attribution": Attribution(date=self.date),
            "watch": Watch(date=self.date),  # its source_discrepancy table
            "outcomes": ActionOutcomes(date=self.date),
        }

    def output(self) -> WarehouseDay:
        return WarehouseDay(config.adperf().warehouse_url, _iso(self.date))

    def run(self) -> None:
        inp = self.input()
        cohorts = inp["cohorts"].read().rename(columns={})
        # ad_spend_daily: this day's pulls replace every day they cover (restated days too), in
        # the same transaction, unless a later pull already loaded a day (README, Restatement).
        from adperf.transform.restatement import rows_in_windows

        spend = inp["spend_latest"]
        windows = {p: (w[0], w[1]) for p, w in spend.meta()["windows"].items()}
        frames = {
            "campaign_daily": inp["report"]["campaign_report"].read(),
            "cohort_roas": cohorts,
            "cohort_roas_segments": inp["segments"].read(),
            "ltv_model": _ltv_model_with_backtest(inp["ltv_model"]["ltv_model"], inp["ltv"]),
            "revenue_reconciliation": inp["attribution"]["reconciliation"].read(),
            "actions": inp["report"]["actions"].read(),
            "source_discrepancy": inp["watch"]["source_discrepancy"].read(),
            "action_outcomes": inp["outcomes"].read(),
        }
        engine = warehouse.make_engine(config.adperf().warehouse_url)
        try:
            pulled = rows_in_windows(spend.read(), windows)
            warehouse.load_day(engine, _iso(self.date), frames, spend_pull=(pulled, windows))
        except sa.exc.DBAPIError as exc:
            raise warehouse.load_failed(exc, engine, _iso(self.date)) from None
        finally:
            engine.dispose()


def _ltv_model_with_backtest(model: LakePartition, ltv: dict[str, LakePartition]) -> pd.DataFrame:
    """The day's ltv_model row with the backtest Ltv made of it (the report's ltv_model)."""
    from adperf.transform.ltv import with_backtest

    row = with_backtest(_first_row(model.read()), _first_row(ltv["ltv_backtest"].read()))
    return pd.DataFrame([row])


class RenderReport(luigi.Task):
    """The day's report rendered once: Slack message, chart PNG, CSV and HTML page in the lake.

    Earlier days (the d/d and w/w changes, the 30-day chart) come from the warehouse, as loaded:
    reading them is not a dependency (that would pull 30 days of graph into every report), except
    the day before and the week before under `[adperf] load_comparison_days` (the demo's).
    """

    date = luigi.DateParameter(description="report day")

    def requires(self) -> dict[str, Any]:
        required: dict[str, Any] = {
            # The load first: the warehouse then holds the day's (and restated days') spend.
            "load": LoadReport(date=self.date),
            "report": CampaignReport(date=self.date),
            "attribution": Attribution(date=self.date),
            "cohorts": CohortRoas(date=self.date),
            "ltv": Ltv(date=self.date),
            "watch": Watch(date=self.date),
            "outcomes": ActionOutcomes(date=self.date),
        }
        if config.adperf().load_comparison_days:
            from adperf.sinks.summary import COMPARISON_LAGS

            # A first run's report then compares with both days too; a later day's run finds
            # them loaded already (their tables, not their Slack report or dashboard).
            required["comparison"] = [
                LoadReport(date=self.date - dt.timedelta(days=n)) for n in COMPARISON_LAGS
            ]
        return required

    def output(self) -> SharedFolder:
        return SharedFolder(config.shared_files(), report_folder(_iso(self.date)))

    def complete(self) -> bool:
        # Complete for the inputs it was rendered from only: a day re-run on restated numbers
        # (its campaign report rewritten) is rendered again, and SlackReport then updates.
        meta = self.output().meta()
        return meta is not None and meta.get("inputs") == _report_inputs(self.date)

    def run(self) -> None:
        from adperf.sinks.render import render_report

        day, inp, history = _iso(self.date), self.input(), _report_history(self.date)
        report = render_report(
            day=day,
            currency=config.adperf().report_currency,
            campaigns=_as_money(inp["report"]["campaign_report"].read()),
            actions=_as_money(inp["report"]["actions"].read()),
            cohorts=_as_money(inp["cohorts"].read()),
            reconciliation=_first_row(_as_money(inp["attribution"]["reconciliation"].read())),
            notes=_quality_notes(self.date),
            history_campaigns=history["campaign_daily"],
            history_cohorts=history["cohort_roas"],
            history_spend=history["ad_spend_daily"],
            target_roas=config.rules().target_roas,
            accounts_line=_accounts_line(self.date),
            watch=inp["watch"]["watch"].read(),
            follow_ups=[str(line) for line in inp["outcomes"].read()["line"]],
        )
        meta: dict[str, Any] = {"date": day, "content_hash": report.content_hash}
        meta["inputs"] = _report_inputs(self.date)
        config.shared_files().publish_folder(report_folder(day), report.files(), meta)


class SlackReport(luigi.Task):
    """The morning Slack report of one day: posted once (token) or written to the outbox.

    The marker `<data_root>/slack_posts/<day>.json` holds the post's channel and ts and the
    content hash it shows. Complete when the marker matches the current rendering: after a
    re-render with other numbers the task runs again and `chat.update`s the same message.
    Before posting, the marker is *pending* (no ts): a run that finds it looks the post up in
    the channel by its metadata key instead of posting again (see `publish_report`).
    """

    date = luigi.DateParameter(description="report day")

    def requires(self) -> dict[str, luigi.Task]:
        return {
            "load": LoadReport(date=self.date),
            "render": RenderReport(date=self.date),
            # Posted after the page exists: the message links to it.
            "dashboard": Dashboard(date=self.date),
        }

    def output(self) -> SharedFile:
        return SharedFile(config.shared_files(), slack_marker(_iso(self.date)))

    def complete(self) -> bool:
        marker = self.output().read_json()
        if not marker or not marker.get("complete"):
            return False
        if marker.get("delivery") != ("slack" if config.secrets().slack_token else "outbox"):
            return False
        # luigi looks no further than a complete task: a stale rendering makes this stale too.
        render = RenderReport(date=self.date)
        meta = render.output().meta()
        fresh = meta is not None and meta["content_hash"] == marker.get("content_hash")
        return fresh and render.complete()

    def run(self) -> None:
        from adperf.sinks.render import CHART_FILE, CSV_FILE, MESSAGE_FILE
        from adperf.sinks.slack import publish_report, with_dashboard_link, write_outbox

        day, marker = _iso(self.date), self.output()
        folder = RenderReport(date=self.date).output().version()
        content_hash = str(folder.meta["content_hash"])
        message = json.loads(folder.read(MESSAGE_FILE).decode("utf-8"))
        message = with_dashboard_link(message, _dashboard_link(self.date))
        files = {
            f"adperf-{day}.png": folder.read(CHART_FILE),
            f"adperf-{day}-campaigns.csv": folder.read(CSV_FILE),
        }
        token = config.secrets().slack_token
        if not token:
            paths = write_outbox(message, Path(config.slack().outbox), day, files)
            state = {"date": day, "delivery": "outbox", "content_hash": content_hash}
            marker.write_json({**state, "complete": True, "files": [str(p) for p in paths]})
            return
        publish_report(
            message,
            [(name, content, name) for name, content in files.items()],
            token=token,
            channel=config.slack().channel,
            base_url=endpoints.slack_base_url(self.date),
            day=day,
            content_hash=content_hash,
            previous=marker.read_json(),
            save=marker.write_json,
            # A post Slack refused leaves no marker; a pending one stays until it is looked up.
            forget=marker.delete,
        )


class Dashboard(luigi.Task):
    """The day's interactive dashboard page (`dashboard.html`), next to the report page.

    Trends come from the warehouse's history (as loaded, up to a year back) and the day's lake
    partitions; like the report, reading that history is not a dependency.
    """

    date = luigi.DateParameter(description="report day")

    def requires(self) -> dict[str, luigi.Task]:
        return {
            # The report folder first: a re-render replaces the folder, dashboard included.
            "render": RenderReport(date=self.date),
            "segments": CohortRoasSegments(date=self.date),
            "report": CampaignReport(date=self.date),
            "attribution": Attribution(date=self.date),
        }

    def output(self) -> SharedFolder:
        from adperf.sinks.dashboard import DASHBOARD_FILE

        return SharedFolder(config.shared_files(), report_folder(_iso(self.date)), DASHBOARD_FILE)

    def complete(self) -> bool:
        # A stale rendering is about to replace the folder (and this page with it).
        return bool(self.output().exists()) and RenderReport(date=self.date).complete()

    def run(self) -> None:
        from adperf.sinks.dashboard import (
            DASHBOARD_FILE,
            build_dashboard_data,
            build_dashboard_html,
        )

        day, inp, history = _iso(self.date), self.input(), _dashboard_history(self.date)
        campaigns = _as_money(inp["report"]["campaign_report"].read())
        reconciliation = _first_row(_as_money(inp["attribution"]["reconciliation"].read()))
        segments = _as_money(inp["segments"].read())
        data = build_dashboard_data(
            day=day,
            currency=config.adperf().report_currency,
            segments=pd.concat([history["cohort_roas_segments"], segments], ignore_index=True),
            campaigns=pd.concat([history["campaign_daily"], campaigns], ignore_index=True),
            actions=_as_money(inp["report"]["actions"].read()),
            notes=_dashboard_notes(self.date, campaigns, reconciliation),
            target_roas=config.rules().target_roas,
        )
        page = build_dashboard_html(data).encode("utf-8")
        config.shared_files().add_to_folder(report_folder(day), DASHBOARD_FILE, page)


def _dashboard_history(day: dt.date) -> dict[str, pd.DataFrame]:
    """campaign_daily and cohort_roas_segments of the year before `day`, as loaded."""
    first, last = _iso(day - dt.timedelta(days=365)), _iso(day - dt.timedelta(days=1))
    engine = warehouse.make_engine(config.adperf().warehouse_url)
    try:
        frames = {
            name: warehouse.read_days(engine, name, first, last)
            for name in ("campaign_daily", "cohort_roas_segments")
        }
    finally:
        engine.dispose()
    return frames


def _dashboard_notes(
    day: dt.date, campaigns: pd.DataFrame, reconciliation: dict[str, Any]
) -> list[str]:
    """The report's data-quality notes of the day (adperf.sinks.summary.report_notes)."""
    from adperf.sinks.summary import report_notes

    currency = config.adperf().report_currency
    return report_notes(_quality_notes(day), campaigns, reconciliation, currency)


class DailyReport(luigi.WrapperTask):
    """Everything for one report day: the warehouse tables and the Slack report."""

    date = luigi.DateParameter(description="report day")

    def requires(self) -> list[luigi.Task]:
        config.secrets()  # a production config without ADPERF_HMAC_KEY refuses to start
        return [LoadReport(date=self.date), SlackReport(date=self.date), Dashboard(date=self.date)]

    @classmethod
    def bulk_complete(cls, parameter_tuples: Any) -> list[Any]:
        """The complete days among `parameter_tuples`, for RangeDaily (cron's catch-up)."""
        # Without this, luigi's RangeDaily falls back to infer_bulk_complete_from_fs, which
        # reads `.path` of every output; a warehouse day has none, and the run fails with
        # SCHEDULING_FAILED. `cls` may be a functools.partial (RangeDaily's of_params).
        return [day for day in parameter_tuples if cls(date=day).complete()]


def _dashboard_link(day: dt.date) -> str:
    """The day's dashboard as people open it: [slack] dashboard_base_url, else its path under
    the data root."""
    from adperf.sinks.dashboard import dashboard_link

    return dashboard_link(config.slack().dashboard_base_url or None, _iso(day))


def _as_money(df: pd.DataFrame) -> pd.DataFrame:
    """`x_micros` columns → `x` floats in currency units (for display only)."""
    out = df.copy()
    for col in [c for c in df.columns if c.endswith("_micros")]:
        out[col[: -len("_micros")]] = df[col].astype("float64") / 1_000_000
        out = out.drop(columns=col)
    return out


def _quality_notes(day: dt.date) -> list[str]:
    """Restated spend, quarantined rows and the LTV model's state, from the day's lake files."""
    from adperf.sinks.render import build_quality_notes

    root, iso = config.data_root(), _iso(day)

    def optional(dataset: str) -> pd.DataFrame | None:
        # Written by other tasks when they have something to say (restatements: issue 4).
        if not lake.partition_exists(root, dataset, "date", iso):
            return None
        return _as_money(lake.read_partition(root, dataset, "date", iso))

    def meta(dataset: str) -> dict[str, Any]:
        version = lake.current_version(root, dataset, "date", iso)
        return dict(version.meta) if version and version.meta else {}

    return build_quality_notes(
        currency=config.adperf().report_currency,
        payments_meta=meta("payments"),
        events_meta=meta("events"),
        restatements=optional("restatements"),
        ltv_model=optional("ltv_model"),
    )


def _accounts_line(day: dt.date) -> str | None:
    """Which ad accounts of the day's spend keep days of another zone (adperf.account_days)."""
    from adperf.account_days import accounts_line

    root, iso = config.data_root(), _iso(day)
    if not lake.partition_exists(root, "spend", "date", iso):
        return None
    # Spend of pulls made before the zone was recorded has no account_timezone: nothing to say.
    spend = lake.read_partition(root, "spend", "date", iso).reindex(
        columns=["platform", "account_id", "account_timezone"]
    )
    rows = spend.itertuples(index=False)
    return accounts_line(
        [(str(p), str(a), z) for p, a, z in rows],
        config.adperf().report_timezone,
        day,
        _account_days(),
    )


# The lake files a rendered report is made of (besides the warehouse history).
_REPORT_INPUTS = (
    "campaign_report",
    "actions",
    "reconciliation",
    "cohort_roas",
    "ltv_model",
    "watch",
    "action_outcomes",
)


def _first_row(df: pd.DataFrame) -> dict[str, Any]:
    return {str(k): v for k, v in df.iloc[0].items()}


def _report_inputs(day: dt.date) -> str | None:
    """A hash of the day's report inputs as they are now; None while one is missing."""
    import hashlib

    root, iso, digest = config.data_root(), _iso(day), hashlib.sha256()
    for dataset in _REPORT_INPUTS:
        data = lake.read_file(root, dataset, "date", iso, lake.DATA_FILE)
        if data is None:
            return None
        digest.update(dataset.encode() + b"\0" + data)
    for dataset in ("payments", "events", "restatements"):
        for name in (lake.META_FILE, lake.DATA_FILE if dataset == "restatements" else ""):
            found = lake.read_file(root, dataset, "date", iso, name) if name else None
            if found is not None:
                digest.update(f"{dataset}/{name}".encode() + b"\0" + found)
    return digest.hexdigest()


def _report_history(day: dt.date) -> dict[str, pd.DataFrame]:
    """campaign_daily and cohort_roas of the 30 days before `day`, ad_spend_daily of the 30
    days to `day`, as loaded in the warehouse."""
    first = _iso(day - dt.timedelta(days=COHORT_WINDOW_DAYS))
    last = _iso(day - dt.timedelta(days=1))
    engine = warehouse.make_engine(config.adperf().warehouse_url)
    try:
        frames = {
            name: warehouse.read_days(engine, name, first, last)
            for name in ("campaign_daily", "cohort_roas")
        }
        chart_first = _iso(day - dt.timedelta(days=COHORT_WINDOW_DAYS - 1))
        spend = warehouse.read_days(engine, "ad_spend_daily", chart_first, _iso(day))
        frames["ad_spend_daily"] = spend[["date", "platform", "spend"]]
    finally:
        engine.dispose()
    money = ("spend", "cpi", "revenue", "assisted_revenue", "pltv")
    for df in frames.values():
        # DECIMAL columns come back as Decimal objects; the report shows floats.
        for col in [c for c in money if c in df.columns]:
            df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    return frames


def _read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object written by `_write_json`, or None when there is none."""
    if not path.is_file():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(payload, sort_keys=True))
    os.replace(tmp, path)
