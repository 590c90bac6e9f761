"""Shared by the fault tests and their worker subprocess: config, planted secrets, comparisons."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import luigi
import pandas as pd
from luigi.task_register import Register

END = dt.date(2026, 11, 20)
DAY = END.isoformat()

# Known values planted in the environment of a run; every sink is searched for them. The API
# tokens must be the ones the sandbox's fakes accept (tasks/config.py SANDBOX_*); the HMAC key
# and the Slack token are ours.
HMAC_KEY = "planted-HMAC-key-7f3a91c2e5b84d60"
SLACK_TOKEN = "xoxb-planted-slack-token-5e1d2c3b4a"


def planted() -> dict[str, str]:
    """The secret environment of a sandbox run, as ADPERF_* variables."""
    from tasks import config

    return {
        "ADPERF_HMAC_KEY": HMAC_KEY,
        "ADPERF_FACEBOOK_TOKEN": config.SANDBOX_FACEBOOK_TOKEN,
        "ADPERF_MMP_TOKEN": config.SANDBOX_MMP_TOKEN,
        "ADPERF_GOOGLE_ADS_DEVELOPER_TOKEN": config.SANDBOX_GOOGLE_ADS_DEVELOPER_TOKEN,
    }


@contextlib.contextmanager
def planted_env(*, slack: bool = False) -> Iterator[dict[str, str]]:
    """Set the planted secrets (and the Slack token if `slack`) for the block only."""
    env = planted() | ({"ADPERF_SLACK_TOKEN": SLACK_TOKEN} if slack else {})
    saved = {k: os.environ.get(k) for k in [*env, "ADPERF_SLACK_TOKEN"]}
    os.environ.pop("ADPERF_SLACK_TOKEN", None)
    os.environ.update(env)
    try:
        yield env
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def configure(root: Path, warehouse_url: str | None = None, slack_url: str | None = None) -> None:
    """Point every adperf section into `root` (a tiny sandbox run) and reset luigi's caches."""
    cfg = luigi.configuration.get_config()
    values = {
        "adperf": {
            "sandbox": "true",
            "data_root": str(root / "lake"),
            "warehouse_url": warehouse_url or f"sqlite:///{root / 'warehouse.db'}",
            "report_timezone": "Asia/Seoul",
            "report_currency": "USD",
        },
        "sandbox": {"root": str(root / "world"), "profile": "tiny", "seed": "7"},
        "slack": {"outbox": str(root / "outbox"), "channel": "#marketing-daily"},
    }
    if slack_url:
        values["slack"]["base_url"] = slack_url
    for section, opts in values.items():
        for key, value in opts.items():
            cfg.set(section, key, value)
    Register.clear_instance_cache()


def build(*tasks: luigi.Task, workers: int = 1) -> luigi.execution_summary.LuigiRunResult:
    """Run tasks with the local scheduler (DailyReport of END by default)."""
    from tasks.load import DailyReport

    return luigi.build(
        list(tasks) or [DailyReport(date=END)],
        local_scheduler=True,
        detailed_summary=True,
        workers=workers,
    )


def copy_run(src: Path, dst: Path, *, drop: tuple[str, ...] = ()) -> Path:
    """Copy a run root (world, lake; not the warehouse or the outbox) without `drop` paths."""
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src / "world", dst / "world")
    shutil.copytree(src / "lake", dst / "lake")
    for rel in drop:
        shutil.rmtree(dst / "lake" / rel)
    return dst


def lake_parquet(root: Path) -> dict[str, bytes]:
    """Every complete partition's data file, by path relative to the lake, as bytes."""
    lake = root / "lake"
    return {
        str(p.relative_to(lake)): p.read_bytes()
        for p in sorted(lake.rglob("part-0.parquet"))
        if not any(part.startswith("_tmp-") for part in p.relative_to(lake).parts)
    }


def warehouse_rows(url: str) -> dict[str, pd.DataFrame]:
    """Every report table, sorted by all columns, values normalized (exact decimals as text)."""
    from adperf import warehouse

    engine = warehouse.make_engine(url)
    try:
        out = {}
        for name in warehouse.REPORT_TABLES:
            df = warehouse.read_table(engine, name)
            for col in df.columns:
                df[col] = [_norm(v) for v in df[col]]
            out[name] = df.sort_values(list(df.columns), kind="stable").reset_index(drop=True)
        return out
    finally:
        engine.dispose()


def _norm(v: object) -> object:
    if v is None or (isinstance(v, float) and v != v):
        return None
    if isinstance(v, Decimal):
        return f"{v:.6f}"
    if isinstance(v, float):
        return round(v, 4)  # MySQL FLOAT is single precision
    if isinstance(v, dt.datetime):
        return v.date().isoformat()
    if isinstance(v, dt.date):
        return v.isoformat()
    return v


def assert_same_warehouse(got: dict[str, pd.DataFrame], want: dict[str, pd.DataFrame]) -> None:
    """Row for row: the same rows in every report table (and some rows at all)."""
    assert sum(len(df) for df in want.values()) > 0
    for name, expected in want.items():
        pd.testing.assert_frame_equal(got[name], expected, check_dtype=False, obj=name)


def assert_no_report_rows_but_the_ltv_model(url: str) -> None:
    """After a killed load of the day: no report row and no day marker; only ltv_model holds
    the row LtvModel loaded before (its own transaction and marker), without the backtest the
    killed load was bringing."""
    import sqlalchemy as sa

    from adperf import warehouse

    engine = warehouse.make_engine(url)
    try:
        assert not warehouse.is_loaded(engine, DAY)
        assert warehouse.is_loaded(engine, DAY, "ltv_model")
        with engine.connect() as conn:
            for name, table in warehouse.REPORT_TABLES.items():
                n = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
                assert n == (1 if name == "ltv_model" else 0), f"{name}: {n} rows"
        model = warehouse.read_table(engine, "ltv_model").iloc[0]
        assert str(model["date"]) == DAY and pd.isna(model["backtest_mape"])
        assert "backtest_model" not in str(model["params"])
    finally:
        engine.dispose()
