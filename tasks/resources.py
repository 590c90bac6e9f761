"""Where each source lives: production endpoints from luigi.cfg, or the sandbox's local fakes.

The sandbox swaps only these values (URLs, paths, connection strings); every task runs the same
code either way.
"""

from __future__ import annotations

import atexit
import datetime as dt
import fcntl
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import luigi

from adperf import platforms
from adperf.errors import ConfigError
from tasks import config


@dataclass(frozen=True)
class Resources:
    """The resolved endpoint of every source and sink (the sandbox's, all at once)."""

    graph_url: str
    facebook_account_ids: list[str]
    google_ads_endpoint: str
    google_ads_customer_ids: list[str]
    google_ads_login_customer_id: str
    google_ads_insecure: bool  # plain gRPC without OAuth: only the sandbox's loopback fake
    mmp_base_url: str
    mmp_app_ids: list[str]
    media_source_map: dict[str, str] | None
    payments_url: str
    logs_path: str
    fx_path: str
    slack_base_url: str
    tiktok_base_url: str = ""
    tiktok_advertiser_ids: list[str] = field(default_factory=list)
    apple_ads_api_url: str = ""
    apple_ads_token_url: str = ""
    apple_ads_org_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class FacebookEndpoint:
    """Where Facebook's Marketing API is and which ad accounts to read."""

    graph_url: str
    account_ids: list[str]


@dataclass(frozen=True)
class GoogleAdsEndpoint:
    """Where the Google Ads API is and which customers to read."""

    endpoint: str
    customer_ids: list[str]
    login_customer_id: str
    insecure: bool  # plain gRPC without OAuth: only the sandbox's loopback fake


@dataclass(frozen=True)
class TikTokEndpoint:
    """Where TikTok's Business API is and which advertisers to read."""

    base_url: str
    advertiser_ids: list[str]


@dataclass(frozen=True)
class AppleAdsEndpoint:
    """Where Apple Ads' API and OAuth token endpoint are and which orgs to read."""

    api_url: str
    token_url: str
    org_ids: list[str]


@dataclass(frozen=True)
class MmpEndpoint:
    """Where the MMP's Pull API is and which apps to read."""

    base_url: str
    app_ids: list[str]
    media_source_map: dict[str, str] | None  # None: adperf.sources.mmp's default names


_lock = threading.Lock()
_sandbox: dict[str, Any] = {}
_sandbox_atexit: list[bool] = []
#: `thread` serves the sandbox's fakes from threads of this process (debugging only: a process
#: that forks luigi workers after starting gRPC's server threads can hang them); the default,
#: `process`, serves them from a separate spawned process (adperf.sandbox.loopback.FakeProcess).
FAKES_ENV = "ADPERF_SANDBOX_FAKES"

# Each source is resolved on its own, when a task asks for it: in production a missing key
# fails only the tasks that read that source (a team without an MMP still fits customer LTV on
# its payments). In the sandbox every endpoint comes from the world's fakes, started at once.


def facebook(day: dt.date | None = None) -> FacebookEndpoint:
    """Facebook's Graph API and ad accounts ([facebook] graph_url, ad_account_ids)."""
    if config.adperf().sandbox:
        res = _sandbox_resources(day)
        return FacebookEndpoint(res.graph_url, res.facebook_account_ids)
    cfg = config.facebook()
    return FacebookEndpoint(
        graph_url=_required(cfg.graph_url, "[facebook] graph_url", "the Graph API base URL"),
        account_ids=_required_list(
            cfg.ad_account_ids, "[facebook] ad_account_ids", "the ad account ids, comma-separated"
        ),
    )


def google_ads(day: dt.date | None = None) -> GoogleAdsEndpoint:
    """The Google Ads API and customers ([google_ads] endpoint, customer_ids, login_customer_id)."""
    if config.adperf().sandbox:
        res = _sandbox_resources(day)
        return GoogleAdsEndpoint(
            res.google_ads_endpoint,
            res.google_ads_customer_ids,
            res.google_ads_login_customer_id,
            res.google_ads_insecure,
        )
    cfg = config.google_ads()
    return GoogleAdsEndpoint(
        endpoint=_required(cfg.endpoint, "[google_ads] endpoint", "googleads.googleapis.com"),
        customer_ids=_required_list(
            cfg.customer_ids, "[google_ads] customer_ids", "the customer ids, comma-separated"
        ),
        login_customer_id=cfg.login_customer_id,
        insecure=False,
    )


def tiktok(day: dt.date | None = None) -> TikTokEndpoint:
    """TikTok's Business API and advertisers ([tiktok] base_url, advertiser_ids)."""
    if config.adperf().sandbox:
        res = _sandbox_resources(day)
        return TikTokEndpoint(res.tiktok_base_url, res.tiktok_advertiser_ids)
    cfg = config.tiktok()
    return TikTokEndpoint(
        base_url=_required(cfg.base_url, "[tiktok] base_url", "https://business-api.tiktok.com"),
        advertiser_ids=_required_list(
            cfg.advertiser_ids, "[tiktok] advertiser_ids", "the advertiser ids, comma-separated"
        ),
    )


def apple_ads(day: dt.date | None = None) -> AppleAdsEndpoint:
    """Apple Ads' API, token endpoint and orgs ([apple_ads] api_url, oauth_url, org_ids)."""
    if config.adperf().sandbox:
        res = _sandbox_resources(day)
        return AppleAdsEndpoint(
            res.apple_ads_api_url, res.apple_ads_token_url, res.apple_ads_org_ids
        )
    cfg = config.apple_ads()
    return AppleAdsEndpoint(
        api_url=_required(cfg.api_url, "[apple_ads] api_url", "https://api.searchads.apple.com"),
        token_url=_required(
            cfg.oauth_url, "[apple_ads] oauth_url", "https://appleid.apple.com/auth/oauth2/token"
        ),
        org_ids=_required_list(cfg.org_ids, "[apple_ads] org_ids", "the org ids, comma-separated"),
    )


def mmp(day: dt.date | None = None) -> MmpEndpoint:
    """The MMP's Pull API and apps ([mmp] base_url, app_ids)."""
    if config.adperf().sandbox:
        res = _sandbox_resources(day)
        return MmpEndpoint(res.mmp_base_url, res.mmp_app_ids, res.media_source_map)
    cfg = config.mmp()
    return MmpEndpoint(
        base_url=_required(cfg.base_url, "[mmp] base_url", "the Pull API base URL"),
        app_ids=_required_list(cfg.app_ids, "[mmp] app_ids", "the app ids, comma-separated"),
        media_source_map=None,
    )


def payments_url(day: dt.date | None = None) -> str:
    """SQLAlchemy URL of the payments database (ADPERF_PAYMENTS_URL, else [payments] url)."""
    if config.adperf().sandbox:
        return _sandbox_resources(day).payments_url
    return _required(
        config.secrets().payments_url,
        "[payments] url or ADPERF_PAYMENTS_URL",
        "an SQLAlchemy URL such as mysql+pymysql://user@host/shop (a password only in the "
        "environment variable)",
    )


def logs_path(day: dt.date | None = None) -> str:
    """Glob of a day's server-log files, {date} = YYYY-MM-DD ([logs] path)."""
    if config.adperf().sandbox:
        return _sandbox_resources(day).logs_path
    return _required(config.logs().path, "[logs] path", "a glob with {date}")


def fx_rates_path(day: dt.date | None = None) -> str:
    """The FX rates CSV ([fx] rates_path)."""
    if config.adperf().sandbox:
        return _sandbox_resources(day).fx_path
    return _required(config.fx().rates_path, "[fx] rates_path", "a CSV date,currency,rate")


def slack_base_url(day: dt.date | None = None) -> str:
    """Slack's Web API base URL ([slack] base_url)."""
    if config.adperf().sandbox:
        return _sandbox_resources(day).slack_base_url
    return _required(config.slack().base_url, "[slack] base_url", "https://slack.com/api/")


def resources(day: dt.date | None = None) -> Resources:
    """Every endpoint at once; in the sandbox, the world covers `day` and its fakes start.

    For tools that start the sandbox before a run (`adperf demo`, the bench, tests). Tasks ask
    for their own source only (the functions above): in production this raises ConfigError
    for the first source that is not configured.
    """
    if config.adperf().sandbox:
        return _sandbox_resources(day)
    fb, gads, mm = facebook(day), google_ads(day), mmp(day)
    tt, asa = tiktok(day), apple_ads(day)
    return Resources(
        graph_url=fb.graph_url,
        facebook_account_ids=fb.account_ids,
        google_ads_endpoint=gads.endpoint,
        google_ads_customer_ids=gads.customer_ids,
        google_ads_login_customer_id=gads.login_customer_id,
        google_ads_insecure=gads.insecure,
        mmp_base_url=mm.base_url,
        mmp_app_ids=mm.app_ids,
        media_source_map=mm.media_source_map,
        payments_url=payments_url(day),
        logs_path=logs_path(day),
        fx_path=fx_rates_path(day),
        slack_base_url=slack_base_url(day),
        tiktok_base_url=tt.base_url,
        tiktok_advertiser_ids=tt.advertiser_ids,
        apple_ads_api_url=asa.api_url,
        apple_ads_token_url=asa.token_url,
        apple_ads_org_ids=asa.org_ids,
    )


def _required(value: str, key: str, example: str) -> str:
    if not value.strip():
        raise ConfigError(
            f"{key} is not set. Fix: set it in luigi.cfg ({example}), or run the sandbox "
            "([adperf] sandbox = true)"
        )
    return value


def _required_list(value: str, key: str, example: str) -> list[str]:
    return config.csv_list(_required(",".join(config.csv_list(value)), key, example))


def world_dir() -> Path:
    """The sandbox world's folder."""
    return Path(config.sandbox().root)


def ensure_sandbox_world(end: dt.date) -> dict[str, Any]:
    """Build or extend the sandbox world through `end`, under a file lock (workers race)."""
    from adperf.sandbox.world import ensure_world

    root = world_dir()
    root.parent.mkdir(parents=True, exist_ok=True)
    lock_path = root.parent / f".{root.name}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        meta = ensure_world(
            root,
            end=end,
            profile=config.sandbox().profile,
            seed=config.sandbox().seed,
            days=config.sandbox().days or None,
            report_timezone=config.adperf().report_timezone,
            drift=config.sandbox().drift,
        )
    return meta


def _sandbox_resources(day: dt.date | None) -> Resources:
    from adperf.sandbox.world import load_meta

    root = world_dir()
    with _lock:
        meta = load_meta(root) if (root / "world.json").exists() else None
        if meta is None or (day is not None and dt.date.fromisoformat(meta["end"]) < day):
            meta = ensure_sandbox_world(day or _yesterday())
        key = (str(root.resolve()), meta["end"])
        if _sandbox.get("key") != key:
            # Only the same folder: another folder's copy of the world has other payments,
            # logs and ad-object files, which the resources name.
            same_root = (_sandbox.get("key") or ("", ""))[0] == key[0]
            if same_root and _same_world(_sandbox.get("meta"), meta) and _fakes_alive():
                # The same world, longer (a closed loop's next day): the running fakes serve
                # its new files; restarting them cost 2 s a day (a new interpreter, imports).
                _refresh_fakes(root, meta)
                _sandbox.update(key=key, meta=meta)
            else:
                _stop_fakes()
                _start_fakes(root, meta)
        return _sandbox["resources"]  # type: ignore[no-any-return]


def _same_world(old: dict[str, Any] | None, new: dict[str, Any]) -> bool:
    """Whether two world.json contents describe the same world, one possibly longer."""
    if old is None:
        return False
    return {k: v for k, v in old.items() if k != "end"} == {
        k: v for k, v in new.items() if k != "end"
    }


def _fakes_alive() -> bool:
    if _sandbox.get("pid") != os.getpid():
        return False  # a forked worker: the fakes are its parent's
    return all(getattr(s, "alive", lambda: True)() for s in _sandbox.get("stoppable", []))


def _refresh_fakes(root: Path, meta: dict[str, Any]) -> None:
    stoppable = _sandbox["stoppable"]
    if os.environ.get(FAKES_ENV, "process") == "thread":
        refresh_sandbox_fakes(stoppable, root, meta)
    else:
        stoppable[0].apply(refresh_sandbox_fakes, root, meta)


def sandbox_fakes(root: Path, meta: dict[str, Any]) -> list[Any]:
    """The world's fakes, not started: Graph API, MMP, Google Ads, TikTok, Apple Ads (in this
    order).

    Module-level and free of luigi config: the fakes' process (spawn) calls it with the
    arguments it was given, and sees none of the caller's in-memory settings.
    """
    from adperf.sandbox.fake_google_ads import FakeGoogleAds
    from adperf.sandbox.fake_graph import FakeGraphApi
    from adperf.sandbox.fake_mmp import FakeMmp
    from adperf.sources.facebook import PAGE_LIMIT

    rows = _served_rows(root, meta)
    graph = FakeGraphApi(
        accounts=meta["facebook_accounts"],
        ad_rows=rows[platforms.FACEBOOK],
        access_token=config.SANDBOX_FACEBOOK_TOKEN,
        # Async report runs complete at the first poll: the sandbox never waits.
        async_polls_until_done=0,
        # Pages as large as adperf asks for (`limit`), as the real API serves them.
        page_size=PAGE_LIMIT,
        **sandbox_ad_objects(root, meta)[platforms.FACEBOOK],
    )
    google = FakeGoogleAds(
        customers=meta.get("google_ads_customers", []),
        ad_rows=rows[platforms.GOOGLE_ADS],
        developer_token=config.SANDBOX_GOOGLE_ADS_DEVELOPER_TOKEN,
        **sandbox_ad_objects(root, meta)[platforms.GOOGLE_ADS],
    )
    mmp = FakeMmp(installs=rows["mmp"], api_token=config.SANDBOX_MMP_TOKEN)
    return [graph, mmp, google, *sandbox_more_fakes(root, meta, rows)]


def refresh_sandbox_fakes(fakes: Sequence[Any], root: Path, meta: dict[str, Any]) -> None:
    """Running fakes (in sandbox_fakes' order) serve the world's files as they are now: the
    world was extended; its accounts and ad objects are the same (module-level, free of config:
    it runs in the fakes' process)."""
    rows = _served_rows(root, meta)
    graph, mmp, google, tiktok_fake, apple_fake = fakes
    graph.set_rows(rows[platforms.FACEBOOK])
    mmp.set_installs(rows["mmp"])
    google.set_rows(rows[platforms.GOOGLE_ADS])
    tiktok_fake.set_rows(rows[platforms.TIKTOK])
    apple_fake.set_rows(rows[platforms.APPLE_ADS])


def _served_rows(root: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """What each fake serves of the world: delivery per platform, installs ("mmp")."""
    import pandas as pd

    from adperf.sandbox.fake_google_ads import rows_from_ad_daily

    ad_rows = pd.read_parquet(root / "ad_daily.parquet")
    by = {p: ad_rows[ad_rows["platform"] == p] for p in platforms.NAMES}
    by[platforms.GOOGLE_ADS] = rows_from_ad_daily(ad_rows, meta.get("google_app_campaign_ids", []))
    by["mmp"] = pd.read_parquet(root / "installs.parquet")
    return by


def sandbox_more_fakes(root: Path, meta: dict[str, Any], rows: dict[str, Any]) -> list[Any]:
    """The world's TikTok and Apple Ads fakes, not started (module-level, free of config)."""
    from cryptography.hazmat.primitives import serialization

    from adperf.sandbox import fake_apple_ads, fake_tiktok
    from adperf.sandbox.ad_objects import objects_path

    seed, profile = int(meta["seed"]), str(meta["profile"])
    tiktok_fake = fake_tiktok.FakeTikTok(
        advertisers=meta.get("tiktok_advertisers", []),
        ad_rows=rows[platforms.TIKTOK],
        access_token=config.SANDBOX_TIKTOK_TOKEN,
        objects=lambda: fake_tiktok.sandbox_objects(seed, profile),
        objects_path=objects_path(root, meta, platforms.TIKTOK),
    )
    key = serialization.load_pem_private_key(config.SANDBOX_APPLE_ADS_PRIVATE_KEY.encode(), None)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    client_id, team_id, key_id = config.SANDBOX_APPLE_ADS_CLIENT
    apple_fake = fake_apple_ads.FakeAppleAds(
        orgs=meta.get("apple_ads_orgs", []),
        ad_rows=rows[platforms.APPLE_ADS],
        client_id=client_id,
        team_id=team_id,
        key_id=key_id,
        public_key=public.decode(),
        objects=lambda: fake_apple_ads.sandbox_objects(seed, profile),
        objects_path=objects_path(root, meta, platforms.APPLE_ADS),
    )
    return [tiktok_fake, apple_fake]


def _start_fakes(root: Path, meta: dict[str, Any]) -> None:
    from adperf.sandbox.loopback import FakeProcess

    servers: list[Any]
    if os.environ.get(FAKES_ENV, "process") == "thread":
        servers = sandbox_fakes(root, meta)
        urls = [server.start() for server in servers]
        stop: Any = servers
    else:
        process = FakeProcess(sandbox_fakes, root, meta)
        servers, urls, stop = process.proxies(), process.urls, [process]
        if not _sandbox_atexit:
            atexit.register(_stop_fakes)
            _sandbox_atexit.append(True)
    graph_url, mmp_url, google_endpoint, tiktok_url, apple_url = urls
    slack_base = config.slack().base_url
    _sandbox.update(
        key=(str(root.resolve()), meta["end"]),
        meta=meta,
        # The fakes, or in the default mode stand-ins whose method calls run on them.
        servers=servers,
        stoppable=stop,
        pid=os.getpid(),
        resources=Resources(
            graph_url=graph_url,
            facebook_account_ids=[a["account_id"] for a in meta["facebook_accounts"]],
            google_ads_endpoint=google_endpoint,
            google_ads_customer_ids=[
                c["customer_id"] for c in meta.get("google_ads_customers", [])
            ],
            google_ads_login_customer_id="",
            google_ads_insecure=True,
            mmp_base_url=mmp_url,
            mmp_app_ids=list(meta["apps"]),
            media_source_map=dict(meta.get("media_source_map") or {}) or None,
            payments_url=f"sqlite:///{(root / 'payments.sqlite').resolve()}",
            logs_path=str((root / "logs" / "{date}.jsonl.gz").resolve()),
            fx_path=str((root / "fx.csv").resolve()),
            slack_base_url=slack_base,
            tiktok_base_url=tiktok_url,
            tiktok_advertiser_ids=[a["advertiser_id"] for a in meta.get("tiktok_advertisers", [])],
            apple_ads_api_url=apple_url,
            apple_ads_token_url=f"{apple_url}/auth/oauth2/token",
            apple_ads_org_ids=[str(o["orgId"]) for o in meta.get("apple_ads_orgs", [])],
        ),
    )


def sandbox_ad_objects(root: Path, meta: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Keyword arguments of each fake for the world's editable ad objects (adsets, campaigns,
    budgets), kept in a state file beside the world so every process sees the same ones."""
    from adperf.sandbox.ad_objects import objects_path, sandbox_objects

    def initial(platform: str) -> Any:
        return lambda: sandbox_objects(meta)[0 if platform == platforms.FACEBOOK else 1]

    return {
        platform: {"objects": initial(platform), "objects_path": objects_path(root, meta, platform)}
        for platform in (platforms.FACEBOOK, platforms.GOOGLE_ADS)
    }


def _stop_fakes() -> None:
    # A forked luigi worker inherits the parent's fakes without their serving threads (or
    # process): stopping them there would wait forever (HTTPServer.shutdown), break the
    # parent's gRPC server or end the parent's fakes' process.
    if _sandbox.get("pid") == os.getpid():
        for server in _sandbox.get("stoppable", []):
            server.stop()
    _sandbox.clear()


def preload_platform_sdks() -> None:
    """Import the ad platforms' SDKs (and Google Ads' service protos) in this process, once.

    luigi runs each task of a `--workers > 1` run in a process forked from the scheduling
    one; whatever that one has imported, every fork has for free. Without this each AdSpend
    fork imported facebook-business, grpc and google-ads' v-N protos itself: 5-10 s of CPU per
    task, most of the AdSpend time of a cold run. Imports only: no channel, no thread, so
    forking afterwards stays safe for gRPC.
    """
    if _preloaded:
        return
    import importlib

    from adperf.sources import facebook, google_ads  # noqa: F401

    version = google_ads.API_VERSION
    for name in (
        "google.ads.googleads.client",
        "google.ads.googleads.errors",
        "google.ads.googleads.interceptors",
        f"google.ads.googleads.{version}.services.services.google_ads_service",
        f"google.ads.googleads.{version}.services.services.google_ads_service.transports",
    ):
        importlib.import_module(name)
    _preloaded.append(True)


_preloaded: list[bool] = []


def _preload_before_workers_fork(task: luigi.Task, dependency: luigi.Task) -> None:
    # Fired in the scheduling process while luigi walks the graph, before any worker forks;
    # only a graph that still has ad spend to pull pays for the imports.
    if dependency.get_task_family() == "AdSpend":
        preload_platform_sdks()


# Registered by a call: a decorator from luigi (Any to mypy, pyproject.toml) would untype it.
luigi.Task.event_handler(luigi.Event.DEPENDENCY_DISCOVERED)(_preload_before_workers_fork)


def _yesterday() -> dt.date:
    from adperf.timeutil import zone

    now = dt.datetime.now(zone(config.adperf().report_timezone))
    return now.date() - dt.timedelta(days=1)
