"""A deterministic simulated ad world on disk: the files the sandbox's fakes serve, and its truth.

Layout of a world folder (a contract with the fake servers and the tests; `ad_daily.parquet`
holds every platform's delivery, told apart by `platform`):
`world.json`, `ads.csv`, `ad_daily.parquet`, `installs.parquet`, `payments.sqlite`,
`logs/YYYY-MM-DD.jsonl.gz`, `fx.csv`, `truth/params.json`, `truth/campaign_daily.csv`,
`truth/daily_totals.csv`, `truth/users.parquet`, `truth/user_value.parquet`.

Determinism: every day's randomness comes from a generator seeded by (seed, day, purpose), and a
user's whole purchase timeline (HORIZON_DAYS) is drawn when the user installs, then cut at the
world's end; so the same (seed, start, profile) gives the same data for every day <= end,
whatever `end` is, and extending a world never changes its past.
"""

from __future__ import annotations

import csv
import decimal
import fcntl
import gzip
import json
import math
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from adperf import atomic, platforms
from adperf.errors import ConfigError
from adperf.sandbox import loop
from adperf.sandbox.anomalies import Anomaly, Planted
from adperf.sandbox.entities import (
    CURRENCY_DIGITS,
    KRW_PER_USD_BASE,
    TRUTH_HORIZON_DAYS,
    USD_COUNTRIES,
    USD_COUNTRY_WEIGHTS,
    Entities,
    entities_of,
    revenue_per_payer_365d,
    rng_for,
)
from adperf.sandbox.process import (
    REFUND_RATE,
    sample_amount_cents,
    sample_first_delay,
    sample_nu,
    sample_repeat_times,
)
from adperf.sandbox.profiles import Profile, get_profile
from adperf.vocabulary import ORGANIC, RESTRICTED, RESTRICTED_MEDIA_SOURCE

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

HORIZON_DAYS = 730.0
CUID_MISSING_RATE = 0.04
REPORTED_WINDOW_DAYS = 7  # the platform claims purchases within 7 days of the install
APP_IDS = {"ios": "id1477019230", "android": "com.adperf.demo"}
MEDIA_SOURCE_MAP = platforms.media_source_map()
# The media source the world's MMP reports each platform's installs under (its first one).
_MEDIA_SOURCE = {p.name: p.media_sources[0] for p in platforms.entries()}
# A few paid installs come through networks that withhold user-level data: the MMP reports their
# media source as 'restricted', with empty campaign fields
# (https://support.appsflyer.com/hc/en-us/articles/360006868017). One in RESTRICTED_EVERY paid
# installs, picked by its AppsFlyer id's random suffix: no random draw is added, so everything
# else in a world of a given seed stays as it was.
RESTRICTED_EVERY = 25
SUPPORTED_CURRENCIES = ("USD", "KRW")
US_PER_DAY = 86_400_000_000
US_PER_SECOND = 1_000_000
_NEVER = np.iinfo(np.int64).max
# Exact decimal arithmetic for the truth: products of amounts and 12-digit rates summed over a
# year stay far below 60 digits, so nothing is ever rounded.
_EXACT = decimal.Context(prec=60, traps=[decimal.Inexact, decimal.InvalidOperation])


# --------------------------------------------------------------------------- public API


def build_world(
    out_dir: Path,
    *,
    seed: int = 7,
    start: date,
    end: date,
    profile: str = "small",
    report_timezone: str = "Asia/Seoul",
    report_currency: str = "USD",
    drift: bool = False,
    anomalies: Sequence[Anomaly] = (),
) -> dict[str, Any]:
    """Build the world (seed, profile) for days start..end into `out_dir`, atomically.

    Closed loop (adperf.sandbox.loop): days the world in `out_dir` already had keep the budget
    controls they were built with; new days take the fakes' object state as it is now.
    `drift` adds creative fatigue and late-starting campaigns. `anomalies` plants changes from
    given days on (adperf.sandbox.anomalies), for the watch.

    Writes into a temp folder beside `out_dir`, then swaps it in: a killed build leaves no half
    world. Not locked: concurrent callers should use `ensure_world`. Returns world.json's content.
    """
    out_dir = Path(out_dir)
    prof = get_profile(profile)
    if end < start:
        raise ConfigError(f"sandbox: world end {end} is before its start {start}. Fix: swap them")
    if report_currency not in SUPPORTED_CURRENCIES:
        raise ConfigError(
            f"sandbox: report currency {report_currency!r} is not simulated. "
            f"Fix: set [adperf] report_currency to one of {list(SUPPORTED_CURRENCIES)}"
        )
    try:
        tz = ZoneInfo(report_timezone)
    except (KeyError, ValueError) as exc:
        raise ConfigError(
            f"sandbox: unknown report timezone {report_timezone!r}. "
            "Fix: set [adperf] report_timezone to an IANA name such as 'Asia/Seoul'"
        ) from exc
    if out_dir.exists() and not (out_dir / "world.json").exists() and any(out_dir.iterdir()):
        raise ConfigError(
            f"sandbox: {out_dir} is not empty and holds no world.json; refusing to replace it. "
            "Fix: point the sandbox at an empty or world folder"
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    controls = _controls(out_dir, seed, prof, start, tz, report_currency, drift)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        world = _World(tmp, seed, start, end, prof, tz, report_currency, anomalies)
        world.set_loop(*controls, drift=drift)
        if controls[0] and (out_dir / "logs").is_dir():  # the ledger says: this world, shorter
            world.reuse_past(out_dir)
        meta = world.build()
        # Renames only, no fsync: a world is rebuilt from its seed, and fsyncing every log file
        # would cost each test that builds one.
        atomic.publish_folder(tmp, out_dir, prefix=f".{out_dir.name}.tmp-", sync=False)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return meta


def ensure_world(
    out_dir: Path,
    *,
    end: date,
    profile: str = "small",
    seed: int = 7,
    days: int | None = None,
    report_timezone: str = "Asia/Seoul",
    drift: bool = False,
) -> dict[str, Any]:
    """The world in `out_dir` reaching at least `end`: built if missing, extended if shorter.

    A first build covers `days` days (the profile's default) ending at `end`; an extension keeps
    the world's start, so its past days stay byte-identical. Serialized by a lock file beside
    `out_dir`, so parallel workers build it once.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # Its own lock file: callers (tasks/resources.py) may already hold `.{name}.lock`, and a
    # second flock on that same file from this process would wait forever.
    with _locked(out_dir.parent / f".{out_dir.name}.ensure.lock"):
        # Leftovers of builds killed mid-way; no build of this folder runs while we hold the lock.
        for junk in out_dir.parent.glob(f".{out_dir.name}.tmp-*"):
            shutil.rmtree(junk, ignore_errors=True)
        if (out_dir / "world.json").exists():
            meta = load_meta(out_dir)
            have = (
                meta["seed"],
                meta["profile"],
                meta["report_timezone"],
                meta.get("drift", False),
            )
            if have != (seed, profile, report_timezone, drift):
                raise ConfigError(
                    f"sandbox: {out_dir} holds the world (seed, profile, timezone, drift) = "
                    f"{have}, not {(seed, profile, report_timezone, drift)}. Fix: delete the "
                    "folder or point [sandbox] root elsewhere"
                )
            if date.fromisoformat(meta["end"]) >= end:
                return meta
            start = date.fromisoformat(meta["start"])
            currency = str(meta["report_currency"])
        else:
            n_days = days if days is not None else get_profile(profile).days
            if n_days < 1:
                raise ConfigError(f"sandbox: days={n_days}. Fix: ask for at least 1 day")
            start = end - timedelta(days=n_days - 1)
            currency = "USD"
        return build_world(
            out_dir,
            seed=seed,
            start=start,
            end=end,
            profile=profile,
            report_timezone=report_timezone,
            report_currency=currency,
            drift=drift,
        )


def load_meta(out_dir: Path) -> dict[str, Any]:
    """world.json of the world in `out_dir`."""
    path = Path(out_dir) / "world.json"
    try:
        meta: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"sandbox: no world at {out_dir} (missing world.json). "
            "Fix: build it with adperf.sandbox.world.ensure_world"
        ) from None
    return meta


def payments_table(table: str = "payments", metadata: sa.MetaData | None = None) -> sa.Table:
    """The payments table as SQLAlchemy Core: DDL of the production MySQL table, SQLite-friendly."""
    return sa.Table(
        table,
        metadata if metadata is not None else sa.MetaData(),
        sa.Column("id", sa.BIGINT, primary_key=True, autoincrement=False),
        sa.Column("user_id", sa.VARCHAR(64), nullable=False),
        sa.Column("amount", sa.DECIMAL(18, 4), nullable=False),
        sa.Column("currency", sa.CHAR(3), nullable=False),
        # ENUM on MySQL/MariaDB, VARCHAR(8) elsewhere (SQLite has no enums).
        sa.Column("kind", sa.Enum("purchase", "refund", name=f"{table}_kind"), nullable=False),
        # sa.DateTime on SQLite stores 'YYYY-MM-DD HH:MM:SS.ffffff' text, so ranges compare as
        # times; MySQL needs fsp=6 or it drops the microseconds.
        sa.Column(
            "created_at",
            sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb"),
            nullable=False,
        ),
        sa.Index(f"ix_{table}_created_at", "created_at"),
    )


def _no_sync(dbapi_connection: Any, _record: Any) -> None:
    """SQLite: commit without fsync (PRAGMA synchronous = OFF)."""
    dbapi_connection.execute("PRAGMA synchronous = OFF")


def create_payments_table(engine: sa.Engine, table: str = "payments") -> None:
    """Create the payments table (and its created_at index) if it does not exist."""
    metadata = sa.MetaData()
    payments_table(table, metadata)
    metadata.create_all(engine, checkfirst=True)


def insert_payments(
    engine: sa.Engine, rows: pd.DataFrame, table: str = "payments", chunk_rows: int = 20_000
) -> None:
    """Insert payment rows (id, user_id, amount, currency, kind, created_at) in one transaction.

    `created_at` is UTC (tz-aware, or naive meaning UTC); `amount` a decimal string, Decimal or
    number. Chunked executemany, so memory stays flat for big tables.
    """
    t = payments_table(table)
    created = pd.to_datetime(rows["created_at"])
    if created.dt.tz is not None:
        created = created.dt.tz_convert("UTC").dt.tz_localize(None)
    created_py = [ts.to_pydatetime() for ts in created]
    ids = [int(x) for x in rows["id"]]
    amounts = [x if isinstance(x, Decimal) else Decimal(str(x)) for x in rows["amount"]]
    users = [str(x) for x in rows["user_id"]]
    currencies = [str(x) for x in rows["currency"]]
    kinds = [str(x) for x in rows["kind"]]
    with engine.begin() as conn:
        for lo in range(0, len(ids), chunk_rows):
            hi = min(lo + chunk_rows, len(ids))
            conn.execute(
                t.insert(),
                [
                    {
                        "id": ids[i],
                        "user_id": users[i],
                        "amount": amounts[i],
                        "currency": currencies[i],
                        "kind": kinds[i],
                        "created_at": created_py[i],
                    }
                    for i in range(lo, hi)
                ],
            )


# --------------------------------------------------------------------------- helpers


def _controls(
    out_dir: Path, seed: int, prof: Profile, start: date, tz: ZoneInfo, currency: str, drift: bool
) -> tuple[dict[str, dict[int, float]], Any]:
    """(the ledger of the world in `out_dir` if it is this world, the fakes' factors now)."""
    meta = {"seed": seed, "profile": prof.name}
    ledger: dict[str, dict[int, float]] = {}
    if (out_dir / "world.json").exists():
        old = load_meta(out_dir)
        have = (old["seed"], old["profile"], old["start"], old["report_timezone"],
                old["report_currency"], old.get("drift", False))  # fmt: skip
        if have == (seed, prof.name, start.isoformat(), tz.key, currency, drift):
            ledger = loop.read_ledger(out_dir)
    now = loop.current_factors(out_dir, meta, entities_of(seed, prof))
    return ledger, now


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _utc_offset_us(tz: ZoneInfo, t_us: int) -> int:
    """The timezone's UTC offset at an instant, in microseconds."""
    offset = datetime.fromtimestamp(t_us / US_PER_SECOND, tz).utcoffset()
    return 0 if offset is None else int(offset.total_seconds()) * US_PER_SECOND


def _offset_str(offset_us: int) -> str:
    sign = "+" if offset_us >= 0 else "-"
    minutes = abs(offset_us) // (60 * US_PER_SECOND)
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def _money(minor: int, digits: int) -> str:
    """Minor units (cents, won) as a decimal string in the currency's digits: 12345 -> '123.45'."""
    return format(Decimal(minor).scaleb(-digits), "f")


def _fmt(x: Decimal) -> str:
    return format(x, "f")


@dataclass
class _Users:
    """All users of the world: legacy ones first (indices < n_legacy), then installs by day."""

    key: npt.NDArray[np.uint64]
    install_us: IntArray  # UTC microseconds; legacy: 0
    day: IntArray  # install day index; legacy: -1
    group: IntArray  # campaign index, n_campaigns for organic, -1 for legacy
    ad: IntArray  # ad index; -1 for organic and legacy
    has_cuid: BoolArray
    os: npt.NDArray[np.str_]
    country: npt.NDArray[np.str_]
    af_suffix: IntArray
    n_legacy: int


class _Events:
    """One log day's events, collected as arrays (peer -1: none; premium -1: not a match)."""

    def __init__(self) -> None:
        self.parts: list[tuple[IntArray, IntArray, IntArray, IntArray]] = []

    def add(
        self, t_us: Any, user: IntArray, peer: IntArray | None = None, premium: int = -1
    ) -> None:
        n = len(user)
        self.parts.append(
            (
                np.asarray(t_us, dtype=np.int64),
                user,
                np.full(n, -1, dtype=np.int64) if peer is None else peer,
                np.full(n, premium, dtype=np.int64),
            )
        )

    def sorted(self) -> tuple[IntArray, IntArray, IntArray, IntArray]:
        """(ts, user, peer, premium) in time order (stable, so ties keep insertion order)."""
        cols = [np.concatenate([p[k] for p in self.parts]) for k in range(4)]
        order = np.argsort(cols[0], kind="stable")
        return cols[0][order], cols[1][order], cols[2][order], cols[3][order]


@dataclass
class _Payments:
    """Payments (purchases and refunds) before the world's end, sorted by time: ids are 1..n."""

    user: IntArray
    t_us: IntArray
    day: IntArray
    refund: BoolArray
    currency: npt.NDArray[np.str_]
    minor: IntArray  # positive, in minor units of `currency`
    usd_cents: IntArray


class _World:
    """One build: simulates day by day, then writes every file into `root`."""

    def __init__(
        self,
        root: Path,
        seed: int,
        start: date,
        end: date,
        profile: Profile,
        tz: ZoneInfo,
        report_currency: str,
        anomalies: Sequence[Anomaly] = (),
    ) -> None:
        self.root = root
        self.seed = seed
        self.start = start
        self.end = end
        self.profile = profile
        self.tz = tz
        self.report_currency = report_currency
        self.n_days = (end - start).days + 1
        self.dates = [start + timedelta(days=i) for i in range(self.n_days + 2)]
        # Local midnights of start .. end+2 in UTC microseconds (DST-safe via zoneinfo).
        self.bounds = np.array(
            [
                int(datetime.combine(d, time(0), tzinfo=tz).timestamp()) * US_PER_SECOND
                for d in self.dates
            ],
            dtype=np.int64,
        )
        self.cutoff_us = int(self.bounds[self.n_days])
        self.ent: Entities = entities_of(seed, profile)
        self.n_campaigns = len(self.ent.campaigns)
        self.n_ads = len(self.ent.ads)
        # Anomalies planted for the watch (issue 19): none by default, and then no change at all.
        self.anomalies = Planted(
            anomalies,
            [c.campaign_id for c in self.ent.campaigns],
            [c.platform for c in self.ent.campaigns],
            np.array([a.campaign_index for a in self.ent.ads], dtype=np.int64),
        )
        self.set_loop(ledger={}, now=np.ones(self.n_ads), drift=False)

    def set_loop(
        self, ledger: dict[str, dict[int, float]], now: FloatArray, *, drift: bool
    ) -> None:
        """The closed loop's inputs (adperf.sandbox.loop): the budget factors days were built
        with, the fakes' factors for new days, and whether the world drifts."""
        self.ledger, self.now_factors, self.drift_on = ledger, now, drift
        self.drift = loop.build_drift(self.seed, self.profile, self.ent, drift)
        self.old_world: Path | None = None
        self.old_logs: Path | None = None

    def reuse_past(self, old_world: Path) -> None:
        """Take what `old_world` (this world, shorter) already wrote of its days instead of
        writing it again: link its log files (a day's log depends on that day and the days
        before it only, and writing them is most of an extension's time), and keep the rows of
        its per-user files (`_write_rows`)."""
        self.old_world = old_world
        self.old_logs = old_world / "logs"

    # ----------------------------------------------------------------- simulation

    def build(self) -> dict[str, Any]:
        self._fx()
        self._delivery_and_users()
        self.anomalies.after_delivery(self)  # planted CPI spikes, platform install claims
        self._purchases()
        self._payments()
        self._reported()
        self._write_ads()
        self._write_ad_daily()
        self._write_installs()
        self._write_payments()
        self._write_fx()
        self._write_logs()
        self._write_truth()
        self._write_loop()
        meta = self._meta()
        # world.json last: a folder without it is never mistaken for a complete world.
        (self.root / "world.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        return meta

    def _day_rng(self, i: int, purpose: str) -> np.random.Generator:
        return rng_for(self.seed, self.dates[i].toordinal(), purpose)

    def _fx(self) -> None:
        """KRW per USD: ~1,380 with a mean-reverting random walk; rates rounded to 12 digits."""
        base = math.log(KRW_PER_USD_BASE)
        x = base + float(rng_for(self.seed, self.start.toordinal(), "fx-start").normal(0, 0.02))
        self.usd_per_krw_str: list[str] = []
        for i in range(self.n_days + 1):
            if i:
                x += float(self._day_rng(i, "fx").normal(0.0, 0.004)) - 0.03 * (x - base)
            self.usd_per_krw_str.append(f"{math.exp(-x):.12g}")
        self.usd_per_krw = np.array([float(s) for s in self.usd_per_krw_str])
        # Report-currency rates (units of report currency per unit), as written in fx.csv.
        if self.report_currency == "USD":
            self.rate_str = {"USD": ["1"] * (self.n_days + 1), "KRW": self.usd_per_krw_str}
        else:
            self.rate_str = {
                "USD": [f"{1.0 / float(s):.12g}" for s in self.usd_per_krw_str],
                "KRW": ["1"] * (self.n_days + 1),
            }

    def _delivery_and_users(self) -> None:
        """Per day: each ad's delivery, then its installs (users) and the organic installs."""
        ads, camps = self.ent.ads, self.ent.campaigns
        ad_camp = np.array([a.campaign_index for a in ads], dtype=np.int64)
        budget = np.array([a.daily_budget for a in ads])
        cpm = np.array([a.cpm for a in ads])
        ctr = np.array([a.ctr for a in ads])
        pause = np.array([a.pause_rate for a in ads])
        cpi = np.array([c.true_cpi for c in camps])[ad_camp]
        scale = np.array([10 ** CURRENCY_DIGITS[camps[c].currency] for c in ad_camp], dtype=float)
        camp_os = np.array([c.os for c in camps])
        camp_country = np.array([c.country for c in camps])
        payer_rate = np.array(
            [c.truth.payer_rate for c in camps] + [self.ent.organic.truth.payer_rate]
        )
        org = self.ent.organic

        spend_minor, impressions, clicks, reported = [], [], [], []
        users: dict[str, list[Any]] = {
            k: []
            for k in ("key", "us", "day", "group", "ad", "cuid", "os", "country", "af", "payer")
        }
        self.factors = np.ones((self.n_days, self.n_ads))
        self.fatigue = np.ones((self.n_days, self.n_campaigns))
        for i in range(self.n_days):
            d = self.dates[i]
            rng = self._day_rng(i, "delivery")
            # Closed loop: the budget the fakes hold (0 when paused), late launches, fatigue.
            factor = loop.factors_for(d.isoformat(), self.ledger, self.now_factors)
            self.factors[i] = factor
            self.fatigue[i] = self.drift.fatigue(i)
            factor = np.where(self.drift.launched(i)[ad_camp], factor, 0.0)
            paused = (rng.random(self.n_ads) < pause) | (factor <= 0)
            weekend = 1.1 if d.weekday() >= 5 else 1.0
            raw = budget * factor * weekend * rng.lognormal(-0.02, 0.2, self.n_ads)
            raw = raw * self.anomalies.delivery(d)  # planted budget changes (1.0: none)
            minor = np.where(paused, 0, np.rint(raw * scale)).astype(np.int64)
            spend = minor / scale
            live = minor > 0
            installs = rng.poisson(spend / (cpi * loop.cpi_factor(factor))).astype(np.int64)
            imps = rng.poisson(spend / cpm * 1000.0).astype(np.int64)
            clk = rng.binomial(imps, ctr).astype(np.int64)
            # Platforms over-report installs against the MMP (modelled conversions, view-through).
            rep = np.rint(installs * rng.lognormal(math.log(1.12), 0.08, self.n_ads)).astype(
                np.int64
            ) + rng.poisson(0.2, self.n_ads)
            clk = np.maximum(clk, np.maximum(installs, rep) + 1 + rng.poisson(3.0, self.n_ads))
            imps = np.maximum(imps, clk * 20 + rng.integers(0, 50, self.n_ads))
            spend_minor.append(minor)
            impressions.append(np.where(live, imps, 0))
            clicks.append(np.where(live, clk, 0))
            reported.append(np.where(live, rep, 0))

            rng = self._day_rng(i, "users")
            paid_ad = np.repeat(np.arange(self.n_ads, dtype=np.int64), installs)
            n_org = int(rng.poisson(self.profile.installs_per_day * org.share))
            n = len(paid_ad) + n_org
            group = np.concatenate([ad_camp[paid_ad], np.full(n_org, self.n_campaigns)])
            lo, hi = int(self.bounds[i]), int(self.bounds[i + 1])
            users["key"].append(rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True))
            users["us"].append(lo + np.floor(rng.random(n) * (hi - lo)).astype(np.int64))
            users["day"].append(np.full(n, i, dtype=np.int64))
            users["group"].append(group)
            users["ad"].append(np.concatenate([paid_ad, np.full(n_org, -1, dtype=np.int64)]))
            users["cuid"].append(rng.random(n) >= CUID_MISSING_RATE)
            users["af"].append(rng.integers(0, 10**7, n).astype(np.int64))
            day_rate = payer_rate * np.append(self.fatigue[i], 1.0)
            users["payer"].append(rng.random(n) < day_rate[group])
            org_os = np.where(rng.random(n_org) < 0.45, "ios", "android")
            org_country = np.where(
                rng.random(n_org) < org.kr_share,
                "KR",
                rng.choice(USD_COUNTRIES, n_org, p=USD_COUNTRY_WEIGHTS),
            )
            users["os"].append(np.concatenate([camp_os[ad_camp[paid_ad]], org_os]))
            users["country"].append(np.concatenate([camp_country[ad_camp[paid_ad]], org_country]))

        self.spend_minor = np.stack(spend_minor)  # (day, ad)
        self.impressions = np.stack(impressions)
        self.clicks = np.stack(clicks)
        self.installs_reported = np.stack(reported)
        self.ad_scale = scale
        self.ad_camp = ad_camp

        leg = self.ent.legacy
        nl = len(leg.user_key)
        cat = {k: np.concatenate(v) for k, v in users.items()}
        self.users = _Users(
            key=np.concatenate([leg.user_key, cat["key"]]),
            install_us=np.concatenate([np.zeros(nl, dtype=np.int64), cat["us"]]),
            day=np.concatenate([np.full(nl, -1, dtype=np.int64), cat["day"]]),
            group=np.concatenate([np.full(nl, -1, dtype=np.int64), cat["group"]]),
            ad=np.concatenate([np.full(nl, -1, dtype=np.int64), cat["ad"]]),
            has_cuid=np.concatenate([np.zeros(nl, dtype=bool), cat["cuid"]]),
            os=np.concatenate([leg.os, cat["os"]]),
            country=np.concatenate([leg.country, cat["country"]]),
            af_suffix=np.concatenate([np.zeros(nl, dtype=np.int64), cat["af"]]),
            n_legacy=nl,
        )
        self.payer = np.concatenate([np.zeros(nl, dtype=bool), cat["payer"]])
        self.uid = np.array([f"usr_{int(k):016x}" for k in self.users.key], dtype=object)
        self.uid_arrow = pa.array(self.uid, type=pa.string())
        if len(set(self.uid)) != len(self.uid):  # 64 random bits: never in practice, but loud
            raise RuntimeError("sandbox: user id collision; pick another seed")
        # Index of the first installed user of each day (users are grouped by day).
        self.day_first = self.users.n_legacy + np.concatenate(
            [[0], np.cumsum(np.bincount(cat["day"], minlength=self.n_days))]
        ).astype(np.int64)

    def _purchases(self) -> None:
        """Each day's payers draw their whole purchase timeline; legacy users pay now and then."""
        camps = self.ent.campaigns
        truths = [c.truth for c in camps] + [self.ent.organic.truth]

        def col(name: str) -> FloatArray:
            return np.array([getattr(t, name) for t in truths], dtype=np.float64)

        fast_share, fast_mean, slow_mean = (
            col("fast_share"),
            col("fast_mean_days"),
            col("slow_mean_days"),
        )
        r, alpha, a, b = col("r"), col("alpha"), col("a"), col("b")
        p, q, v = col("p"), col("q"), col("v")
        u = self.users
        who_l, t_l, cents_l, refund_l, refund_t_l = [], [], [], [], []
        for i in range(self.n_days):
            rng = self._day_rng(i, "purchases")
            lo, hi = int(self.day_first[i]), int(self.day_first[i + 1])
            payers = lo + np.flatnonzero(self.payer[lo:hi])
            g = u.group[payers]
            t0 = sample_first_delay(rng, fast_share[g], fast_mean[g], slow_mean[g])
            owner, t_rep = sample_repeat_times(
                rng, t0, np.full(len(payers), HORIZON_DAYS), r[g], alpha[g], a[g], b[g]
            )
            who = np.concatenate([np.arange(len(payers), dtype=np.int64), owner])
            t_days = np.concatenate([t0, t_rep])
            nu = sample_nu(rng, q[g], v[g])
            cents = sample_amount_cents(rng, p[g][who], nu[who])
            refund = rng.random(len(who)) < REFUND_RATE
            refund_delay = rng.uniform(1.0, 5.0, len(who))
            t_us = u.install_us[payers][who] + np.rint(t_days * US_PER_DAY).astype(np.int64)
            who_l.append(payers[who])
            t_l.append(t_us)
            cents_l.append(cents)
            refund_l.append(refund)
            refund_t_l.append(t_us + np.rint(refund_delay * US_PER_DAY).astype(np.int64))

            leg = self.ent.legacy
            rng = self._day_rng(i, "legacy")
            k = int(rng.poisson(self.profile.legacy_purchases_per_day)) if len(leg.weight) else 0
            lw = rng.choice(len(leg.weight), k, p=leg.weight) if k else np.zeros(0, np.int64)
            lo_us, hi_us = int(self.bounds[i]), int(self.bounds[i + 1])
            t_us = lo_us + np.floor(rng.random(k) * (hi_us - lo_us)).astype(np.int64)
            who_l.append(lw.astype(np.int64))
            t_l.append(t_us)
            cents_l.append(
                sample_amount_cents(rng, np.full(k, self.ent.organic.truth.p), leg.nu[lw])
            )
            refund_l.append(rng.random(k) < REFUND_RATE)
            refund_t_l.append(
                t_us + np.rint(rng.uniform(1.0, 5.0, k) * US_PER_DAY).astype(np.int64)
            )
        self.purchase_user = np.concatenate(who_l)
        self.purchase_us = np.concatenate(t_l)
        self.purchase_cents = np.concatenate(cents_l)
        self.purchase_refund = np.concatenate(refund_l)
        self.refund_us = np.concatenate(refund_t_l)

    def _payments(self) -> None:
        """Purchases and refunds before the end, in currency, sorted: payment ids follow time."""
        keep = self.purchase_us < self.cutoff_us
        user = self.purchase_user[keep]
        t_us = self.purchase_us[keep]
        cents = self.purchase_cents[keep]
        day = np.searchsorted(self.bounds, t_us, side="right") - 1
        currency = np.where(self.users.country[user] == "KR", "KRW", "USD")
        # KR users pay in whole won at the day's rate; everyone else in USD cents.
        won = np.rint(cents / 100.0 / self.usd_per_krw[day]).astype(np.int64)
        minor = np.where(currency == "KRW", won, cents)
        refunded = self.purchase_refund[keep] & (self.refund_us[keep] < self.cutoff_us)
        r_us = self.refund_us[keep][refunded]
        all_user = np.concatenate([user, user[refunded]])
        all_us = np.concatenate([t_us, r_us])
        all_refund = np.concatenate([np.zeros(len(user), bool), np.ones(len(r_us), bool)])
        all_minor = np.concatenate([minor, minor[refunded]])
        all_cur = np.concatenate([currency, currency[refunded]])
        all_cents = np.concatenate([cents, cents[refunded]])
        # Ties in time are broken by content, so the order never depends on how far we simulated.
        order = np.lexsort((all_minor, all_refund, self.users.key[all_user], all_us))
        t_sorted = all_us[order]
        self.pay = _Payments(
            user=all_user[order],
            t_us=t_sorted,
            day=(np.searchsorted(self.bounds, t_sorted, side="right") - 1).astype(np.int64),
            refund=all_refund[order],
            currency=all_cur[order],
            minor=all_minor[order],
            usd_cents=all_cents[order],
        )
        # First purchase per user, to know who counts as a payer on a given day.
        self.first_pay_us = np.full(len(self.users.key), _NEVER, dtype=np.int64)
        np.minimum.at(self.first_pay_us, user, t_us)

    def _reported(self) -> None:
        """The platform's claimed purchases: ad users' purchases within 7 days, noised."""
        pay, u = self.pay, self.users
        sel = (~pay.refund) & (u.ad[pay.user] >= 0)
        sel &= pay.t_us - u.install_us[pay.user] <= REPORTED_WINDOW_DAYS * US_PER_DAY
        idx = pay.day[sel] * self.n_ads + u.ad[pay.user[sel]]
        size = self.n_days * self.n_ads
        count = np.bincount(idx, minlength=size).reshape(self.n_days, self.n_ads)
        usd = np.bincount(idx, weights=pay.usd_cents[sel], minlength=size).reshape(
            self.n_days, self.n_ads
        )
        krw = np.array([self.ent.campaigns[c].currency == "KRW" for c in self.ad_camp])
        self.purchases_reported = np.zeros_like(count, dtype=np.int64)
        self.value_minor = np.zeros_like(count, dtype=np.int64)
        for i in range(self.n_days):
            rng = self._day_rng(i, "reported")
            n = rng.poisson(count[i] * 1.15).astype(np.int64)
            cents = usd[i] * rng.lognormal(math.log(1.05), 0.1, self.n_ads)
            live = self.spend_minor[i] > 0
            self.purchases_reported[i] = np.where(live, n, 0)
            value = np.where(krw, np.rint(cents / 100.0 / self.usd_per_krw[i]), np.rint(cents))
            self.value_minor[i] = np.where(live & (n > 0), value, 0).astype(np.int64)

    # ----------------------------------------------------------------- files

    def _write_ads(self) -> None:
        with open(self.root / "ads.csv", "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(
                ["platform", "account_id", "campaign_id", "campaign_name", "adset_id",
                 "adset_name", "ad_id", "ad_name", "currency"]
            )  # fmt: skip
            for ad in self.ent.ads:
                c = self.ent.campaigns[ad.campaign_index]
                w.writerow(
                    [c.platform, c.account_id, c.campaign_id, c.name, ad.adset_id,
                     ad.adset_name, ad.ad_id, ad.ad_name, c.currency]
                )  # fmt: skip

    def _write_ad_daily(self) -> None:
        rows: dict[str, list[Any]] = {k: [] for k in _AD_DAILY_SCHEMA.names}
        for i in range(self.n_days):
            ds = self.dates[i].isoformat()
            for j in np.flatnonzero(self.impressions[i] > 0):
                ad = self.ent.ads[j]
                c = self.ent.campaigns[ad.campaign_index]
                digits = CURRENCY_DIGITS[c.currency]
                rows["date"].append(ds)
                rows["platform"].append(c.platform)
                rows["account_id"].append(c.account_id)
                rows["campaign_id"].append(c.campaign_id)
                rows["campaign_name"].append(c.name)
                rows["adset_id"].append(ad.adset_id)
                rows["adset_name"].append(ad.adset_name)
                rows["ad_id"].append(ad.ad_id)
                rows["ad_name"].append(ad.ad_name)
                rows["impressions"].append(int(self.impressions[i, j]))
                rows["clicks"].append(int(self.clicks[i, j]))
                rows["installs_reported"].append(int(self.installs_reported[i, j]))
                rows["purchases_reported"].append(int(self.purchases_reported[i, j]))
                rows["purchase_value"].append(_money(int(self.value_minor[i, j]), digits))
                rows["spend"].append(_money(int(self.spend_minor[i, j]), digits))
        pq.write_table(pa.table(rows, schema=_AD_DAILY_SCHEMA), self.root / "ad_daily.parquet")

    def _installed_order(self) -> IntArray:
        """Indices of installed (non-legacy) users in install-time order."""
        u = self.users
        idx = np.arange(u.n_legacy, len(u.key), dtype=np.int64)
        return idx[np.argsort(u.install_us[idx], kind="stable")]

    def _restricted(self) -> BoolArray:
        """Per user: a paid install the MMP reports as 'restricted' (see RESTRICTED_EVERY)."""
        u = self.users
        paid: BoolArray = (u.group >= 0) & (u.group < self.n_campaigns)
        chosen: BoolArray = u.af_suffix % RESTRICTED_EVERY == 0
        chosen |= self.anomalies.restricted(u.day, u.af_suffix, self.dates)
        return paid & chosen

    def _mmp_campaign_ids(self) -> npt.NDArray[np.object_]:
        """Per user, the campaign id as the MMP attributes it: the campaign's, 'organic' or
        'restricted' (legacy users: '')."""
        nc = self.n_campaigns
        names = np.array(
            [c.campaign_id for c in self.ent.campaigns] + [ORGANIC, RESTRICTED, ""], dtype=object
        )
        group = self.users.group
        slot = np.where(self._restricted(), nc + 1, np.where(group >= 0, group, nc + 2))
        picked: npt.NDArray[np.object_] = names[slot]
        return picked

    def _write_installs(self) -> None:
        idx = self._installed_order()
        u = self.users
        self._write_rows(
            "installs.parquet",
            idx,
            self._past(idx),
            self._installs_rows,
            u.install_us,
            "install_time",
        )

    def _installs_rows(self, idx: IntArray) -> pa.Table:
        u, ents = self.users, self.ent
        hidden = self._restricted()[idx]
        ads = [
            ents.ads[a] if a >= 0 and not h else None
            for a, h in zip(u.ad[idx], hidden, strict=True)
        ]
        camps = [ents.campaigns[ad.campaign_index] if ad else None for ad in ads]
        media = [
            RESTRICTED_MEDIA_SOURCE if h else (_MEDIA_SOURCE[c.platform] if c else ORGANIC)
            for c, h in zip(camps, hidden, strict=True)
        ]
        table = pa.table(
            {
                "appsflyer_id": [
                    f"{int(t) // 1000}-{int(s):07d}"
                    for t, s in zip(u.install_us[idx], u.af_suffix[idx], strict=True)
                ],
                "customer_user_id": [self.uid[k] if u.has_cuid[k] else None for k in idx],
                "install_time": pa.array(u.install_us[idx], pa.timestamp("us", tz="UTC")),
                "app_id": [APP_IDS[str(o)] for o in u.os[idx]],
                "media_source": media,
                "campaign": [c.name if c else None for c in camps],
                "campaign_id": [c.campaign_id if c else None for c in camps],
                "adset": [ad.adset_name if ad else None for ad in ads],
                "adset_id": [ad.adset_id if ad else None for ad in ads],
                "ad": [ad.ad_name if ad else None for ad in ads],
                "ad_id": [ad.ad_id if ad else None for ad in ads],
                "country_code": [str(c) for c in u.country[idx]],
                "platform": [str(o) for o in u.os[idx]],
            },
            schema=_INSTALLS_SCHEMA,
        )
        return table

    def _past(self, installed: IntArray) -> int:
        """How many of `installed` (users in install order) installed on the days the old world
        (`reuse_past`) already had; 0 without one."""
        if self.old_world is None:
            return 0
        old_days = (date.fromisoformat(load_meta(self.old_world)["end"]) - self.start).days + 1
        return int(np.count_nonzero(self.users.day[installed] < old_days))

    def _write_rows(
        self,
        rel: str,
        idx: IntArray,
        past: int,
        rows: Callable[[IntArray], pa.Table],
        key: npt.NDArray[Any],
        key_column: str,
    ) -> None:
        """Write `rows(idx)` (one row per user of `idx`) as the Parquet file `rel`.

        The first `past` users of `idx` are those of the days the old world already had: their
        rows depend on the user alone (drawn when the user installed, never on the world's end),
        so when the old world's file holds exactly them (its `key_column` is `key[idx[:past]]`)
        they are taken from it as they are and only the new days' rows are built. The file is
        the same bytes as a build from scratch (tests/sandbox/test_world.py).
        """
        old = None
        if self.old_world is not None and past > 0 and (self.old_world / rel).is_file():
            old = pq.read_table(self.old_world / rel)
            known = old.column(key_column).combine_chunks() if old.num_rows == past else None
            if known is None or not known.equals(pa.array(key[idx[:past]], known.type)):
                old = None  # not this world's rows: built whole
        if old is None:
            table = rows(idx)
        else:
            new = rows(idx[past:]).cast(old.schema)
            table = pa.concat_tables([old, new]).combine_chunks()
        pq.write_table(table, self.root / rel)

    def _write_payments(self) -> None:
        """payments.sqlite: the old world's file (`reuse_past`) with the new days' rows appended
        when it holds exactly the old days' payments, else every row written."""
        pay = self.pay
        path = self.root / "payments.sqlite"
        past = self._past_payments()
        if past and self.old_world is not None:
            # A payment before the old world's end is one of its rows, under the same id (ids
            # follow time, ties broken by content): the old rows are the new file's first rows.
            shutil.copyfile(self.old_world / "payments.sqlite", path)
        new = slice(past, len(pay.t_us))
        digits = np.where(pay.currency[new] == "KRW", 0, 2)
        rows = pd.DataFrame(
            {
                "id": np.arange(past + 1, len(pay.t_us) + 1, dtype=np.int64),
                "user_id": self.uid[pay.user[new]],
                "amount": [
                    _money(int(m), int(d)) for m, d in zip(pay.minor[new], digits, strict=True)
                ],
                "currency": pay.currency[new],
                "kind": np.where(pay.refund[new], "refund", "purchase"),
                "created_at": pd.to_datetime(pay.t_us[new], unit="us", utc=True),
            }
        )
        engine = sa.create_engine(f"sqlite:///{path}")
        # No fsync, as build_world publishes the world (it is rebuilt from its seed): its
        # commits wait for no disk (every loop day extends the file).
        sa.event.listen(engine, "connect", _no_sync)
        try:
            create_payments_table(engine)
            insert_payments(engine, rows)
        finally:
            engine.dispose()

    def _past_payments(self) -> int:
        """How many payments (in id order) the old world's payments.sqlite holds, when they are
        exactly this world's payments of the old world's days (its row count, and its last row
        as this world has it); 0 without an old world or when its file is not such a prefix."""
        if self.old_world is None or not (self.old_world / "payments.sqlite").is_file():
            return 0
        old_days = (date.fromisoformat(load_meta(self.old_world)["end"]) - self.start).days + 1
        past = int(np.count_nonzero(self.pay.day < old_days))
        if past == 0:
            return 0
        con = sqlite3.connect(f"file:{self.old_world / 'payments.sqlite'}?mode=ro", uri=True)
        try:
            (count,) = con.execute("SELECT count(*) FROM payments").fetchone()
            last = con.execute(
                "SELECT id, user_id, currency, kind, created_at FROM payments "
                "ORDER BY id DESC LIMIT 1"
            ).fetchone()
        except sqlite3.DatabaseError:
            return 0
        finally:
            con.close()
        k = past - 1
        created = datetime(1970, 1, 1) + timedelta(microseconds=int(self.pay.t_us[k]))  # UTC
        expected = (
            past,
            str(self.uid[self.pay.user[k]]),
            str(self.pay.currency[k]),
            "refund" if self.pay.refund[k] else "purchase",
            created.strftime("%Y-%m-%d %H:%M:%S.%f"),
        )
        return past if count == past and tuple(last) == expected else 0

    def _write_fx(self) -> None:
        with open(self.root / "fx.csv", "w", newline="", encoding="utf-8") as fh:
            fh.write("date,currency,rate\n")
            fh.writelines(
                f"{self.dates[i].isoformat()},{cur},{self.rate_str[cur][i]}\n"
                for i in range(self.n_days + 1)
                for cur in SUPPORTED_CURRENCIES
            )

    def _write_logs(self) -> None:
        """One gzip JSON-lines file per report day: sessions, premium and plain matches."""
        (self.root / "logs").mkdir()
        u, pay = self.users, self.pay
        nl = u.n_legacy
        pay_day_first = np.searchsorted(pay.day, np.arange(self.n_days + 1))
        for i in range(self.n_days):
            old = None if self.old_logs is None else self.old_logs / f"{self.dates[i]}.jsonl.gz"
            if old is not None and old.exists():
                os.link(old, self.root / "logs" / old.name)
                continue
            rng = self._day_rng(i, "logs")
            lo_us, hi_us = int(self.bounds[i]), int(self.bounds[i + 1])
            first, last = int(self.day_first[i]), int(self.day_first[i + 1])
            # Returning users: retention decays with age since install; legacy users drift by.
            age = i - u.day[nl:first]
            back = nl + np.flatnonzero(rng.random(first - nl) < 0.03 + 0.4 * age**-0.7)
            legacy = np.flatnonzero(rng.random(nl) < 0.04)
            returning = np.concatenate([back, legacy])
            installs = np.arange(first, last, dtype=np.int64)
            p_lo, p_hi = int(pay_day_first[i]), int(pay_day_first[i + 1])
            buy = p_lo + np.flatnonzero(~pay.refund[p_lo:p_hi])
            buyer, buy_us = pay.user[buy], pay.t_us[buy]

            ev = _Events()
            ev.add(lo_us + np.floor(rng.random(len(returning)) * (hi_us - lo_us)), returning)
            ev.add(u.install_us[installs], installs)
            # A buyer opens the app 1-20 minutes before paying (or at some point since midnight).
            gap = np.minimum(
                rng.integers(60, 1200, len(buy)) * US_PER_SECOND,
                np.floor((buy_us - lo_us) * rng.random(len(buy))).astype(np.int64),
            )
            before = buy_us - gap
            ev.add(before, buyer)
            pool = np.unique(np.concatenate([returning, installs, buyer]))
            if len(pool) >= 2:
                paid = self.first_pay_us[pool] < hi_us
                # A premium match needs a partner; most partners never pay themselves.
                peer = self._pick_partner(rng, buyer, pool, paid)
                after = np.minimum(
                    buy_us + rng.integers(1, 30, len(buy)) * US_PER_SECOND, hi_us - 1
                )
                ev.add(after, buyer, peer, premium=1)
                m = int(rng.poisson(0.6 * len(pool)))
                a = rng.integers(0, len(pool), m)
                b = (a + rng.integers(1, len(pool), m)) % len(pool)
                t_plain = lo_us + np.floor(rng.random(m) * (hi_us - lo_us))
                ev.add(t_plain, pool[a], pool[b], premium=0)
            lines = self._log_lines(*ev.sorted())
            self._corrupt(rng, lines)
            path = self.root / "logs" / f"{self.dates[i].isoformat()}.jsonl.gz"
            # mtime=0 and no file name in the header: the same day gives the same bytes. Level 1:
            # level 9 took over half of a medium build for ~25% smaller files.
            with (
                open(path, "wb") as raw,
                gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=1) as gz,
            ):
                gz.write(("\n".join(lines) + "\n").encode("utf-8"))

    @staticmethod
    def _pick_partner(
        rng: np.random.Generator, buyer: IntArray, pool: IntArray, paid: BoolArray
    ) -> IntArray:
        """For each buyer a partner from the day's pool: ~70% non-payers, never the buyer."""
        want_free = rng.random(len(buyer)) < 0.7
        u = rng.random(len(buyer))
        free, payers = pool[~paid], pool[paid]
        use_free = (want_free & (len(free) > 0)) | (len(payers) == 0)
        peer = np.where(
            use_free,
            free[np.minimum((u * len(free)).astype(np.int64), max(len(free) - 1, 0))]
            if len(free)
            else -1,
            payers[np.minimum((u * len(payers)).astype(np.int64), max(len(payers) - 1, 0))]
            if len(payers)
            else -1,
        ).astype(np.int64)
        clash = peer == buyer
        pos = np.searchsorted(pool, buyer[clash])
        peer[clash] = pool[(pos + 1) % len(pool)]
        return peer

    def _log_lines(
        self, t_us: IntArray, user: IntArray, peer: IntArray, premium: IntArray
    ) -> list[str]:
        """JSON lines with ISO-8601 timestamps in the report timezone (offset per instant)."""
        if len(t_us) and _utc_offset_us(self.tz, int(t_us[0])) == _utc_offset_us(
            self.tz, int(t_us[-1])
        ):
            off = np.full(len(t_us), _utc_offset_us(self.tz, int(t_us[0])), dtype=np.int64)
        else:  # a DST change inside the day: look each instant up
            off = np.array([_utc_offset_us(self.tz, int(t)) for t in t_us], dtype=np.int64)
        local = np.datetime_as_string((t_us + off).astype("datetime64[us]"), unit="us")
        uniq, inverse = np.unique(off, return_inverse=True)
        offsets = pa.array([_offset_str(int(o)) for o in uniq], pa.string()).take(pa.array(inverse))
        # Arrow's element-wise joins build the lines in C: ~5x faster than f-strings per line.
        stamp = pc.binary_join_element_wise(pa.array(local), pa.array(offsets), "")
        who = self.uid_arrow.take(pa.array(user))
        other = self.uid_arrow.take(pa.array(np.maximum(peer, 0)))
        flag = pc.if_else(pa.array(premium > 0), "true", "false")
        session = pc.binary_join_element_wise(
            '{"ts": "', stamp, '", "event": "session_start", "user_id": "', who, '"}', ""
        )
        match = pc.binary_join_element_wise(
            '{"ts": "', stamp, '", "event": "match", "user_id": "', who, '", "peer_id": "',
            other, '", "props": {"premium": ', flag, "}}", "",
        )  # fmt: skip
        lines: list[str] = pc.if_else(pa.array(premium < 0), session, match).to_pylist()
        return lines

    @staticmethod
    def _corrupt(rng: np.random.Generator, lines: list[str]) -> None:
        """~0.1% malformed lines, at least one truncated and one without user_id per file."""
        if len(lines) < 2:
            lines.append('{"ts": "')
            return
        k = max(2, round(0.001 * len(lines)))
        for n, j in enumerate(rng.choice(len(lines), k, replace=False)):
            line = lines[int(j)]
            if n % 2 == 0:  # cut anywhere before the closing brace: never valid JSON
                lines[int(j)] = line[: int(rng.integers(1, len(line) - 1))]
            else:
                head, _, rest = line.partition(', "user_id": "')
                lines[int(j)] = head + rest[rest.index('"') + 1 :]

    def _write_truth(self) -> None:
        """The true parameters, and per day the exact spend, installs and revenue to check."""
        (self.root / "truth").mkdir()
        self._write_params()
        self._write_users()
        self._write_user_value()
        u, pay = self.users, self.pay
        nc = self.n_campaigns
        # Attribution class of each user as the MMP shows it: the campaign, organic (nc) or
        # restricted (nc + 2); of each payment: its user's class when the MMP row carries the
        # Customer User ID, -1 (unattributed, stored at nc + 1) for unmatched and legacy users.
        seen = np.where(self._restricted(), nc + 2, u.group)
        cls = np.where(u.has_cuid[pay.user], seen[pay.user], -1)
        signed = np.where(pay.refund, -pay.minor, pay.minor)
        n_cls = nc + 3  # campaigns, organic, unattributed, restricted
        slot = np.where(cls < 0, nc + 1, cls)
        rev: dict[str, IntArray] = {}
        for cur in SUPPORTED_CURRENCIES:
            sel = pay.currency == cur
            rev[cur] = (
                np.bincount(
                    pay.day[sel] * n_cls + slot[sel],
                    weights=signed[sel],
                    minlength=self.n_days * n_cls,
                )
                .astype(np.int64)
                .reshape(self.n_days, n_cls)
            )
        buy = (~pay.refund) & (cls >= 0)
        pairs = np.unique(np.stack([pay.day[buy], cls[buy], pay.user[buy]]), axis=1)
        payers = np.bincount(pairs[0] * n_cls + pairs[1], minlength=self.n_days * n_cls).reshape(
            self.n_days, n_cls
        )
        installed = u.day >= 0
        installs = np.bincount(
            u.day[installed] * n_cls + seen[installed], minlength=self.n_days * n_cls
        ).reshape(self.n_days, n_cls)
        camp_spend = np.zeros((self.n_days, nc), dtype=np.int64)
        np.add.at(camp_spend.T, self.ad_camp, self.spend_minor.T)

        def money(cur: str, minor: int) -> Decimal:
            return Decimal(minor).scaleb(-CURRENCY_DIGITS[cur], context=_EXACT)

        def report(i: int, amounts: dict[str, int]) -> Decimal:
            total = Decimal(0)
            for cur, minor in amounts.items():
                if minor == 0:  # keeps zero-only sums free of the rates' trailing digits
                    continue
                total = _EXACT.add(
                    total, _EXACT.multiply(money(cur, minor), Decimal(self.rate_str[cur][i]))
                )
            return total

        camp_rows: list[list[str]] = []
        total_rows: list[list[str]] = []
        for i in range(self.n_days):
            ds = self.dates[i].isoformat()
            for c in self.ent.campaigns:
                spend = money(c.currency, int(camp_spend[i, c.index]))
                camp_rows.append(
                    [ds, c.platform, c.account_id, c.campaign_id, c.currency,
                     _fmt(spend),
                     _fmt(_EXACT.multiply(spend, Decimal(self.rate_str[c.currency][i]))),
                     str(installs[i, c.index]), str(payers[i, c.index]),
                     _fmt(report(i, {cur: int(rev[cur][i, c.index]) for cur in rev}))]
                )  # fmt: skip
            organic = report(i, {cur: int(rev[cur][i, nc]) for cur in rev})
            zero = _money(0, CURRENCY_DIGITS[self.report_currency])
            camp_rows.append(
                [ds, ORGANIC, "", ORGANIC, self.report_currency, zero, zero,
                 str(installs[i, nc]), str(payers[i, nc]), _fmt(organic)]
            )  # fmt: skip
            restricted = report(i, {cur: int(rev[cur][i, nc + 2]) for cur in rev})
            camp_rows.append(
                [ds, RESTRICTED, "", RESTRICTED, self.report_currency, zero, zero,
                 str(installs[i, nc + 2]), str(payers[i, nc + 2]), _fmt(restricted)]
            )  # fmt: skip
            attributed = report(i, {cur: int(rev[cur][i, :nc].sum()) for cur in rev})
            unattributed = report(i, {cur: int(rev[cur][i, nc + 1]) for cur in rev})
            total = report(i, {cur: int(rev[cur][i].sum()) for cur in rev})
            total_rows.append(
                [ds, _fmt(total), _fmt(attributed), _fmt(organic), _fmt(unattributed),
                 _fmt(restricted)]
            )  # fmt: skip
        _write_csv(
            self.root / "truth" / "campaign_daily.csv",
            ["date", "platform", "account_id", "campaign_id", "currency_original",
             "spend_original", "spend_report", "installs", "payers", "revenue_report"],
            camp_rows,
        )  # fmt: skip
        _write_csv(
            self.root / "truth" / "daily_totals.csv",
            ["date", "total_payments_report", "attributed_report", "organic_report",
             "unattributed_report", "restricted_report"],
            total_rows,
        )  # fmt: skip

    def _write_params(self) -> None:
        def entry(truth: Any, purchases: float, revenue: float) -> dict[str, Any]:
            gross = truth.payer_rate * revenue
            return {
                "payer_rate": truth.payer_rate,
                "first_purchase_delay": {
                    "fast_share": truth.fast_share,
                    "fast_mean_days": truth.fast_mean_days,
                    "slow_mean_days": truth.slow_mean_days,
                    "max_days": 60.0,
                },
                "bgnbd": {"r": truth.r, "alpha": truth.alpha, "a": truth.a, "b": truth.b},
                "gammagamma": {"p": truth.p, "q": truth.q, "v": truth.v},
                "mean_purchase_usd": truth.mean_purchase_usd,
                "refund_rate": REFUND_RATE,
                "horizon_days": TRUTH_HORIZON_DAYS,
                "expected_purchases_per_payer": purchases,
                "expected_revenue_per_install_usd": gross,
                "expected_net_revenue_per_install_usd": gross * (1.0 - REFUND_RATE),
            }

        def long_run(key: int, truth: Any) -> dict[str, float]:
            # The same truth at 365 days ([ltv] horizon_days' default; `horizon_days` and
            # `true_roas` are the 180-day truth), so the demo's 365-day pROAS has a like-for-like
            # truth: `true_roas_365d`. A quarter of
            # the 180-day draws (Monte Carlo error ~1%): every world build pays for it.
            revenue = revenue_per_payer_365d(self.seed, key, truth, self.profile)
            net = truth.payer_rate * revenue * (1.0 - REFUND_RATE)
            return {"expected_net_revenue_per_install_usd_365d": net}

        params: dict[str, Any] = {}
        for c in self.ent.campaigns:
            e = entry(c.truth, c.purchases_per_payer_180d, c.revenue_per_payer_180d_usd)
            e.update(long_run(c.index, c.truth))
            params[c.campaign_id] = {
                "platform": c.platform,
                "app_campaign": c.app_campaign,
                "account_id": c.account_id,
                "campaign_name": c.name,
                "currency": c.currency,
                "country": c.country,
                "os": c.os,
                "tier": c.tier,
                "true_cpi": c.true_cpi,
                "true_cpi_usd": c.true_cpi_usd,
                **e,
                "true_roas": e["expected_net_revenue_per_install_usd"] / c.true_cpi_usd,
                "true_roas_365d": e["expected_net_revenue_per_install_usd_365d"] / c.true_cpi_usd,
            }
        o = self.ent.organic
        params[ORGANIC] = {
            "platform": ORGANIC,
            "account_id": "",
            "currency": None,
            "organic_share": o.share,
            "true_cpi": None,
            "true_cpi_usd": None,
            **entry(o.truth, o.purchases_per_payer_180d, o.revenue_per_payer_180d_usd),
            **long_run(self.n_campaigns, o.truth),
        }
        path = self.root / "truth" / "params.json"
        path.write_text(json.dumps(params, indent=2) + "\n", encoding="utf-8")

    def _write_users(self) -> None:
        nl, installed = self.users.n_legacy, self._installed_order()
        idx = np.concatenate([np.arange(nl, dtype=np.int64), installed])
        past = nl + self._past(installed) if self.old_world is not None else 0
        self._write_rows("truth/users.parquet", idx, past, self._users_rows, self.uid, "user_id")

    def _users_rows(self, idx: IntArray) -> pa.Table:
        u, nl = self.users, self.users.n_legacy
        leg_days = self.ent.legacy.days_before_start
        camp_ids = [c.campaign_id for c in self.ent.campaigns] + [ORGANIC]
        seen = self._mmp_campaign_ids()
        table = pa.table(
            {
                "user_id": self.uid[idx].tolist(),
                "appsflyer_id": [
                    None if k < nl else f"{int(u.install_us[k]) // 1000}-{int(u.af_suffix[k]):07d}"
                    for k in idx
                ],
                "install_date": [
                    (self.start - timedelta(days=int(leg_days[k]))).isoformat()
                    if k < nl
                    else self.dates[int(u.day[k])].isoformat()
                    for k in idx
                ],
                "platform": [str(o) for o in u.os[idx]],
                # As the MMP attributes the install ('restricted' for a withheld network) ...
                "campaign_id": [None if k < nl else str(seen[k]) for k in idx],
                # ... and the campaign that really acquired the user.
                "true_campaign_id": [None if k < nl else camp_ids[int(u.group[k])] for k in idx],
                "has_cuid": u.has_cuid[idx],
                "legacy": idx < nl,
                "country_code": [str(c) for c in u.country[idx]],
            },
            schema=_USERS_SCHEMA,
        )
        return table

    def _write_user_value(self) -> None:
        """truth/user_value.parquet: each installed user's net revenue (USD) within
        TRUTH_HORIZON_DAYS of the install, from the purchase timeline the world drew at install
        (it runs past the world's end), refunded purchases netted out.

        Summed over a campaign's cohorts it is what those users really brought; its distance
        to the campaign's expected value (params.json) is the sampling noise of the users the
        campaign happened to acquire, which no forecast can know in advance.
        """
        u, nl = self.users, self.users.n_legacy
        who = self.purchase_user
        installed = who >= nl
        age_us = self.purchase_us - u.install_us[who]
        within = installed & (age_us < int(TRUTH_HORIZON_DAYS * US_PER_DAY))
        net = np.where(self.purchase_refund, 0, self.purchase_cents)
        self.user_value_cents = np.bincount(who[within], weights=net[within], minlength=len(u.key))
        idx = self._installed_order()
        self._write_rows(
            "truth/user_value.parquet",
            idx,
            self._past(idx),
            self._user_value_rows,
            self.uid,
            "user_id",
        )

    def _user_value_rows(self, idx: IntArray) -> pa.Table:
        u, cents = self.users, self.user_value_cents
        camp_ids = [c.campaign_id for c in self.ent.campaigns] + [ORGANIC]
        seen = self._mmp_campaign_ids()
        table = pa.table(
            {
                "user_id": self.uid[idx].tolist(),
                "install_date": [self.dates[int(u.day[k])].isoformat() for k in idx],
                "campaign_id": seen[idx].tolist(),  # as the MMP attributes it
                "true_campaign_id": [camp_ids[int(u.group[k])] for k in idx],
                "net_revenue_180d_usd": cents[idx] / 100.0,
            }
        )
        return table

    def _write_loop(self) -> None:
        """controls.json (the ledger of each day's budget factors) and
        truth/campaign_value_daily.csv: per campaign and day the budget factor, the fatigue,
        true spend (report currency), true installs, the true 365-day value per install (USD)
        and the true 365-day ROAS of that day's installs."""
        loop.write_ledger(
            self.root,
            {self.dates[i].isoformat(): loop.sparse(self.factors[i]) for i in range(self.n_days)},
        )
        params = json.loads((self.root / "truth" / "params.json").read_text(encoding="utf-8"))
        u, nc = self.users, self.n_campaigns
        paid = (u.day >= 0) & (u.group >= 0) & (u.group < nc)
        installs = np.bincount(
            u.day[paid] * nc + u.group[paid], minlength=self.n_days * nc
        ).reshape(self.n_days, nc)
        spend = np.zeros((self.n_days, nc))
        np.add.at(spend.T, self.ad_camp, (self.spend_minor / self.ad_scale).T)
        # Installs per unit of spend relative to the true CPI: sum(spend / cpi factor) / spend.
        cheap = np.zeros((self.n_days, nc))
        launched = np.stack([self.drift.launched(i) for i in range(self.n_days)])
        factor = np.where(launched[:, self.ad_camp], self.factors, 0.0)
        np.add.at(
            cheap.T, self.ad_camp, (self.spend_minor / self.ad_scale / loop.cpi_factor(factor)).T
        )
        budget = np.zeros((self.n_days, nc))
        base = np.array([a.daily_budget for a in self.ent.ads])
        np.add.at(budget.T, self.ad_camp, (factor * base).T)
        base_c = np.zeros(nc)
        np.add.at(base_c, self.ad_camp, base)
        rows: list[list[str]] = []
        for i in range(self.n_days):
            ds = self.dates[i].isoformat()
            for c in self.ent.campaigns:
                k = c.index
                rate = float(self.rate_str[c.currency][i])
                p = params[c.campaign_id]
                value = p["expected_net_revenue_per_install_usd_365d"] * self.fatigue[i, k]
                ratio = cheap[i, k] / spend[i, k] if spend[i, k] > 0 else 1.0
                rows.append(
                    [ds, c.platform, c.campaign_id, f"{budget[i, k] / base_c[k]:.6g}",
                     f"{self.fatigue[i, k]:.6g}", f"{spend[i, k] * rate:.6f}",
                     str(int(installs[i, k])), f"{value:.6g}",
                     f"{p['true_roas_365d'] * self.fatigue[i, k] * ratio:.6g}"]
                )  # fmt: skip
        _write_csv(
            self.root / "truth" / "campaign_value_daily.csv",
            ["date", "platform", "campaign_id", "budget_factor", "fatigue", "spend_report",
             "installs", "value_per_install_365d_usd", "true_roas_365d"],
            rows,
        )  # fmt: skip

    def _meta(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "profile": self.profile.name,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "report_timezone": self.tz.key,
            "report_currency": self.report_currency,
            "apps": list(APP_IDS.values()),
            "facebook_accounts": [
                {
                    "account_id": a.account_id,
                    "name": a.name,
                    "currency": a.currency,
                    "timezone_name": a.timezone or self.tz.key,
                }
                for a in self.ent.accounts
                if a.platform == platforms.FACEBOOK
            ],
            "google_ads_customers": [
                {
                    "customer_id": a.account_id,
                    "descriptive_name": a.name,
                    "currency_code": a.currency,
                    "time_zone": a.timezone or self.tz.key,
                }
                for a in self.ent.accounts
                if a.platform == platforms.GOOGLE_ADS
            ],
            # TikTok advertisers and Apple Ads orgs, as their APIs describe them.
            "tiktok_advertisers": [
                {
                    "advertiser_id": a.account_id,
                    "name": a.name,
                    "currency": a.currency,
                    "timezone": a.timezone or self.tz.key,
                }
                for a in self.ent.accounts
                if a.platform == platforms.TIKTOK
            ],
            "apple_ads_orgs": [
                {
                    "orgId": int(a.account_id),
                    "orgName": a.name,
                    "currency": a.currency,
                    "timeZone": a.timezone or self.tz.key,
                    "paymentModel": "LOC",
                    "roleNames": ["API Account Read Only"],
                }
                for a in self.ent.accounts
                if a.platform == platforms.APPLE_ADS
            ],
            # Google App campaigns: the fake Google Ads reports them at campaign level only.
            "google_app_campaign_ids": [
                c.campaign_id for c in self.ent.campaigns if c.app_campaign
            ],
            "media_source_map": dict(MEDIA_SOURCE_MAP),
            # Only a drifting world says so: world.json of the default world stays as it was.
            **({"drift": True} if self.drift_on else {}),
            **(
                {"anomalies": [a.to_json() for a in self.anomalies.anomalies]}
                if self.anomalies.anomalies
                else {}
            ),
        }


def _write_csv(path: Path, header: Sequence[str], rows: list[list[str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


_S, _I = pa.string(), pa.int64()
_AD_DAILY_SCHEMA = pa.schema(
    [
        ("date", _S), ("platform", _S), ("account_id", _S), ("campaign_id", _S),
        ("campaign_name", _S), ("adset_id", _S), ("adset_name", _S), ("ad_id", _S),
        ("ad_name", _S), ("impressions", _I), ("clicks", _I), ("installs_reported", _I),
        ("purchases_reported", _I), ("purchase_value", _S), ("spend", _S),
    ]
)  # fmt: skip
_INSTALLS_SCHEMA = pa.schema(
    [
        ("appsflyer_id", _S), ("customer_user_id", _S),
        ("install_time", pa.timestamp("us", tz="UTC")), ("app_id", _S), ("media_source", _S),
        ("campaign", _S), ("campaign_id", _S), ("adset", _S), ("adset_id", _S), ("ad", _S),
        ("ad_id", _S), ("country_code", _S), ("platform", _S),
    ]
)  # fmt: skip
_USERS_SCHEMA = pa.schema(
    [
        ("user_id", _S), ("appsflyer_id", _S), ("install_date", _S), ("platform", _S),
        ("campaign_id", _S), ("true_campaign_id", _S), ("has_cuid", pa.bool_()),
        ("legacy", pa.bool_()),
        ("country_code", _S),
    ]
)  # fmt: skip
