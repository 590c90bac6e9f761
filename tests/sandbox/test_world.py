"""The sandbox world: deterministic, extendable without changing the past, and true to its truth."""

from __future__ import annotations

import gzip
import json
import re
import sqlite3
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, localcontext
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from scipy.special import hyp2f1
from sqlalchemy.dialects import mysql

from adperf.errors import ConfigError
from adperf.sandbox import world as world_mod
from adperf.sandbox.process import sample_repeat_times
from adperf.sandbox.world import (
    build_world,
    create_payments_table,
    ensure_world,
    insert_payments,
    load_meta,
    payments_table,
)

TZ = ZoneInfo("Asia/Seoul")
END = date(2026, 11, 27)
START = END - timedelta(days=39)  # the tiny profile's 40 days
E1 = END - timedelta(days=12)
FB_ID = re.compile(r"^238\d{15}$")
GOOGLE_ID = re.compile(r"^\d{11}$")
TIKTOK_ID = re.compile(r"17\d{17}")
APPLE_ID = re.compile(r"\d{9}")
ID_FORMAT = {"facebook": FB_ID, "google_ads": GOOGLE_ID, "tiktok": TIKTOK_ID, "apple_ads": APPLE_ID}
# Tiny world: ads per platform (2 Facebook accounts x 2 campaigns x 2 adsets x 2 ads, 1 Google
# customer alike, a TikTok advertiser alike, an Apple Ads org with one "ad" per ad group).
ADS_PER_PLATFORM = {"facebook": 16, "google_ads": 8, "tiktok": 8, "apple_ads": 4}
PER_USER_FILES = ("installs.parquet", "truth/users.parquet", "truth/user_value.parquet")
PER_USER_ROWS = ("_installs_rows", "_users_rows", "_user_value_rows")


@pytest.fixture(autouse=True)
def _exact_decimals() -> Iterator[None]:
    # Products of amounts and 12-digit rates need more than the default 28 digits to be exact.
    with localcontext() as ctx:
        ctx.prec = 60
        yield


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("w") / "world"
    build_world(out, seed=7, start=START, end=END, profile="tiny")
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _extended_files(root: Path) -> dict[str, bytes]:
    """`_files`, but payments.sqlite without its header's two copies of the file change counter
    (bytes 24-27 and 92-95: https://www.sqlite.org/fileformat2.html#file_change_counter), which
    count the transactions that wrote the file: an extension appends its rows in one more."""
    files = _files(root)
    data = bytearray(files["payments.sqlite"])
    data[24:28] = data[92:96] = bytes(4)
    files["payments.sqlite"] = bytes(data)
    return files


def _payments(root: Path) -> pd.DataFrame:
    with sqlite3.connect(root / "payments.sqlite") as conn:
        df = pd.read_sql_query("SELECT * FROM payments ORDER BY id", conn)
    # SQLite keeps DECIMAL as REAL; repr of a float with <= 4 decimals round-trips exactly.
    df["amount_dec"] = [Decimal(repr(float(x))) for x in df["amount"]]
    df["created_utc"] = pd.to_datetime(df["created_at"], format="%Y-%m-%d %H:%M:%S.%f", utc=True)
    df["day"] = df["created_utc"].dt.tz_convert(TZ).dt.strftime("%Y-%m-%d")
    return df


def _fx(root: Path) -> dict[tuple[str, str], Decimal]:
    fx = pd.read_csv(root / "fx.csv", dtype=str)
    return {(d, c): Decimal(r) for d, c, r in fx[["date", "currency", "rate"]].itertuples(False)}


def _cutoff(day: date) -> pd.Timestamp:
    """UTC instant of the report-timezone midnight after `day`."""
    return pd.Timestamp(datetime.combine(day + timedelta(days=1), datetime.min.time(), TZ))


def _log_lines(path: Path) -> list[str]:
    return gzip.decompress(path.read_bytes()).decode("utf-8").splitlines()


# --------------------------------------------------------------------------- determinism


def test_same_seed_gives_byte_identical_world(world: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    build_world(again, seed=7, start=START, end=END, profile="tiny")
    a, b = _files(world), _files(again)
    assert a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k]] == []


def test_another_seed_gives_another_world(world: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    build_world(other, seed=8, start=START, end=END, profile="tiny")
    assert (other / "ads.csv").read_bytes() != (world / "ads.csv").read_bytes()
    assert (other / "ad_daily.parquet").read_bytes() != (world / "ad_daily.parquet").read_bytes()


def test_extending_never_changes_past_days(world: Path, tmp_path: Path) -> None:
    short = tmp_path / "grow"
    meta = ensure_world(short, end=E1, profile="tiny", days=(E1 - START).days + 1)
    assert (meta["start"], meta["end"]) == (START.isoformat(), E1.isoformat())
    e1, cut = E1.isoformat(), _cutoff(E1)

    ad_s, ad_w = (pd.read_parquet(p / "ad_daily.parquet") for p in (short, world))
    pd.testing.assert_frame_equal(ad_s, ad_w[ad_w["date"] <= e1].reset_index(drop=True))
    ins_s, ins_w = (pd.read_parquet(p / "installs.parquet") for p in (short, world))
    pd.testing.assert_frame_equal(ins_s, ins_w[ins_w["install_time"] < cut].reset_index(drop=True))
    pay_s, pay_w = _payments(short), _payments(world)
    assert len(pay_s) > 100
    pd.testing.assert_frame_equal(pay_s, pay_w[pay_w["created_utc"] < cut].reset_index(drop=True))
    fx_s, fx_w = (pd.read_csv(p / "fx.csv", dtype=str) for p in (short, world))
    pd.testing.assert_frame_equal(fx_s, fx_w.iloc[: len(fx_s)])
    assert fx_s["date"].max() == (E1 + timedelta(days=1)).isoformat()
    for name in ("campaign_daily.csv", "daily_totals.csv"):
        t_s, t_w = (pd.read_csv(p / "truth" / name, dtype=str) for p in (short, world))
        pd.testing.assert_frame_equal(t_s, t_w[t_w["date"] <= e1].reset_index(drop=True))
    u_s, u_w = (pd.read_parquet(p / "truth" / "users.parquet") for p in (short, world))
    pd.testing.assert_frame_equal(u_s, u_w[u_w["install_date"] <= e1].reset_index(drop=True))
    logs = sorted(p.name for p in (short / "logs").iterdir())
    assert logs[-1] == f"{e1}.jsonl.gz" and len(logs) == (E1 - START).days + 1
    for name in logs:
        assert (short / "logs" / name).read_bytes() == (world / "logs" / name).read_bytes()

    # Extending keeps the start and gives exactly the world built to END directly; the leftover
    # of a build killed mid-way is swept.
    (tmp_path / ".grow.tmp-killed").mkdir()
    meta = ensure_world(short, end=END, profile="tiny")
    assert (meta["start"], meta["end"]) == (START.isoformat(), END.isoformat())
    assert _extended_files(short) == _extended_files(world)
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def test_an_extension_builds_only_the_new_days_rows_of_the_per_user_files(
    world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    short = tmp_path / "grow"
    ensure_world(short, end=E1, profile="tiny", days=(E1 - START).days + 1)
    n_old = {name: len(pd.read_parquet(short / name)) for name in PER_USER_FILES}
    # An old file that is not this world's rows (here: one user less) is not taken.
    users = pd.read_parquet(short / "truth" / "user_value.parquet")
    users.iloc[1:].to_parquet(short / "truth" / "user_value.parquet", index=False)
    built: dict[str, list[int]] = defaultdict(list)
    for name, method in zip(PER_USER_FILES, PER_USER_ROWS, strict=True):
        real = getattr(world_mod._World, method)

        def counting(self: Any, idx: Any, real: Any = real, name: str = name) -> Any:
            built[name].append(len(idx))
            return real(self, idx)

        monkeypatch.setattr(world_mod._World, method, counting)
    ensure_world(short, end=END, profile="tiny")
    n_new = {name: len(pd.read_parquet(short / name)) for name in PER_USER_FILES}
    assert built["installs.parquet"] == [n_new["installs.parquet"] - n_old["installs.parquet"]]
    legacy = int(pd.read_parquet(short / "truth" / "users.parquet")["legacy"].sum())
    assert legacy > 0 and built["truth/users.parquet"] == [
        n_new["truth/users.parquet"] - n_old["truth/users.parquet"]
    ]
    assert built["truth/user_value.parquet"] == [n_new["truth/user_value.parquet"]]
    assert 0 < built["installs.parquet"][0] < n_old["installs.parquet"]
    # The same bytes as the world built at once (payments.sqlite's change counter aside).
    assert _extended_files(short) == _extended_files(world)


def test_an_extension_appends_only_the_new_days_payments(
    world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    short, other = tmp_path / "grow", tmp_path / "other"
    for folder in (short, other):
        ensure_world(folder, end=E1, profile="tiny", days=(E1 - START).days + 1)
    n_old = len(_payments(short))
    # A file that is not the old days' payments (here: its last payment dropped) is not kept.
    with sqlite3.connect(other / "payments.sqlite") as conn:
        conn.execute("DELETE FROM payments WHERE id = (SELECT max(id) FROM payments)")
    inserted: list[list[int]] = []
    real = world_mod.insert_payments

    def counting(engine: sa.Engine, rows: pd.DataFrame, *args: Any, **kwargs: Any) -> None:
        inserted.append([int(rows["id"].iloc[0]), len(rows)])
        real(engine, rows, *args, **kwargs)

    monkeypatch.setattr(world_mod, "insert_payments", counting)
    for folder in (short, other):
        ensure_world(folder, end=END, profile="tiny")

    n_all = len(_payments(world))
    assert 0 < n_old < n_all
    assert inserted == [[n_old + 1, n_all - n_old], [1, n_all]]
    for folder in (short, other):
        pd.testing.assert_frame_equal(_payments(folder), _payments(world))
    assert _extended_files(short)["payments.sqlite"] == _extended_files(world)["payments.sqlite"]
    assert _files(other)["payments.sqlite"] == _files(world)["payments.sqlite"]


def test_ensure_world_reuses_a_world_that_reaches_far_enough(world: Path) -> None:
    before = (world / "world.json").stat().st_mtime_ns
    meta = ensure_world(world, end=E1, profile="tiny")
    assert meta["end"] == END.isoformat()
    assert (world / "world.json").stat().st_mtime_ns == before
    assert load_meta(world) == meta


def test_ensure_world_refuses_another_seed(world: Path) -> None:
    with pytest.raises(ConfigError, match="seed"):
        ensure_world(world, end=END, profile="tiny", seed=8)


def test_first_build_covers_the_profile_days(tmp_path: Path) -> None:
    meta = ensure_world(tmp_path / "w", end=END, profile="tiny", days=3)
    assert (meta["start"], meta["end"]) == ((END - timedelta(days=2)).isoformat(), END.isoformat())
    assert len(list((tmp_path / "w" / "logs").iterdir())) == 3


def test_failed_build_leaves_the_old_world_untouched(
    world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "w"
    build_world(out, seed=7, start=END - timedelta(days=1), end=END, profile="tiny")
    before = _files(out)

    def boom(self: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(world_mod._World, "_write_truth", boom)
    with pytest.raises(OSError, match="disk full"):
        build_world(out, seed=7, start=START, end=END, profile="tiny")
    assert _files(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w"]


def test_refuses_to_replace_a_folder_that_is_not_a_world(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not empty"):
        build_world(tmp_path, start=END, end=END, profile="tiny")
    assert (tmp_path / "notes.txt").read_text() == "keep me"


# --------------------------------------------------------------------------- contract


def test_world_json_contract(world: Path) -> None:
    meta = load_meta(world)
    assert meta["seed"] == 7 and meta["profile"] == "tiny"
    assert (meta["start"], meta["end"]) == (START.isoformat(), END.isoformat())
    assert meta["report_timezone"] == "Asia/Seoul" and meta["report_currency"] == "USD"
    assert meta["apps"] == ["id1477019230", "com.adperf.demo"]
    accounts = meta["facebook_accounts"]
    assert sorted(a["currency"] for a in accounts) == ["KRW", "USD"]
    for a in accounts:
        assert re.fullmatch(r"\d{15,16}", a["account_id"])
    # A global app's accounts: the USD one keeps Los Angeles days, the KRW one the report's.
    assert {a["currency"]: a["timezone_name"] for a in accounts} == {
        "USD": "America/Los_Angeles",
        "KRW": "Asia/Seoul",
    }
    assert meta["media_source_map"]["Facebook Ads"] == "facebook"
    assert meta["media_source_map"]["googleadwords_int"] == "google_ads"
    (google,) = meta["google_ads_customers"]
    assert re.fullmatch(r"\d{10}", google["customer_id"])
    assert (google["currency_code"], google["time_zone"]) == ("USD", "Australia/Sydney")
    ads = pd.read_csv(world / "ads.csv", dtype=str)
    google_campaigns = set(ads.loc[ads["platform"] == "google_ads", "campaign_id"])
    assert len(meta["google_app_campaign_ids"]) == 1
    assert set(meta["google_app_campaign_ids"]) < google_campaigns


def test_google_ads_campaigns_have_spend_and_mmp_installs(world: Path) -> None:
    ads = pd.read_csv(world / "ads.csv", dtype=str)
    google = ads[ads["platform"] == "google_ads"]
    assert google["campaign_id"].nunique() == 2 and set(google["currency"]) == {"USD"}
    ad_daily = pd.read_parquet(world / "ad_daily.parquet")
    # Every registered platform delivers in the sandbox.
    assert set(ad_daily["platform"]) == {"facebook", "google_ads", "tiktok", "apple_ads"}
    installs = pd.read_parquet(world / "installs.parquet")
    from_google = installs[installs["media_source"] == "googleadwords_int"]
    assert len(from_google) > 100
    assert set(from_google["campaign_id"]) == set(google["campaign_id"])
    assert set(from_google["ad_id"]) <= set(google["ad_id"])


def test_ids_are_18_digit_strings(world: Path) -> None:
    ads = pd.read_csv(world / "ads.csv", dtype=str)
    assert len(ads) == sum(ADS_PER_PLATFORM.values())
    for platform, fmt in ID_FORMAT.items():
        mine = ads[ads["platform"] == platform]
        assert len(mine) == ADS_PER_PLATFORM[platform]
        for col in ("campaign_id", "adset_id", "ad_id"):
            assert mine[col].str.fullmatch(fmt).all(), (platform, col)
    assert ads["ad_id"].is_unique and ads["campaign_id"].nunique() == 10
    platform_of = dict(zip(ads["campaign_id"], ads["platform"], strict=False))
    ad_daily = pd.read_parquet(world / "ad_daily.parquet")
    installs = pd.read_parquet(world / "installs.parquet")
    for df in (ad_daily, installs):
        paid = df.dropna(subset=["campaign_id"])
        for col in ("campaign_id", "adset_id", "ad_id"):
            ids = paid[col]
            assert ids.map(type).eq(str).all()
            fmt = paid["campaign_id"].map(platform_of).map(ID_FORMAT)
            assert all(f.fullmatch(i) for f, i in zip(fmt, ids, strict=True)), col
    assert set(installs["ad_id"].dropna()) <= set(ads["ad_id"])


def test_both_currencies_in_spend_and_payments(world: Path) -> None:
    ads = pd.read_csv(world / "ads.csv", dtype=str)
    ad_daily = pd.read_parquet(world / "ad_daily.parquet").merge(ads[["ad_id", "currency"]])
    krw = ad_daily[ad_daily["currency"] == "KRW"]["spend"]
    usd = ad_daily[ad_daily["currency"] == "USD"]["spend"]
    assert len(krw) and len(usd)
    assert krw.str.fullmatch(r"[1-9]\d*").all()  # whole won
    assert usd.str.fullmatch(r"\d+\.\d\d").all()  # cents
    # Won, not dollars: ad budgets are alike in USD, so KRW amounts are ~1,380 times larger.
    assert krw.astype(int).median() > 200 * usd.astype(float).median()
    pay = _payments(world)
    assert set(pay["currency"]) == {"KRW", "USD"}
    assert (pay[pay["currency"] == "KRW"]["amount_dec"] % 1 == 0).all()


def test_delivery_is_consistent_and_over_reported(world: Path) -> None:
    ad = pd.read_parquet(world / "ad_daily.parquet")
    assert (ad["impressions"] > 0).all()
    assert (ad["clicks"] < ad["impressions"]).all()
    assert (ad["installs_reported"] < ad["clicks"]).all()
    installs = pd.read_parquet(world / "installs.parquet")
    for platform, source in (("facebook", "Facebook Ads"), ("google_ads", "googleadwords_int")):
        paid = int((installs["media_source"] == source).sum())
        claimed = ad.loc[ad["platform"] == platform, "installs_reported"].sum()
        assert claimed > paid * 1.03, platform  # the platform over-claims
    assert ad["purchases_reported"].sum() > 0
    assert ad["purchase_value"].map(Decimal).sum() > 0
    # Some ads skip days (zero spend gives no row).
    assert ad.groupby("ad_id").size().min() < (END - START).days + 1


def test_installs_contract(world: Path) -> None:
    ins = pd.read_parquet(world / "installs.parquet")
    assert str(ins["install_time"].dtype) == "datetime64[us, UTC]"
    assert ins["appsflyer_id"].str.fullmatch(r"\d{13}-\d{7}").all()
    assert ins["customer_user_id"].dropna().str.fullmatch(r"usr_[0-9a-f]{16}").all()
    missing = ins["customer_user_id"].isna().mean()
    assert 0.02 < missing < 0.07
    organic = ins[ins["media_source"] == "organic"]
    assert 0.2 < len(organic) / len(ins) < 0.4
    assert (
        organic[["campaign", "campaign_id", "adset", "adset_id", "ad", "ad_id"]].isna().all().all()
    )
    assert 0.45 < (organic["country_code"] == "KR").mean() < 0.75
    per_day = ins.groupby(ins["install_time"].dt.tz_convert(TZ).dt.date).size()
    assert len(per_day) == 40 and 40 < per_day.mean() < 80
    assert set(ins["platform"]) == {"ios", "android"}
    expected_app = ins["platform"].map({"ios": "id1477019230", "android": "com.adperf.demo"})
    assert (ins["app_id"] == expected_app).all()


def test_payments_contract_and_refunds(world: Path) -> None:
    pay = _payments(world)
    assert pay["id"].tolist() == list(range(1, len(pay) + 1))
    assert pay["created_utc"].is_monotonic_increasing
    assert pay["created_at"].str.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}").all()
    assert (pay["amount_dec"] > 0).all()
    refunds = pay[pay["kind"] == "refund"]
    assert 0.01 < len(refunds) / len(pay) < 0.06
    purchases = pay[pay["kind"] == "purchase"]
    for r in refunds.itertuples():
        same = purchases[
            (purchases["user_id"] == r.user_id)
            & (purchases["currency"] == r.currency)
            & (purchases["amount_dec"] == r.amount_dec)
        ]
        lag = r.created_utc - same["created_utc"]
        assert ((lag >= pd.Timedelta(days=1)) & (lag <= pd.Timedelta(days=5))).any()
    assert pay["created_utc"].max() < _cutoff(END)


def test_fx_covers_every_day_and_both_currencies(world: Path) -> None:
    fx = pd.read_csv(world / "fx.csv", dtype=str)
    days = [(START + timedelta(days=i)).isoformat() for i in range(41)]
    assert sorted(set(fx["date"])) == days
    assert (fx[fx["currency"] == "USD"]["rate"] == "1").all()
    krw = fx[fx["currency"] == "KRW"]["rate"]
    assert len(krw) == 41 and krw.map(lambda s: len(s.lstrip("0.")) >= 8).all()
    assert krw.astype(float).between(1 / 1600, 1 / 1200).all()
    assert krw.nunique() > 30  # a random walk, not a constant


def test_logs_have_events_and_a_few_malformed_lines(world: Path) -> None:
    files = sorted((world / "logs").iterdir())
    assert len(files) == 40
    total = bad = truncated = premium_with_payer = premium = 0
    pay = _payments(world)
    buyers = set(
        zip(
            pay[pay["kind"] == "purchase"]["day"],
            pay[pay["kind"] == "purchase"]["user_id"],
            strict=True,
        )
    )
    for path in files:
        day = path.name[:10]
        bad_here = 0
        for line in _log_lines(path):
            total += 1
            try:
                ev = json.loads(line)
            except json.JSONDecodeError:
                bad_here += 1
                truncated += 1
                continue
            if "user_id" not in ev:
                bad_here += 1
                continue
            ts = datetime.fromisoformat(ev["ts"])
            assert ev["ts"].endswith("+09:00") and ts.astimezone(TZ).date().isoformat() == day
            if ev["event"] == "match" and ev["props"]["premium"]:
                premium += 1
                premium_with_payer += (day, ev["user_id"]) in buyers
                assert ev["peer_id"] != ev["user_id"]
        assert bad_here >= 1, path.name
        bad += bad_here
    assert bad / total < 0.01
    assert 0 < truncated < bad  # both kinds: cut-off JSON and a line without user_id
    assert premium > 50 and premium_with_payer >= premium - bad


def test_truth_params(world: Path) -> None:
    params = json.loads((world / "truth" / "params.json").read_text())
    ads = pd.read_csv(world / "ads.csv", dtype=str)
    assert set(params) == set(ads["campaign_id"]) | {"organic"}
    roas = [p["true_roas"] for k, p in params.items() if k != "organic"]
    assert max(roas) > 1.4 and min(roas) < 0.6  # clearly profitable and clearly not
    for key, p in params.items():
        assert 0.03 <= p["payer_rate"] <= 0.12
        bg, gg = p["bgnbd"], p["gammagamma"]
        assert 0.5 <= bg["r"] <= 1.2 and 10 <= bg["alpha"] <= 40
        assert 0.5 <= bg["a"] <= 1 and 2 <= bg["b"] <= 6
        assert 5 - 1e-9 <= gg["p"] * gg["v"] / (gg["q"] - 1) <= 30 + 1e-9
        per_install = p["expected_revenue_per_install_usd"]
        assert per_install == pytest.approx(
            p["payer_rate"] * p["expected_purchases_per_payer"] * p["mean_purchase_usd"], rel=0.1
        )
        if key != "organic":
            assert p["true_roas"] == pytest.approx(
                p["expected_net_revenue_per_install_usd"] / p["true_cpi_usd"]
            )


def test_repeat_purchases_follow_bgnbd() -> None:
    # E[X(t)] of BG/NBD (Fader, Hardie & Lee 2005, eq. 9), valid for a > 1.
    r, alpha, a, b, t, n = 0.8, 20.0, 2.5, 4.0, 180.0, 200_000
    z = t / (alpha + t)
    expected = (a + b - 1) / (a - 1) * (1 - (alpha / (alpha + t)) ** r * hyp2f1(r, b, a + b - 1, z))

    def full(x: float) -> Any:
        return np.full(n, x)

    owner, times = sample_repeat_times(
        np.random.default_rng(1), full(0.0), full(t), full(r), full(alpha), full(a), full(b)
    )
    assert len(owner) / n == pytest.approx(expected, rel=0.02)
    assert (times > 0).all() and (times <= t).all()
    assert (np.diff(owner) >= 0).all()


# --------------------------------------------------------------------------- truth consistency


def test_campaign_spend_matches_ad_daily(world: Path) -> None:
    truth = pd.read_csv(world / "truth" / "campaign_daily.csv", dtype=str, keep_default_na=False)
    ad = pd.read_parquet(world / "ad_daily.parquet")
    fx = _fx(world)
    ads = pd.read_csv(world / "ads.csv", dtype=str)
    currency = dict(zip(ads["campaign_id"], ads["currency"], strict=False))
    original: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    report: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for row in ad.itertuples():
        spend = Decimal(row.spend)
        original[(row.date, row.campaign_id)] += spend
        report[(row.date, row.campaign_id)] += spend * fx[(row.date, currency[row.campaign_id])]
    paid = truth[~truth["platform"].isin(["organic", "restricted"])]
    assert len(paid) == 40 * 10 and set(paid["platform"]) == set(ID_FORMAT)
    for row in paid.itertuples():
        key = (row.date, row.campaign_id)
        assert Decimal(row.spend_original) == original.get(key, Decimal(0)), key
        assert Decimal(row.spend_report) == report.get(key, Decimal(0)), key
        assert row.currency_original == currency[row.campaign_id]
    assert sum(original.values()) > 0


def test_campaign_installs_match_installs_parquet(world: Path) -> None:
    truth = pd.read_csv(world / "truth" / "campaign_daily.csv", dtype=str, keep_default_na=False)
    ins = pd.read_parquet(world / "installs.parquet")
    ins["date"] = ins["install_time"].dt.tz_convert(TZ).dt.strftime("%Y-%m-%d")
    ins["cid"] = _mmp_campaign(ins)
    counts = ins.groupby(["date", "cid"]).size()
    got = truth.set_index(["date", "campaign_id"])["installs"].astype(int)
    assert got.sum() == len(ins)
    for key, n in counts.items():
        assert got[key] == n, key


def test_revenue_recomputed_from_sources_matches_truth(world: Path) -> None:
    truth = pd.read_csv(world / "truth" / "campaign_daily.csv", dtype=str, keep_default_na=False)
    totals = pd.read_csv(world / "truth" / "daily_totals.csv", dtype=str)
    ins = pd.read_parquet(world / "installs.parquet")
    owner = dict(
        zip(
            ins["customer_user_id"].dropna(),
            _mmp_campaign(ins.dropna(subset=["customer_user_id"])),
            strict=True,
        )
    )
    fx = _fx(world)
    pay = _payments(world)
    revenue: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    payers: dict[tuple[str, str], set[str]] = defaultdict(set)
    total: dict[str, Decimal] = defaultdict(Decimal)
    unattributed: dict[str, Decimal] = defaultdict(Decimal)
    for p in pay.itertuples():
        value = p.amount_dec * fx[(p.day, p.currency)] * (-1 if p.kind == "refund" else 1)
        total[p.day] += value
        campaign = owner.get(p.user_id)
        if campaign is None:
            unattributed[p.day] += value
            continue
        revenue[(p.day, campaign)] += value
        if p.kind == "purchase":
            payers[(p.day, campaign)].add(p.user_id)
    for row in truth.itertuples():
        key = (row.date, row.campaign_id)
        assert Decimal(row.revenue_report) == revenue.get(key, Decimal(0)), key
        assert int(row.payers) == len(payers.get(key, ())), key
    is_paid = ~truth["platform"].isin(["organic", "restricted"])
    for row in totals.itertuples():
        t, a = Decimal(row.total_payments_report), Decimal(row.attributed_report)
        o, u = Decimal(row.organic_report), Decimal(row.unattributed_report)
        r = Decimal(row.restricted_report)
        assert t == total.get(row.date, Decimal(0)) == a + o + u + r, row.date
        assert u == unattributed.get(row.date, Decimal(0)), row.date
        day = truth["date"] == row.date
        assert a == sum(map(Decimal, truth[is_paid & day]["revenue_report"]), Decimal(0))
        for bucket, value in (("organic", o), ("restricted", r)):
            row_of = truth[(truth["platform"] == bucket) & day]
            assert value == Decimal(row_of["revenue_report"].iloc[0]), (bucket, row.date)
    assert sum(map(Decimal, totals["unattributed_report"])) > 0
    assert sum(map(Decimal, totals["attributed_report"])) > sum(
        map(Decimal, totals["unattributed_report"])
    )


def _mmp_campaign(ins: pd.DataFrame) -> pd.Series:
    """The bucket each install's revenue is booked to: its campaign, 'restricted' when the
    network withholds the user-level data, else 'organic'."""
    restricted = ins["media_source"] == "restricted"
    return ins["campaign_id"].where(~restricted, "restricted").fillna("organic")


def test_restricted_installs_are_a_few_paid_ones_without_campaign_fields(world: Path) -> None:
    ins = pd.read_parquet(world / "installs.parquet")
    users = pd.read_parquet(world / "truth" / "users.parquet")
    restricted = ins[ins["media_source"] == "restricted"]
    paid = ins[~ins["media_source"].isin(["organic", "restricted"])]
    assert 0 < len(restricted) < 0.1 * (len(paid) + len(restricted))
    assert restricted[["campaign", "campaign_id", "adset_id", "ad_id"]].isna().all().all()
    truth = users.set_index("appsflyer_id").loc[restricted["appsflyer_id"]]
    assert (truth["campaign_id"] == "restricted").all()
    # Really acquired by a paid campaign: the truth keeps which.
    assert not truth["true_campaign_id"].isin(["organic", "restricted"]).any()
    totals = pd.read_csv(world / "truth" / "daily_totals.csv", dtype=str)
    assert sum(map(Decimal, totals["restricted_report"])) > 0


def test_users_truth_covers_every_payer(world: Path) -> None:
    users = pd.read_parquet(world / "truth" / "users.parquet")
    ins = pd.read_parquet(world / "installs.parquet")
    assert users["user_id"].is_unique
    assert users["legacy"].sum() == 40
    legacy = users[users["legacy"]]
    assert (
        legacy["appsflyer_id"].isna().all() and (legacy["install_date"] < START.isoformat()).all()
    )
    installed = users[~users["legacy"]]
    assert len(installed) == len(ins)
    assert set(installed["appsflyer_id"]) == set(ins["appsflyer_id"])
    assert set(installed[installed["has_cuid"]]["user_id"]) == set(ins["customer_user_id"].dropna())
    pay = _payments(world)
    assert set(pay["user_id"]) <= set(users["user_id"])
    # Unmatched installs and legacy users both pay: the two sources of unattributed revenue.
    unmatched = set(installed[~installed["has_cuid"]]["user_id"])
    assert set(pay["user_id"]) & unmatched and set(pay["user_id"]) & set(legacy["user_id"])


# --------------------------------------------------------------------------- payments table


def test_payments_ddl_on_mysql() -> None:
    ddl = str(sa.schema.CreateTable(payments_table("payments")).compile(dialect=mysql.dialect()))
    assert "kind ENUM('purchase','refund') NOT NULL" in ddl
    assert "created_at DATETIME(6) NOT NULL" in ddl
    assert "amount DECIMAL(18, 4) NOT NULL" in ddl
    assert "id BIGINT NOT NULL" in ddl and "PRIMARY KEY (id)" in ddl
    assert "AUTO_INCREMENT" not in ddl


def _sample_rows() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": [1, 2, 3],
            "user_id": ["usr_a", "usr_b", "usr_a"],
            "amount": ["9.99", "15000", Decimal("9.99")],
            "currency": ["USD", "KRW", "USD"],
            "kind": ["purchase", "purchase", "refund"],
            "created_at": pd.to_datetime(
                [
                    "2026-11-26 15:00:00.000001",
                    "2026-11-26 23:59:59.999999",
                    "2026-11-28 01:00:00.000000",
                ],
                utc=True,
            ),
        }
    )


@pytest.mark.mysql
def test_payments_table_on_mariadb(mysql_engine: sa.Engine) -> None:
    create_payments_table(mysql_engine, "pay")
    create_payments_table(mysql_engine, "pay")  # idempotent
    insert_payments(mysql_engine, _sample_rows(), "pay", chunk_rows=2)
    with mysql_engine.connect() as conn:
        got = conn.execute(
            sa.text(
                "SELECT id, amount, kind, created_at FROM pay "
                "WHERE created_at >= :a AND created_at < :b ORDER BY id"
            ),
            {"a": datetime(2026, 11, 26, 15), "b": datetime(2026, 11, 27, 15)},
        ).all()
        column_type = conn.execute(
            sa.text(
                "SELECT column_type FROM information_schema.columns "
                "WHERE table_schema = DATABASE() AND table_name = 'pay' AND column_name = 'kind'"
            )
        ).scalar_one()
    assert [(r[0], r[1], r[2]) for r in got] == [
        (1, Decimal("9.9900"), "purchase"),
        (2, Decimal("15000.0000"), "purchase"),
    ]
    assert got[0][3] == datetime(2026, 11, 26, 15, 0, 0, 1)  # microseconds kept
    assert column_type == "enum('purchase','refund')"


def test_insert_payments_round_trip_on_sqlite(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'p.sqlite'}")
    create_payments_table(engine, "pay")
    create_payments_table(engine, "pay")  # idempotent
    rows = _sample_rows()
    insert_payments(engine, rows, "pay", chunk_rows=2)
    with engine.connect() as conn:
        got = conn.execute(
            sa.text(
                "SELECT id, created_at FROM pay WHERE created_at >= :a AND created_at < :b "
                "ORDER BY id"
            ),
            {"a": "2026-11-26 15:00:00.000000", "b": "2026-11-27 15:00:00.000000"},
        ).all()
        raw = conn.execute(sa.text("SELECT amount, kind FROM pay ORDER BY id")).all()
    engine.dispose()
    assert [r[0] for r in got] == [1, 2]
    assert got[0][1] == "2026-11-26 15:00:00.000001"
    assert [(Decimal(repr(a)), k) for a, k in raw] == [
        (Decimal("9.99"), "purchase"),
        (Decimal("15000.0"), "purchase"),
        (Decimal("9.99"), "refund"),
    ]


def test_local_day_boundaries_follow_the_report_timezone(world: Path) -> None:
    ins = pd.read_parquet(world / "installs.parquet")
    first = ins["install_time"].min()
    assert first >= pd.Timestamp(datetime(2026, 10, 18, 15, tzinfo=UTC))  # START 00:00 KST
    assert ins["install_time"].max() < _cutoff(END)
