"""Deterministic benchmark inputs, generated once per profile and cached under var/bench/<profile>/.

Each input is written to a temp path and renamed, so a killed generation is redone, not reused.
The log day has the sandbox world's line format (adperf/sandbox/world.py `_log_lines`).
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from bench.profiles import REPORT_DAY, SEED, TIMEZONE, BenchProfile

LOG_FILE = "logs/{date}.jsonl.gz"
GRAPH_FILE = "graph.npz"
LTV_PAYMENTS = "ltv_payments.parquet"
LTV_INSTALLS = "ltv_installs.parquet"
WORLD = "world"
BAD_FRACTION = 0.001
US_PER_DAY = 86_400_000_000
SEOUL_OFFSET_US = 9 * 3600 * 1_000_000  # Asia/Seoul has no DST


def _rng(purpose: str) -> np.random.Generator:
    return np.random.default_rng([SEED, sum(purpose.encode())])


def _cached(path: Path, build: Callable[[Path], None]) -> Path:
    """`path`, built by `build(tmp)` and renamed into place when missing."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        build(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def user_ids(n: int, purpose: str = "users") -> pa.Array:
    """n distinct raw ids shaped like the world's (`usr_` + 16 hex digits)."""
    keys = np.unique(_rng(purpose).integers(0, 2**62, int(n * 1.01) + 16))[:n]
    _rng(purpose + "-order").shuffle(keys)
    return pa.array([f"usr_{int(k):016x}" for k in keys], pa.string())


# --------------------------------------------------------------------------- logs


def log_day(data_dir: Path, prof: BenchProfile) -> Path:
    """The report day's server log (gzip JSON lines, ~0.1% malformed), built once."""
    path = data_dir / LOG_FILE.format(date=REPORT_DAY.isoformat())
    return _cached(path, lambda tmp: _write_log_day(tmp, prof))


def _write_log_day(path: Path, prof: BenchProfile) -> None:
    rng = _rng("logs")
    n = prof.log_events
    ids = user_ids(prof.log_users)
    day_start_utc = np.datetime64(REPORT_DAY.isoformat(), "us").astype(np.int64) - SEOUL_OFFSET_US
    t_us = np.sort(day_start_utc + rng.integers(0, US_PER_DAY, n))
    # Active users are skewed: a few heavy users, a long tail.
    user = np.minimum((rng.random(n) ** 2 * prof.log_users).astype(np.int64), prof.log_users - 1)
    peer = (user + rng.integers(1, prof.log_users, n)) % prof.log_users
    is_match = rng.random(n) < 0.4
    premium = rng.random(n) < 0.1
    bad = np.zeros(n, dtype=bool)
    bad[rng.choice(n, max(2, round(BAD_FRACTION * n)), replace=False)] = True
    chunk = 250_000
    with (
        open(path, "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz,
    ):
        for lo in range(0, n, chunk):
            hi = min(n, lo + chunk)
            local = np.datetime_as_string((t_us[lo:hi] + SEOUL_OFFSET_US).astype("datetime64[us]"))
            stamp = pc.binary_join_element_wise(pa.array(local), "+09:00", "")
            who = ids.take(pa.array(user[lo:hi]))
            other = ids.take(pa.array(peer[lo:hi]))
            flag = pc.if_else(pa.array(premium[lo:hi]), "true", "false")
            session = pc.binary_join_element_wise(
                '{"ts": "', stamp, '", "event": "session_start", "user_id": "', who, '"}', ""
            )
            match = pc.binary_join_element_wise(
                '{"ts": "', stamp, '", "event": "match", "user_id": "', who, '", "peer_id": "',
                other, '", "props": {"premium": ', flag, "}}", "",
            )  # fmt: skip
            lines: list[str] = pc.if_else(pa.array(is_match[lo:hi]), match, session).to_pylist()
            for j in np.flatnonzero(bad[lo:hi]):
                line = lines[j]
                if j % 2 == 0:  # truncated: never valid JSON
                    lines[j] = line[: len(line) // 2]
                else:  # no user_id
                    head, _, rest = line.partition(', "user_id": "')
                    lines[j] = head + rest[rest.index('"') + 1 :]
            gz.write(("\n".join(lines) + "\n").encode("utf-8"))


# --------------------------------------------------------------------------- PageRank


def graph(data_dir: Path, prof: BenchProfile) -> Path:
    """A match graph: distinct undirected edges (a < b), weights (premium = 2) and revenue seeds."""
    return _cached(data_dir / GRAPH_FILE, lambda tmp: _write_graph(tmp, prof))


def _write_graph(path: Path, prof: BenchProfile) -> None:
    rng = _rng("graph")
    n, m = prof.graph_nodes, prof.graph_edges
    pairs = np.zeros(0, dtype=np.int64)
    while len(pairs) < m:
        k = int((m - len(pairs)) * 1.2) + 16
        # Skewed degrees: some users match a lot.
        a = np.minimum((rng.random(k) ** 1.5 * n).astype(np.int64), n - 1)
        b = rng.integers(0, n, k)
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        keep = lo != hi
        pairs = np.unique(np.concatenate([pairs, lo[keep] * n + hi[keep]]))
    pairs = rng.permutation(pairs)[:m]
    src, dst = pairs // n, pairs % n
    weight = np.where(rng.random(m) < 0.1, 2.0, 1.0)
    revenue = np.zeros(n)
    payers = rng.choice(n, max(1, n // 20), replace=False)
    revenue[payers] = np.round(rng.lognormal(3.0, 1.0, len(payers)), 2)
    with open(path, "wb") as fh:
        np.savez(fh, src=src, dst=dst, weight=weight, revenue=revenue, n=np.array([n]))


# --------------------------------------------------------------------------- LTV


def ltv_inputs(data_dir: Path, prof: BenchProfile) -> tuple[Path, Path]:
    """PAYMENTS-like rows (a year of BG/NBD + Gamma-Gamma purchases) and the installs history."""
    pay = data_dir / LTV_PAYMENTS
    inst = data_dir / LTV_INSTALLS
    if not (pay.exists() and inst.exists()):
        payments, installs = _simulate_ltv(prof.ltv_customers)
        _cached(pay, lambda tmp: payments.to_parquet(tmp, index=False))
        _cached(inst, lambda tmp: installs.to_parquet(tmp, index=False))
    return pay, inst


def _simulate_ltv(n: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """n customers over the 365 days ending on the report day, and 1.5 n installs."""
    rng = _rng("ltv")
    history = 365
    lam = rng.gamma(0.9, 1.0 / 18.0, n)  # purchases per day while alive (BG/NBD r, alpha)
    drop = rng.beta(1.5, 8.0, n)  # drop-out after each purchase (BG/NBD a, b)
    nu = rng.gamma(4.0, 1.0 / 15.0, n)  # Gamma-Gamma q, v; spend per purchase ~ Gamma(6, nu)
    first = rng.integers(0, history, n).astype(np.float64)
    cust = [np.arange(n)]
    when = [first.copy()]
    t = first.copy()
    alive = rng.random(n) >= drop
    while alive.any():
        idx = np.flatnonzero(alive)
        t[idx] += rng.exponential(1.0 / lam[idx])
        ok = t[idx] < history
        idx = idx[ok]
        cust.append(idx)
        when.append(t[idx].copy())
        alive[:] = False
        alive[idx[rng.random(len(idx)) >= drop[idx]]] = True
    c = np.concatenate(cust)
    day = np.floor(np.concatenate(when)).astype(np.int64)
    amount = np.maximum(np.round(rng.gamma(6.0, 1.0 / nu[c]) * 100), 1) * 10_000  # cents
    day0 = np.datetime64(REPORT_DAY.isoformat(), "D") - (history - 1)
    ids = user_ids(int(n * 1.5), "ltv-users").to_numpy(zero_copy_only=False)
    dates = np.datetime_as_string(day0 + np.arange(history), unit="D")
    payments = pd.DataFrame(
        {
            "date": dates[day],
            "user_pid": ids[c],
            "amount_micros": amount.astype(np.int64),
        }
    ).sort_values(["date", "user_pid"], kind="stable", ignore_index=True)
    # Installs: payers installed up to a month before their first purchase; a third never paid.
    n_all = len(ids)
    install_day = np.concatenate(
        [
            np.maximum(first.astype(np.int64) - rng.geometric(0.3, n) + 1, 0),
            rng.integers(0, history, n_all - n),
        ]
    )
    install_us = (day0 + install_day).astype("datetime64[us]").astype(np.int64) - SEOUL_OFFSET_US
    install_us += rng.integers(0, US_PER_DAY, n_all)
    campaign = rng.integers(0, 300, n_all)
    platform = np.where(
        campaign < 150, "facebook", np.where(campaign < 280, "google_ads", "organic")
    )
    installs = pd.DataFrame(
        {
            "date": dates[install_day],
            "install_time": pd.to_datetime(install_us, unit="us", utc=True),
            "user_pid": ids,
            "platform": platform,
            "campaign_id": np.char.add("cmp_", campaign.astype(str)),
        }
    ).sort_values("install_time", kind="stable", ignore_index=True)
    return payments, installs


# --------------------------------------------------------------------------- warehouse


def warehouse_frames(prof: BenchProfile) -> dict[str, pd.DataFrame]:
    """One report day's lake frames for every report table, sized like the world profile."""
    from adperf.sandbox.profiles import get_profile

    world = get_profile(prof.world)
    rng = _rng("warehouse")
    day = REPORT_DAY.isoformat()
    n_campaigns = 2 * world.campaigns_per_account
    n_adsets = n_campaigns * world.adsets_per_campaign
    n_ads = n_adsets * world.ads_per_adset
    ad = np.arange(n_ads)
    adset = ad // world.ads_per_adset
    camp = adset // world.adsets_per_campaign
    cid = np.array([f"2381{i:014d}" for i in range(n_campaigns)], dtype=object)

    def money(k: int, scale: float) -> np.ndarray:
        return (rng.gamma(2.0, scale, k) * 1e6).astype(np.int64)

    spend = money(n_ads, 50.0)
    ad_spend = pd.DataFrame(
        {
            "date": day,
            "platform": "facebook",
            "account_id": "1852661934855365",
            "campaign_id": cid[camp],
            "campaign_name": [f"Campaign {i}" for i in camp],
            "adset_id": [f"2383{i:014d}" for i in adset],
            "adset_name": [f"Adset {i}" for i in adset],
            "ad_id": [f"2384{i:014d}" for i in ad],
            "ad_name": [f"Ad {i}" for i in ad],
            "impressions": rng.integers(1_000, 50_000, n_ads),
            "clicks": rng.integers(10, 1_000, n_ads),
            "installs_reported": rng.integers(0, 100, n_ads),
            "purchases_reported": rng.integers(0, 10, n_ads),
            "purchase_value_original_micros": money(n_ads, 40.0),
            "spend_original_micros": spend,
            "currency_original": "USD",
            "fx_rate": 1.0,
            "spend_micros": spend,
        }
    )
    per_campaign = {
        "date": day,
        "platform": "facebook",
        "campaign_id": cid,
        "campaign_name": [f"Campaign {i}" for i in range(n_campaigns)],
    }
    camp_spend = np.bincount(camp, weights=spend, minlength=n_campaigns).astype(np.int64)
    revenue = money(n_campaigns, 200.0)
    campaign_daily = pd.DataFrame(
        {
            **per_campaign,
            "spend_micros": camp_spend,
            "impressions": rng.integers(10_000, 500_000, n_campaigns),
            "clicks": rng.integers(100, 10_000, n_campaigns),
            "installs": rng.integers(10, 500, n_campaigns),
            "cpi_micros": money(n_campaigns, 3.0),
            "payers": rng.integers(0, 50, n_campaigns),
            "revenue_micros": revenue,
            "roas": revenue / np.maximum(camp_spend, 1),
            "assisted_revenue_micros": money(n_campaigns, 20.0),
            "pltv_micros": money(n_campaigns, 600.0),
            "proas": rng.random(n_campaigns) * 3,
        }
    )
    ages = [0, 3, 7, 14, 30]
    cohort = pd.DataFrame(
        {
            "cohort_date": np.repeat(
                [(REPORT_DAY - dt.timedelta(days=a)).isoformat() for a in ages], n_campaigns
            ),
            "platform": "facebook",
            "campaign_id": np.tile(cid, len(ages)),
            "campaign_name": np.tile(per_campaign["campaign_name"], len(ages)),
            "age_days": np.repeat(ages, n_campaigns),
            "users": rng.integers(10, 500, n_campaigns * len(ages)),
            "installs": rng.integers(10, 500, n_campaigns * len(ages)),
            "payers": rng.integers(0, 50, n_campaigns * len(ages)),
            "revenue_micros": money(n_campaigns * len(ages), 200.0),
            "spend_micros": np.tile(camp_spend, len(ages)),
            "roas": rng.random(n_campaigns * len(ages)) * 2,
            "as_of": day,
        }
    )
    actions = pd.DataFrame(
        {
            "date": day,
            "platform": "facebook",
            "level": "campaign",
            "object_id": cid,
            "object_name": per_campaign["campaign_name"],
            "action": rng.choice(["scale", "pause", "hold"], n_campaigns),
            "reason": "pROAS 3.39 over scale threshold 1.30 on $291.44 spend, 71 installs",
            "roas": campaign_daily["roas"],
            "proas": campaign_daily["proas"],
            "spend_micros": camp_spend,
        }
    )
    params = {"bgnbd": {"a": 0.2, "alpha": 36.5, "b": 1.6, "r": 0.8}, "gammagamma": None}
    ltv_model = pd.DataFrame(
        [
            {
                "date": day,
                "model": "bgnbd_gammagamma",
                "params": json.dumps(params),
                "n_customers": 1_000_000,
                "converged": True,
                "log_likelihood": -1.5e7,
            }
        ]
    )
    total = int(revenue.sum())
    recon = pd.DataFrame(
        [
            {
                "date": day,
                "total_payments_micros": total,
                "attributed_micros": total - 2_000_000,
                "organic_micros": 1_500_000,
                "unattributed_micros": 500_000,
            }
        ]
    )
    return {
        "ad_spend_daily": ad_spend,
        "campaign_daily": campaign_daily,
        "cohort_roas": cohort,
        "ltv_model": ltv_model,
        "revenue_reconciliation": recon,
        "actions": actions,
    }


# --------------------------------------------------------------------------- pipeline


def world(data_dir: Path, prof: BenchProfile) -> Path:
    """The sandbox world of the profile, ending on the report day (built once)."""
    from adperf.sandbox.world import ensure_world

    root = data_dir / WORLD
    ensure_world(root, end=REPORT_DAY, profile=prof.world, seed=SEED, report_timezone=TIMEZONE)
    return root


def reset(path: Path) -> None:
    """Remove `path` (a run folder) if present."""
    if path.exists():
        shutil.rmtree(path)


def prepare(data_dir: Path, prof: BenchProfile) -> dict[str, Any]:
    """Build every cached input of the profile; returns their paths."""
    log = log_day(data_dir, prof)
    g = graph(data_dir, prof)
    pay, inst = ltv_inputs(data_dir, prof)
    w = world(data_dir, prof)
    return {"log": str(log), "graph": str(g), "payments": str(pay), "installs": str(inst),
            "world": str(w)}  # fmt: skip
