"""`luigi --module tasks LtvModel`: customer LTV from the payments database alone (no MMP, no
logs, no ad platform), on the CDNOW sample in MariaDB, against the published BG/NBD fit.

Fader, Hardie & Lee (2005), "Counting your customers the easy way", fit BG/NBD on the 2,357
customers of the CDNOW sample over the 39-week calibration period 1997-01-01..1997-09-30:
r=0.243, alpha=4.414 (weeks), a=0.793, b=2.426; lifetimes' docs fit Gamma-Gamma on the repeat
buyers of the same summary: p=6.25, q=3.74, v=15.44. adperf counts time in days (a purchase
day is a day with positive net revenue, several purchases of one day are one, as in lifetimes'
`summary_data_from_transaction_data(freq='D')`), so its alpha is in days: 4.414 weeks = 30.90
days; r, a, b and Gamma-Gamma's p, q, v do not depend on the unit. 8 customers bought only $0
items and have no purchase day in adperf: 2,349 customers, 946 repeat buyers.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from decimal import Decimal
from importlib.resources import files
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from adperf import warehouse

REPO = Path(__file__).resolve().parents[2]
CALIBRATION_END = "1997-09-30"
PUBLISHED_BGNBD_WEEKS = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
PUBLISHED_GG = {"p": 6.25, "q": 3.74, "v": 15.44}
DAYS_PER_WEEK = 7
# A few days' purchases are in EUR (amount x 0.8 at 1.25 USD per EUR, exact in DECIMAL(18,4)):
# the fit reproduces the published figures only if Payments converted them.
EUR_DAYS = ("1997-09-28", "1997-09-29", "1997-09-30")
EUR_RATE = Decimal("1.25")


def cdnow_payments() -> pd.DataFrame:
    """CDNOW_sample.txt as rows of the default payments table (one row per transaction)."""
    path = files("lifetimes") / "datasets" / "CDNOW_sample.txt"
    # Columns: master customer id, sample customer id, date, number of CDs, dollar value;
    # lifetimes' own example (and the published fit) uses the sample id as the customer.
    raw = pd.read_csv(
        str(path),
        sep=r"\s+",
        header=None,
        names=["master_id", "id", "date", "cds", "amount"],
        dtype={"master_id": str, "id": str, "date": str, "amount": str},
    )
    day = pd.to_datetime(raw["date"], format="%Y%m%d")
    usd = raw["amount"].map(Decimal)
    eur = day.dt.strftime("%Y-%m-%d").isin(EUR_DAYS)
    return pd.DataFrame(
        {
            "id": range(1, len(raw) + 1),
            "user_id": raw["id"],
            "amount": [a / EUR_RATE if e else a for a, e in zip(usd, eur, strict=True)],
            "currency": ["EUR" if e else "USD" for e in eur],
            "kind": "purchase",
            # created_at in UTC; the report day is UTC too, so each row keeps its CDNOW date.
            "created_at": day + pd.Timedelta(hours=12) + pd.to_timedelta(raw.index % 60, "s"),
        }
    )


def load_payments_table(url: str, rows: pd.DataFrame) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "CREATE TABLE payments (id BIGINT PRIMARY KEY, user_id VARCHAR(64), "
                    "amount DECIMAL(18,4), currency CHAR(3), kind ENUM('purchase','refund'), "
                    "created_at DATETIME(6))"
                )
            )
            conn.execute(
                sa.text(
                    "INSERT INTO payments VALUES (:id, :user_id, :amount, :currency, :kind, "
                    ":created_at)"
                ),
                [
                    {**r, "created_at": r["created_at"].to_pydatetime()}
                    for r in rows.to_dict("records")
                ],
            )
    finally:
        engine.dispose()


@pytest.mark.mysql
def test_ltv_model_alone_reproduces_the_published_cdnow_fit(
    tmp_path: Path, mysql_database: str
) -> None:
    rows = cdnow_payments()
    assert len(rows) == 6919 and rows["user_id"].nunique() == 2357
    assert (rows["currency"] == "EUR").sum() > 0
    load_payments_table(mysql_database, rows)
    (tmp_path / "fx.csv").write_text(
        "date,currency,rate\n" + "".join(f"{d},EUR,{EUR_RATE}\n" for d in EUR_DAYS)
    )
    warehouse_url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    cfg = tmp_path / "ltv.cfg"
    # Only what payment-history LTV needs: no [facebook], [google_ads], [mmp], [logs].
    cfg.write_text(
        f"[adperf]\nsandbox = false\ndata_root = {tmp_path / 'lake'}\n"
        f"warehouse_url = {warehouse_url}\nreport_timezone = UTC\nreport_currency = USD\n"
        f"[payments]\nurl = {mysql_database}\n"
        f"[fx]\nrates_path = {tmp_path / 'fx.csv'}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADPERF_")}
    env |= {"LUIGI_CONFIG_PATH": str(cfg), "ADPERF_HMAC_KEY": "cdnow-test-key-" + "k" * 32}
    cmd = [sys.executable, "-m", "luigi", "--module", "tasks", "LtvModel"]
    cmd += ["--date", CALIBRATION_END, "--local-scheduler"]
    # From a folder of its own: the repository's luigi.cfg (the sandbox's) is not read.
    run = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "This progress looks :)" in run.stderr, run.stderr[-3000:]
    summary = run.stderr[run.stderr.index("===== Luigi Execution Summary =====") :]
    # The fit, the history it needs (11 closed months, 30 days of September) and its wrapper.
    assert "* 43 ran successfully:" in summary, summary
    assert "- 1 LtvModel(date=1997-09-30)" in summary, summary
    assert "- 11 PaymentsMonth(month=1996-10...1997-08)" in summary, summary
    assert "- 30 Payments(date=1997-09-01...1997-09-30)" in summary, summary
    # Nothing of an MMP, logs or ad platform was scheduled.
    for family in ("Installs", "AdSpend", "EventLogs", "LogFiles", "Ltv("):
        assert family not in run.stderr, family

    engine = warehouse.make_engine(warehouse_url)
    try:
        table = warehouse.read_table(engine, "ltv_model")
        assert warehouse.is_loaded(engine, CALIBRATION_END, "ltv_model")
        assert not warehouse.is_loaded(engine, CALIBRATION_END)  # no report day was loaded
    finally:
        engine.dispose()
    assert len(table) == 1
    model = table.iloc[0]
    assert (str(model["date"]), model["model"]) == (CALIBRATION_END, "bgnbd_gammagamma")
    assert bool(model["converged"]) and model["n_customers"] == 2349
    assert model["log_likelihood"] < 0
    params = json.loads(model["params"])
    assert params["n_repeat"] == 946 and params["penalizer"] == 0.0
    bgnbd = dict(params["bgnbd"], alpha=params["bgnbd"]["alpha"] / DAYS_PER_WEEK)
    for name, published in PUBLISHED_BGNBD_WEEKS.items():
        assert bgnbd[name] == pytest.approx(published, rel=0.01), name
    for name, published in PUBLISHED_GG.items():
        assert params["gammagamma"][name] == pytest.approx(published, rel=0.01), name

    # The EUR rows came out of extraction in USD, as they were before conversion.
    lake_day = tmp_path / "lake" / "payments" / "date=1997-09-29"
    got = pd.read_parquet(lake_day)["amount_micros"].sort_values().tolist()
    day_rows = rows[rows["created_at"].dt.date == dt.date(1997, 9, 29)]
    want = sorted(int(a * EUR_RATE * 1_000_000) for a in day_rows["amount"])
    assert got == want and len(got) > 0
