"""The bad-input corpus (tests/data/bad/) through every reader.

Each case ends in a clear error naming source, day and fix, or in a counted quarantine where
accepted + quarantined = input and every good row is kept.
"""

from __future__ import annotations

import importlib.util
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import requests
import sqlalchemy as sa

from adperf.errors import SourceError
from adperf.fx import FxTable
from adperf.pseudonym import pseudonymize_one
from adperf.sources.logs import fetch_events
from adperf.sources.mmp import fetch_installs
from adperf.sources.payments import fetch_payments

from .harness import END

BAD = Path(__file__).resolve().parents[1] / "data" / "bad"
KEY = b"corpus-test-key"
DAY = END.isoformat()
TZ = "Asia/Seoul"


def _pid(raw: str) -> str:
    return pseudonymize_one(raw, KEY)


def _make_corpus() -> Any:
    spec = importlib.util.spec_from_file_location("make_corpus", BAD / "make_corpus.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_corpus_is_what_the_generator_writes() -> None:
    corpus = _make_corpus().corpus()
    for rel, data in corpus.items():
        assert (BAD / rel).read_bytes() == data, f"regenerate: python {BAD / 'make_corpus.py'}"
    assert sum(len(d) for d in corpus.values()) < 20_000  # KBs, not MBs


# ---------------------------------------------------------------- logs

# case: (bad, out_of_day, extra good users kept beyond the six)
LOG_CASES = {
    "truncated_gzip": (1, 0, None),
    "invalid_json": (1, 0, 0),
    "bad_utf8": (1, 0, 0),
    "timestamps": (0, 2, 0),
    "duplicates": (0, 0, 0),
}


def _events(case: str, **kw: Any) -> tuple[pd.DataFrame, dict[str, int]]:
    pattern = str(BAD / "logs" / case / "{date}.jsonl*")
    return fetch_events(pattern, day=END, timezone=TZ, hmac_key=KEY, **kw)


@pytest.mark.parametrize("case", sorted(LOG_CASES))
def test_log_lines_are_counted_and_no_good_line_is_lost(case: str) -> None:
    bad, out_of_day, extra = LOG_CASES[case]
    df, counts = _events(case, max_bad_fraction=0.5)
    kept = len(df)
    assert counts["bad"] == bad and counts["out_of_day"] == out_of_day
    assert (
        counts["lines"] == kept + bad + out_of_day + counts["other_events"] + counts["duplicates"]
    )
    good = {_pid(f"u-good-{k}") for k in range(6)}
    assert good <= set(df["user_pid"])  # every good line of the day is kept
    if extra is not None:
        assert kept == 6 + extra
    raw = " ".join(str(v) for v in df.to_numpy().ravel())
    assert "u-good" not in raw and "u-future" not in raw


@pytest.mark.parametrize("case", ["truncated_gzip", "invalid_json", "bad_utf8"])
def test_too_many_bad_log_lines_fail_the_day_with_a_fix(case: str) -> None:
    with pytest.raises(SourceError, match=rf"^logs for {DAY}: .*malformed.*Fix: "):
        _events(case)  # the default threshold: 1% (one bad line of seven is too many)


def test_duplicate_log_lines_are_counted_once() -> None:
    df, counts = _events("duplicates")
    assert len(df) == 6 and counts.get("duplicates") == 2


# ---------------------------------------------------------------- payments

FX = FxTable("USD", {(DAY, "KRW"): Decimal("0.00075")})
DDL = (
    "CREATE TABLE payments (id BIGINT, user_id VARCHAR(64), amount DECIMAL(18,4), "
    "currency CHAR(3), kind VARCHAR(16), created_at DATETIME)"
)


def _payments_db(tmp_path: Path, name: str) -> sa.Engine:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'p.db'}")
    rows = pd.read_csv(BAD / "payments" / name, dtype=str, keep_default_na=False)
    with engine.begin() as conn:
        conn.execute(sa.text(DDL))
        conn.execute(
            sa.text("INSERT INTO payments VALUES (:id, :user_id, :amount, :currency, :kind, :t)"),
            [
                {k: (v or None) for k, v in r.items()} | {"t": r["created_at"]}
                for r in rows.to_dict("records")
            ],
        )
    return engine


def _fetch_payments(engine: sa.Engine) -> tuple[pd.DataFrame, dict[str, Any]]:
    return fetch_payments(engine, first=END, last=END, timezone=TZ, hmac_key=KEY, fx=FX)


def test_bad_payments_are_quarantined_by_reason_and_counted(tmp_path: Path) -> None:
    df, meta = _fetch_payments(_payments_db(tmp_path, "payments.csv"))
    assert df["payment_id"].tolist() == ["1", "2", "3", "9"]  # every good row
    # 4.99 KRW refunded x 0.00075 = 3742.5 micros: half-even.
    assert df["amount_micros"].tolist() == [9_990_000, 4_990_000, -3_742, 3_000_000]
    assert meta["source_rows"] == meta["rows_read"] == 10
    assert meta["accepted"] + meta["quarantined"] == 10 and meta["quarantined"] == 6
    reasons = {k[len("quarantined_") :]: v for k, v in meta.items() if k.startswith("quarantined_")}
    assert reasons == {
        "null_user": 1,
        "null_amount": 1,
        "unknown_currency": 1,
        "null_currency": 1,
        "bad_kind": 1,
        "duplicate_id": 1,
    }
    sample = json.dumps(meta["quarantine_sample"])
    assert "u-good" not in sample and _pid("u-good-3") in sample  # pseudonymized


def test_a_negative_purchase_amount_is_quarantined(tmp_path: Path) -> None:
    df, meta = _fetch_payments(_payments_db(tmp_path, "negative.csv"))
    assert len(df) == 0 and meta["quarantined"] == 1


# ---------------------------------------------------------------- MMP

APP = "com.adperf.demo"


class _Session:
    """requests.Session stand-in: the attributed report is `body`, organic has no row."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    def get(self, url: str, **kw: Any) -> requests.Response:
        response = requests.Response()
        response.status_code = 200
        header = ",".join(_make_corpus().HEADER).encode() + b"\r\n"
        response._content = header if "organic" in url else self.body
        return response


def _installs(name: str) -> pd.DataFrame:
    return fetch_installs(
        base_url="http://mmp.invalid",
        app_ids=[APP],
        api_token="t",
        day=END,
        timezone=TZ,
        hmac_key=KEY,
        session=_Session((BAD / "mmp" / name).read_bytes()),  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("name", ["bom.csv", "reordered.csv", "extra_column.csv"])
def test_mmp_reports_are_read_by_column_name(name: str) -> None:
    df = _installs(name)
    assert sorted(df["device_pid"]) == sorted(_pid(f"af-{k}") for k in (1, 2, 3))
    assert set(df["user_pid"]) == {_pid(f"u-good-{k}") for k in (1, 2, 3)}
    assert set(df["campaign_name"]) == {"Spring sale"} and set(df["country"]) == {"KR"}
    assert set(df["ad_id"]) == {f"12020000000000001{k}" for k in (1, 2, 3)}  # exact strings


def test_mmp_embedded_newlines_stay_in_their_field() -> None:
    df = _installs("embedded_newline.csv")
    assert len(df) == 3 and set(df["campaign_name"]) == {"Spring\nsale, 2026"}


@pytest.mark.parametrize(
    "name, problem",
    [
        ("missing_column.csv", "has no column 'Install Time'"),
        ("ragged_row.csv", "row 5 has 5 fields, the header has 12"),
    ],
)
def test_mmp_structural_damage_is_a_clear_error(name: str, problem: str) -> None:
    with pytest.raises(SourceError) as info:
        _installs(name)
    message = str(info.value)
    assert message.startswith(f"mmp for {DAY}: installs_report for app {APP}")
    assert problem in message and "Fix: " in message
    assert "u-good" not in message and "af-" not in message  # no cell is quoted


def test_a_report_of_exactly_the_row_cap_is_split_and_loses_nothing(fault_world: Path) -> None:
    from adperf.sandbox.fake_mmp import FakeMmp
    from tasks.config import SANDBOX_MMP_TOKEN

    installs = pd.read_parquet(fault_world / "installs.parquet")
    apps = json.loads((fault_world / "world.json").read_text())["apps"]
    fake = FakeMmp(installs=installs, api_token=SANDBOX_MMP_TOKEN)
    url = fake.start()
    try:

        def pull(max_rows: int) -> pd.DataFrame:
            df = fetch_installs(
                base_url=url,
                app_ids=apps,
                api_token=SANDBOX_MMP_TOKEN,
                day=END,
                timezone=TZ,
                hmac_key=KEY,
                max_rows=max_rows,
            )
            return df.sort_values(["app_id", "install_time", "device_pid"]).reset_index(drop=True)

        whole = pull(1_000_000)
        biggest = int(whole.groupby(["app_id", whole["platform"] == "organic"]).size().max())
        assert biggest > 3
        split = pull(biggest)  # that report comes back with exactly the cap: split in halves
    finally:
        fake.stop()
    pd.testing.assert_frame_equal(split, whole)
    assert whole["device_pid"].is_unique


# ---------------------------------------------------------------- Facebook


def test_facebook_ad_rows_duplicated_for_one_day_and_ad_are_an_error(fault_world: Path) -> None:
    from adperf.sandbox.fake_graph import FakeGraphApi
    from adperf.sources.facebook import fetch_facebook_spend
    from tasks.config import SANDBOX_FACEBOOK_TOKEN

    meta = json.loads((fault_world / "world.json").read_text())
    rows = pd.read_parquet(fault_world / "ad_daily.parquet")
    rows = rows[(rows["platform"] == "facebook") & (rows["date"].astype(str) == DAY)]
    assert len(rows) > 1
    doubled = pd.concat([rows, rows.iloc[[0]]], ignore_index=True)
    with FakeGraphApi(
        accounts=meta["facebook_accounts"], ad_rows=doubled, access_token=SANDBOX_FACEBOOK_TOKEN
    ) as fake:
        with pytest.raises(SourceError) as info:
            fetch_facebook_spend(
                graph_url=fake.base_url,
                api_version="v21.0",
                access_token=SANDBOX_FACEBOOK_TOKEN,
                account_ids=[a["account_id"] for a in meta["facebook_accounts"]],
                day=END,
                report_timezone=TZ,
                sleep=lambda s: None,
            )
    message = str(info.value)
    assert message.startswith(f"facebook for {DAY}") and "Fix: " in message
    assert str(rows.iloc[0]["ad_id"]) in message
    assert SANDBOX_FACEBOOK_TOKEN not in message
