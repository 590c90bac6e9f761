"""Applying actions: the real SDKs against the Graph API and Google Ads fakes, logged in the
warehouse (SQLite, MariaDB and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa

import adperf.actions
from adperf import warehouse
from adperf.actions import (
    APPLIED,
    CHANGE,
    FAILED,
    NO_CHANGE,
    SKIP,
    Settings,
    render,
    run_day,
    scaled_budget,
)
from adperf.actions.facebook import FacebookAdsets
from adperf.actions.google_ads import GoogleAdsCampaigns
from adperf.errors import ConfigError
from adperf.sandbox import fake_google_ads, fake_graph
from adperf.sandbox.fake_google_ads import FakeGoogleAds
from adperf.sandbox.fake_graph import FakeGraphApi
from adperf.sources.google_ads import GoogleAdsCredentials

DAY = "2026-11-20"
TOKEN = "EAAtestTokenThatMustNeverLeak123"
DEV_TOKEN = "dev-token-never-logged"
CID = "1234567890"
# Facebook: campaign C1 (adsets A1, A2), campaign C2 (adset A3, paused by hand).
C1, C2 = "23850000000000001", "23850000000000002"
A1, A2, A3 = "23860000000000011", "23860000000000012", "23860000000000013"
# Google Ads: campaigns G1 (budget B1), G2 (budget B2).
G1, G2, B1, B2 = "555000001", "555000002", "901", "902"


def fb_objects() -> dict[str, Any]:
    camp = {"account_id": "111", "status": "ACTIVE"}
    return {
        "campaigns": {C1: {**camp, "name": "US_AEO"}, C2: {**camp, "name": "KR_MAI"}},
        "adsets": {
            A1: {"name": "a1", "status": "ACTIVE", "daily_budget": 5000, "campaign_id": C1},
            A2: {"name": "a2", "status": "ACTIVE", "daily_budget": 7001, "campaign_id": C1},
            A3: {"name": "a3", "status": "PAUSED", "daily_budget": 3000, "campaign_id": C2},
        },
    }


def google_objects() -> dict[str, Any]:
    return {
        "campaigns": {
            G1: {"customer_id": CID, "name": "g1", "status": "ENABLED", "budget_id": B1},
            G2: {"customer_id": CID, "name": "g2", "status": "ENABLED", "budget_id": B2},
        },
        "budgets": {
            B1: {"customer_id": CID, "amount_micros": 50_000_000, "explicitly_shared": False},
            B2: {"customer_id": CID, "amount_micros": 20_000_000, "explicitly_shared": False},
        },
    }


def action(platform: str, level: str, object_id: str, act: str, parent: str = "") -> dict[str, Any]:
    return {
        "date": DAY,
        "platform": platform,
        "level": level,
        "object_id": object_id,
        "object_name": f"name {object_id}",
        "action": act,
        "reason": "because",
        "roas": 1.0,
        "proas": 1.0,
        "spend_micros": 500_000_000,
        "parent_id": parent or None,
        "proas_low": None,
        "proas_high": None,
    }


@pytest.fixture()
def engine(warehouse_engine: sa.Engine) -> sa.Engine:
    """SQLite, MariaDB and PostgreSQL (tests/conftest.py)."""
    return warehouse_engine


@pytest.fixture()
def fakes(tmp_path: Path) -> Iterator[tuple[FakeGraphApi, FakeGoogleAds]]:
    adsets = fb_objects()
    for a in adsets["adsets"].values():
        a["account_id"] = "111"
    graph = FakeGraphApi(
        accounts=[
            {"account_id": "111", "name": "A", "currency": "USD", "timezone_name": "Asia/Seoul"}
        ],
        ad_rows=pd.DataFrame(columns=list(fake_graph.AD_ROW_COLUMNS)),
        access_token=TOKEN,
        objects=adsets,
        objects_path=tmp_path / "objects" / "facebook.json",
    )
    google = FakeGoogleAds(
        customers=[
            {
                "customer_id": CID,
                "descriptive_name": "G",
                "currency_code": "USD",
                "time_zone": "Asia/Seoul",
            }
        ],
        ad_rows=pd.DataFrame(columns=list(fake_google_ads.AD_ROW_COLUMNS)),
        developer_token=DEV_TOKEN,
        objects=google_objects(),
        objects_path=tmp_path / "objects" / "google_ads.json",
    )
    with graph, google:
        yield graph, google


def platforms(graph: FakeGraphApi, google: FakeGoogleAds) -> dict[str, Any]:
    day = dt.date.fromisoformat(DAY)
    return {
        "facebook": FacebookAdsets(
            graph_url=graph.base_url,
            api_version="v21.0",
            access_token=TOKEN,
            day=day,
            sleep=lambda s: None,
        ),
        "google_ads": GoogleAdsCampaigns(
            endpoint=google.endpoint,
            credentials=GoogleAdsCredentials(developer_token=DEV_TOKEN),
            customer_ids=[CID],
            insecure=True,
            day=day,
            sleep=lambda s: None,
        ),
    }


def load(engine: sa.Engine, rows: list[dict[str, Any]]) -> None:
    warehouse.load_day(engine, DAY, {"actions": pd.DataFrame(rows)})


def apply(engine: sa.Engine, graph: FakeGraphApi, google: FakeGoogleAds, yes: bool) -> list[Any]:
    clients = platforms(graph, google)
    try:
        return run_day(engine, DAY, clients, Settings(), yes=yes, applied_by="tester")
    finally:
        for c in clients.values():
            c.close()


def log_rows(engine: sa.Engine) -> list[dict[str, Any]]:
    if not sa.inspect(engine).has_table("action_log"):
        return []
    with engine.connect() as conn:
        t = warehouse.action_log
        return [dict(r) for r in conn.execute(sa.select(t).order_by(t.c.id)).mappings()]


def posts(graph: FakeGraphApi) -> int:
    """Requests that wrote to an adset (POSTs carry a status or daily_budget form field)."""
    return sum(1 for _, p in graph.requests_seen if "status" in p or "daily_budget" in p)


BASIC = [
    action("facebook", "adset", A1, "pause", C1),
    action("google_ads", "campaign", G1, "scale"),
    action("google_ads", "campaign", G2, "hold"),
]


def by_object(changes: list[Any]) -> dict[str, Any]:
    return {c.target.object_id: c for c in changes}


def test_dry_run_changes_nothing_and_logs_nothing(engine: sa.Engine, fakes: Any) -> None:
    graph, google = fakes
    load(engine, BASIC)
    changes = by_object(apply(engine, graph, google, yes=False))
    assert set(changes) == {A1, G1}  # hold is not an action to apply
    assert (changes[A1].outcome, changes[A1].before, changes[A1].after) == (
        CHANGE,
        "ACTIVE",
        "PAUSED",
    )
    assert (changes[G1].before, changes[G1].after) == ("50000000", "60000000")
    assert graph.objects()["adsets"][A1]["status"] == "ACTIVE"
    assert google.objects()["budgets"][B1]["amount_micros"] == 50_000_000
    assert posts(graph) == 0 and google.mutations == []
    assert log_rows(engine) == []
    table = render(DAY, list(changes.values()), dry_run=True)
    assert "dry run" in table and "will change" in table
    assert "budget 50.00 USD -> 60.00 USD" in table and "status ACTIVE -> PAUSED" in table


def test_yes_applies_and_logs_before_after_then_a_second_apply_changes_nothing(
    engine: sa.Engine, fakes: Any
) -> None:
    graph, google = fakes
    load(engine, BASIC)
    first = by_object(apply(engine, graph, google, yes=True))
    assert first[A1].outcome == APPLIED and first[G1].outcome == APPLIED
    assert graph.objects()["adsets"][A1]["status"] == "PAUSED"
    assert graph.objects()["adsets"][A2]["status"] == "ACTIVE"
    assert google.objects()["budgets"][B1]["amount_micros"] == 60_000_000
    assert google.objects()["budgets"][B2]["amount_micros"] == 20_000_000
    assert google.mutations == [(CID, ["amount_micros"], f"customers/{CID}/campaignBudgets/{B1}")]
    rows = log_rows(engine)
    keys = ("platform", "object_id", "field", "value_before", "value_after", "status")
    got = {tuple(r[k] for k in keys) for r in rows}
    assert got == {
        ("facebook", A1, "status", "ACTIVE", "PAUSED", "applied"),
        ("google_ads", G1, "amount_micros", "50000000", "60000000", "applied"),
    }
    assert {r["applied_by"] for r in rows} == {"tester"}
    assert {r["date"] for r in rows} == {dt.date(2026, 11, 20)}
    assert {r["unit"] for r in rows} == {None, "micros USD"}
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    assert all(abs((now - r["applied_at"]).total_seconds()) < 3600 for r in rows)  # UTC

    writes, mutations = posts(graph), len(google.mutations)
    second = by_object(apply(engine, graph, google, yes=True))
    assert {c.outcome for c in second.values()} == {NO_CHANGE}
    assert "already scaled" in second[G1].note
    assert posts(graph) == writes and len(google.mutations) == mutations
    assert google.objects()["budgets"][B1]["amount_micros"] == 60_000_000  # not 72,000,000
    assert len(log_rows(engine)) == 2


def test_an_adset_paused_outside_adperf_is_no_change(engine: sa.Engine, fakes: Any) -> None:
    graph, google = fakes
    load(engine, [action("facebook", "adset", A3, "pause", C2)])
    changes = apply(engine, graph, google, yes=True)
    assert [(c.target.object_id, c.outcome, c.note) for c in changes] == [
        (A3, NO_CHANGE, "already paused")
    ]
    assert posts(graph) == 0 and log_rows(engine) == []


def test_a_campaign_action_applies_to_its_adsets_unless_they_have_their_own(
    engine: sa.Engine, fakes: Any
) -> None:
    graph, google = fakes
    load(engine, [action("facebook", "campaign", C1, "scale"), BASIC[0]])
    changes = by_object(apply(engine, graph, google, yes=True))
    assert set(changes) == {A1, A2}
    assert changes[A1].target.action == "pause"  # its own action wins
    # 7001 x 1.2 = 8401.2 -> 8401 minor units (cents)
    assert (changes[A2].before, changes[A2].after, changes[A2].outcome) == ("7001", "8401", APPLIED)
    assert graph.objects()["adsets"][A2]["daily_budget"] == 8401
    rows = {r["object_id"]: r for r in log_rows(engine)}
    assert (rows[A2]["source_level"], rows[A2]["source_id"]) == ("campaign", C1)
    assert rows[A1]["source_id"] is None


def test_a_permission_error_fails_one_object_and_the_others_are_applied(
    engine: sa.Engine, fakes: Any, caplog: pytest.LogCaptureFixture
) -> None:
    graph, google = fakes
    caplog.set_level(logging.DEBUG)
    graph.deny_writes([A1])
    google.deny_mutations([f"customers/{CID}/campaigns/{G2}"])
    load(engine, [*BASIC[:2], action("google_ads", "campaign", G2, "pause")])
    changes = by_object(apply(engine, graph, google, yes=True))
    assert changes[G1].outcome == APPLIED
    assert google.objects()["budgets"][B1]["amount_micros"] == 60_000_000
    assert changes[A1].outcome == FAILED and changes[G2].outcome == FAILED
    fb_msg, g_msg = changes[A1].note, changes[G2].note
    assert f"facebook for {DAY}" in fb_msg and f"adset {A1}" in fb_msg
    assert "ads_management" in fb_msg and "Fix:" in fb_msg
    assert f"google_ads for {DAY}" in g_msg and f"campaign {G2}" in g_msg
    assert "ACTION_NOT_PERMITTED" in g_msg and "Standard or Admin access" in g_msg
    assert graph.objects()["adsets"][A1]["status"] == "ACTIVE"
    status = {r["object_id"]: (r["status"], r["error"]) for r in log_rows(engine)}
    assert status[G1] == ("applied", None)
    assert status[A1][0] == "failed" and f"adset {A1}" in status[A1][1]
    everything = caplog.text + fb_msg + g_msg + str(log_rows(engine))
    assert TOKEN not in everything and DEV_TOKEN not in everything
    # A failed change is tried again by the next apply (and still fails, named again).
    again = by_object(apply(engine, graph, google, yes=True))
    assert again[A1].outcome == FAILED and again[G1].outcome == NO_CHANGE


def test_unknown_objects_are_failures_that_name_the_fix(engine: sa.Engine, fakes: Any) -> None:
    graph, google = fakes
    unknown = [
        action("facebook", "adset", "999", "pause"),
        action("google_ads", "campaign", "777", "pause"),
    ]
    load(engine, unknown)
    changes = by_object(apply(engine, graph, google, yes=True))
    assert changes["999"].outcome == FAILED and "code 100" in changes["999"].note
    assert "still exists" in changes["999"].note
    assert changes["777"].outcome == FAILED and "customer_ids" in changes["777"].note
    assert log_rows(engine) == []


def test_an_interrupted_scale_is_not_applied_blind(engine: sa.Engine, fakes: Any) -> None:
    graph, google = fakes
    load(engine, [BASIC[1]])
    warehouse.action_log.create(engine, checkfirst=True)
    with engine.begin() as conn:
        conn.execute(
            warehouse.action_log.insert(),
            [
                {
                    "date": dt.date(2026, 11, 20),
                    "platform": "google_ads",
                    "level": "campaign",
                    "object_id": G1,
                    "action": "scale",
                    "field": "amount_micros",
                    "value_before": "50000000",
                    "value_after": "60000000",
                    "applied_at": dt.datetime(2026, 11, 21, 1, 0),
                    "applied_by": "cron",
                    "status": "pending",
                }
            ],
        )
    [change] = apply(engine, graph, google, yes=True)
    assert change.outcome == FAILED and "set that action_log row" in change.note
    assert google.mutations == []


def test_ad_group_actions_and_shared_budgets_are_skipped(engine: sa.Engine, fakes: Any) -> None:
    graph, google = fakes
    google._objects.update(lambda doc: doc["budgets"][B2].update(explicitly_shared=True))
    rows = [action("google_ads", "adset", "4444", "pause", G1)]
    load(engine, [*rows, action("google_ads", "campaign", G2, "scale")])
    changes = by_object(apply(engine, graph, google, yes=True))
    assert changes["4444"].outcome == SKIP and "ad group" in changes["4444"].note
    assert changes[G2].outcome == SKIP and "shared" in changes[G2].note
    assert google.mutations == []


@pytest.mark.parametrize(
    ("before", "factor", "cap", "step", "after"),
    [
        (5000, 1.2, 0.5, 1, 6000),
        (7001, 1.2, 0.5, 1, 8401),
        (50_000_000, 1.2, 0.5, 10_000, 60_000_000),
        (12_345_678, 1.2, 0.5, 10_000, 14_810_000),  # 14,814,813.6 -> to the cent
        (3_000_000, 1.2, 0.5, 1_000_000, 4_000_000),  # KRW: whole won
        (100, 1.5, 0.2, 1, 120),  # the cap wins
    ],
)
def test_scaled_budget_rounds_to_the_step_and_never_passes_the_cap(
    before: int, factor: float, cap: float, step: int, after: int
) -> None:
    got = scaled_budget(before, Settings(scale_factor=factor, max_budget_increase=cap), step)
    assert got == after


@pytest.mark.parametrize(("factor", "cap"), [(1.0, 0.5), (0.8, 0.5), (2.0, 0.5)])
def test_settings_that_would_not_scale_sanely_are_config_errors(factor: float, cap: float) -> None:
    with pytest.raises(ConfigError, match=r"\[actions\]"):
        Settings(scale_factor=factor, max_budget_increase=cap).check()


def test_state_survives_a_new_fake_on_the_same_file(tmp_path: Path) -> None:
    path = tmp_path / "fb.json"
    kw: dict[str, Any] = {
        "accounts": [],
        "ad_rows": pd.DataFrame(columns=list(fake_graph.AD_ROW_COLUMNS)),
        "access_token": TOKEN,
        "objects_path": path,
    }
    first = FakeGraphApi(objects=fb_objects(), **kw)
    first._objects.update(lambda doc: doc["adsets"][A1].update(status="PAUSED"))
    # A second process's fake (a fresh object on the same file) sees the change; its
    # `objects` are only the initial state of a missing file.
    second = FakeGraphApi(objects=fb_objects(), **kw)
    assert second.objects()["adsets"][A1]["status"] == "PAUSED"
    assert not list(tmp_path.glob(".fb.json.*[!k]"))  # no temp files left behind


def test_two_applies_at_the_same_moment_scale_a_budget_once(
    engine: sa.Engine, fakes: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    graph, google = fakes
    load(engine, [BASIC[1]])
    url = engine.url.render_as_string(hide_password=False)
    barrier = threading.Barrier(2, timeout=120)
    planned = adperf.actions.logged_changes

    def plan_together(eng: sa.Engine, day: str) -> Any:
        # Both appliers have read the budget and an empty action_log before either applies:
        # the worst interleaving, made certain.
        logged = planned(eng, day)
        barrier.wait()
        return logged

    monkeypatch.setattr(adperf.actions, "logged_changes", plan_together)
    results: dict[str, Any] = {}

    def run(who: str) -> None:
        eng = sa.create_engine(url)  # each applier its own engine, as two processes would
        clients = platforms(graph, google)
        try:
            results[who] = run_day(eng, DAY, clients, Settings(), yes=True, applied_by=who)
        except BaseException as exc:  # re-raised in the test's thread below
            results[who] = exc
        finally:
            for c in clients.values():
                c.close()
            eng.dispose()

    threads = [threading.Thread(target=run, args=(who,)) for who in ("cron-a", "cron-b")]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=300)
    for got in results.values():
        if isinstance(got, BaseException):
            raise got
    outcomes = {who: [(c.outcome, c.note) for c in got] for who, got in results.items()}
    assert sorted(o for got in outcomes.values() for o, _ in got) == [APPLIED, SKIP], outcomes
    [winner] = [who for who, got in outcomes.items() if got == [(APPLIED, "")]]
    [(outcome, note)] = outcomes["cron-b" if winner == "cron-a" else "cron-a"]
    assert outcome == SKIP and f"claimed by another apply (by {winner} at " in note
    assert google.objects()["budgets"][B1]["amount_micros"] == 60_000_000
    assert len(google.mutations) == 1
    rows = log_rows(engine)
    assert [(r["object_id"], r["status"], r["applied_by"]) for r in rows] == [
        (G1, "applied", winner)
    ]


def test_a_failed_scale_releases_its_claim(engine: sa.Engine, fakes: Any) -> None:
    graph, google = fakes
    google.deny_mutations([f"customers/{CID}/campaignBudgets/{B1}"])
    load(engine, [BASIC[1]])
    [first] = apply(engine, graph, google, yes=True)
    assert first.outcome == FAILED
    google._read_only.clear()  # the user was given write access
    [second] = apply(engine, graph, google, yes=True)
    assert second.outcome == APPLIED
    assert google.objects()["budgets"][B1]["amount_micros"] == 60_000_000
    rows = log_rows(engine)
    assert [(r["status"], r["claim"]) for r in rows] == [("failed", None), ("applied", 1)]


def test_an_older_action_log_gains_the_claim_key(engine: sa.Engine) -> None:
    old = sa.MetaData()
    sa.Table(
        "action_log",
        old,
        *[
            sa.Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable)
            for c in warehouse.action_log.columns
            if c.name != "claim"
        ],
    )
    old.create_all(engine)
    base = {
        "date": dt.date(2026, 11, 20),
        "platform": "google_ads",
        "level": "campaign",
        "action": "scale",
        "field": "amount_micros",
        "applied_at": dt.datetime(2026, 11, 21, 1, 0),
        "applied_by": "cron",
    }
    # Ids 1-4 from the table's own counter, as an older adperf's inserts got them (explicit ids
    # would leave PostgreSQL's sequence behind: the next insert would collide on the key).
    with engine.begin() as conn:
        for row in [
            # An unguarded race left G1 scaled-and-logged twice; the newest row claims it.
            {**base, "object_id": G1, "status": "applied"},
            {**base, "object_id": G1, "status": "applied"},
            {**base, "object_id": G2, "status": "failed"},
            {**base, "object_id": A1, "status": "applied", "field": "status"},
        ]:
            conn.execute(old.tables["action_log"].insert(), [row])
    warehouse.create_action_log(engine)
    warehouse.create_action_log(engine)  # a second time changes nothing
    t = warehouse.action_log
    with engine.connect() as conn:
        claims = dict(conn.execute(sa.select(t.c.id, t.c.claim).order_by(t.c.id)).all())
    assert claims == {1: None, 2: 1, 3: None, 4: None}
    [index] = [i for i in sa.inspect(engine).get_indexes("action_log") if i["unique"]]
    assert index["column_names"] == ["date", "platform", "object_id", "field", "claim"]
    # The claim key refuses it (SQLite names its columns, the servers the index).
    claim_key = r"uq_action_log_claim|action_log\.claim"
    with pytest.raises(sa.exc.IntegrityError, match=claim_key), engine.begin() as conn:
        conn.execute(t.insert().values(**base, object_id=G1, status="pending", claim=1))
    with engine.begin() as conn:  # G2's failure holds no claim
        conn.execute(t.insert().values(**base, object_id=G2, status="pending", claim=1))


def test_read_failures_are_logged_without_the_token(
    engine: sa.Engine, fakes: Any, caplog: pytest.LogCaptureFixture
) -> None:
    graph, google = fakes
    caplog.set_level(logging.WARNING, logger="adperf.actions")
    load(
        engine,
        [
            action("facebook", "adset", "999", "pause"),
            action("google_ads", "campaign", "777", "pause"),
        ],
    )
    changes = apply(engine, graph, google, yes=False)
    assert {c.outcome for c in changes} == {FAILED}
    warned = [
        r.getMessage()
        for r in caplog.records
        if r.name == "adperf.actions" and r.levelno == logging.WARNING
    ]
    assert len(warned) == 2
    assert any(f"facebook adset 999 for {DAY}" in m and "code 100" in m for m in warned)
    assert any(f"google_ads campaign 777 for {DAY}" in m and "Fix:" in m for m in warned)
    assert TOKEN not in caplog.text and DEV_TOKEN not in caplog.text
