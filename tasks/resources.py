"""Where each source lives: production endpoints from luigi.cfg, or the sandbox's local fakes.

The sandbox swaps only these values (URLs, paths, connection strings); every task runs the same
code either way.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adperf.errors import ConfigError
from tasks import config


@dataclass(frozen=True)
class Resources:
    """The resolved endpoint of every source and sink."""

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


_lock = threading.Lock()
_sandbox: dict[str, Any] = {}


def resources(day: dt.date | None = None) -> Resources:
    """The endpoints for this process; in the sandbox, the world covers `day` and fakes run."""
    if config.adperf().sandbox:
        return _sandbox_resources(day)
    sec = config.secrets()
    res = Resources(
        graph_url=config.facebook().graph_url,
        facebook_account_ids=config.csv_list(config.facebook().ad_account_ids),
        google_ads_endpoint=config.google_ads().endpoint,
        google_ads_customer_ids=config.csv_list(config.google_ads().customer_ids),
        google_ads_login_customer_id=config.google_ads().login_customer_id,
        google_ads_insecure=False,
        mmp_base_url=config.mmp().base_url,
        mmp_app_ids=config.csv_list(config.mmp().app_ids),
        media_source_map=None,
        payments_url=sec.payments_url,
        logs_path=config.logs().path,
        fx_path=config.fx().rates_path,
        slack_base_url=config.slack().base_url,
    )
    for value, key in (
        (res.payments_url, "[payments] url or ADPERF_PAYMENTS_URL"),
        (res.logs_path, "[logs] path"),
        (res.fx_path, "[fx] rates_path"),
    ):
        if not value:
            raise ConfigError(f"{key} is not set. Fix: set it in luigi.cfg (or [adperf] sandbox)")
    return res


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
            report_timezone=config.adperf().report_timezone,
        )
    return meta


def _sandbox_resources(day: dt.date | None) -> Resources:
    from adperf.sandbox.world import load_meta

    root = world_dir()
    with _lock:
        meta = load_meta(root) if (root / "world.json").exists() else None
        if meta is None or (day is not None and dt.date.fromisoformat(meta["end"]) < day):
            meta = ensure_sandbox_world(day or _yesterday())
        if _sandbox.get("key") != (str(root.resolve()), meta["end"]):
            _stop_fakes()
            _start_fakes(root, meta)
        return _sandbox["resources"]  # type: ignore[no-any-return]


def _start_fakes(root: Path, meta: dict[str, Any]) -> None:
    import pandas as pd

    from adperf.sandbox.fake_google_ads import FakeGoogleAds, rows_from_ad_daily
    from adperf.sandbox.fake_graph import FakeGraphApi
    from adperf.sandbox.fake_mmp import FakeMmp

    ad_rows = pd.read_parquet(root / "ad_daily.parquet")
    graph = FakeGraphApi(
        accounts=meta["facebook_accounts"],
        ad_rows=ad_rows[ad_rows["platform"] == "facebook"],
        access_token=config.SANDBOX_FACEBOOK_TOKEN,
        # Async report runs complete at the first poll: the sandbox never waits.
        async_polls_until_done=0,
    )
    google = FakeGoogleAds(
        customers=meta.get("google_ads_customers", []),
        ad_rows=rows_from_ad_daily(ad_rows, meta.get("google_app_campaign_ids", [])),
        developer_token=config.SANDBOX_GOOGLE_ADS_DEVELOPER_TOKEN,
    )
    mmp = FakeMmp(
        installs=pd.read_parquet(root / "installs.parquet"), api_token=config.SANDBOX_MMP_TOKEN
    )
    graph_url, mmp_url, google_endpoint = graph.start(), mmp.start(), google.start()
    slack_base = config.slack().base_url
    _sandbox.update(
        key=(str(root.resolve()), meta["end"]),
        servers=[graph, mmp, google],
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
        ),
    )


def _stop_fakes() -> None:
    # A forked luigi worker inherits the parent's fakes without their serving threads: stopping
    # them there would wait forever (HTTPServer.shutdown) or break the parent's gRPC server.
    if _sandbox.get("pid") == os.getpid():
        for server in _sandbox.get("servers", []):
            server.stop()
    _sandbox.clear()


def _yesterday() -> dt.date:
    from adperf.timeutil import zone

    now = dt.datetime.now(zone(config.adperf().report_timezone))
    return now.date() - dt.timedelta(days=1)
