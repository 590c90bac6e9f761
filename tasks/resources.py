"""Where each source lives: production endpoints from luigi.cfg, or the sandbox's local fakes.

The sandbox swaps only these values (URLs, paths, connection strings); every task runs the same
code either way.
"""

from __future__ import annotations

import datetime as dt
import fcntl
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

    from adperf.sandbox.fake_graph import FakeGraphApi
    from adperf.sandbox.fake_mmp import FakeMmp

    ad_rows = pd.read_parquet(root / "ad_daily.parquet")
    graph = FakeGraphApi(
        accounts=meta["facebook_accounts"],
        ad_rows=ad_rows,
        access_token=config.SANDBOX_FACEBOOK_TOKEN,
    )
    mmp = FakeMmp(
        installs=pd.read_parquet(root / "installs.parquet"), api_token=config.SANDBOX_MMP_TOKEN
    )
    graph_url, mmp_url = graph.start(), mmp.start()
    slack_base = config.slack().base_url
    _sandbox.update(
        key=(str(root.resolve()), meta["end"]),
        servers=[graph, mmp],
        resources=Resources(
            graph_url=graph_url,
            facebook_account_ids=[a["account_id"] for a in meta["facebook_accounts"]],
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
    for server in _sandbox.get("servers", []):
        server.stop()
    _sandbox.clear()


def _yesterday() -> dt.date:
    from adperf.timeutil import zone

    now = dt.datetime.now(zone(config.adperf().report_timezone))
    return now.date() - dt.timedelta(days=1)
