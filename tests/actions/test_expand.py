"""Scale back (`unscale`) and `expand` (the Graph API's adset copies edge) through the real SDKs
against the fakes, logged in action_log (SQLite, MariaDB and PostgreSQL)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from adperf.actions import APPLIED, CHANGE, NO_CHANGE, SKIP, Settings, render, run_day
from tests.actions import test_apply as base
from tests.actions.test_apply import A1, A2, B1, C1, DAY, G1, action, load, log_rows, platforms

engine = base.engine  # the fixtures of test_apply: SQLite, MariaDB, PostgreSQL and the fakes
fakes = base.fakes


def run(engine: sa.Engine, fakes: Any, yes: bool, **settings: Any) -> dict[str, Any]:
    clients = platforms(*fakes)
    try:
        changes = run_day(engine, DAY, clients, Settings(**settings), yes=yes, applied_by="t")
    finally:
        for c in clients.values():
            c.close()
    return {c.target.object_id: c for c in changes}


def copies(graph: Any) -> dict[str, Any]:
    return {k: v for k, v in graph.objects()["adsets"].items() if v.get("copy_of")}


def test_unscale_divides_the_budget_by_the_scale_factor_once(engine: sa.Engine, fakes: Any) -> None:
    graph, google = fakes
    load(
        engine,
        [
            action("facebook", "adset", A2, "unscale", C1),
            action("google_ads", "campaign", G1, "unscale"),
        ],
    )
    first = run(engine, fakes, yes=True)
    assert first[A2].outcome == APPLIED and first[G1].outcome == APPLIED
    # 7001 / 1.2 = 5834.17 cents -> 5834; 50,000,000 / 1.2 = 41,666,666.7 micros -> a cent step
    assert graph.objects()["adsets"][A2]["daily_budget"] == 5834
    assert google.objects()["budgets"][B1]["amount_micros"] == 41_670_000
    again = run(engine, fakes, yes=True)
    assert {c.outcome for c in again.values()} == {NO_CHANGE}
    assert "already scaled back" in again[A2].note
    assert graph.objects()["adsets"][A2]["daily_budget"] == 5834
    assert {(r["object_id"], r["action"], r["value_after"]) for r in log_rows(engine)} == {
        (A2, "unscale", "5834"),
        (G1, "unscale", "41670000"),
    }


def test_expand_is_opt_in_and_refused_by_name_on_google_ads(engine: sa.Engine, fakes: Any) -> None:
    graph, _ = fakes
    load(
        engine,
        [
            action("facebook", "adset", A1, "expand", C1),
            action("google_ads", "campaign", G1, "expand"),
        ],
    )
    planned = run(engine, fakes, yes=True)  # --yes without --expand
    assert planned[A1].outcome == SKIP and "--expand" in planned[A1].note
    assert planned[G1].outcome == SKIP and "Google Ads has no call that copies" in planned[G1].note
    assert copies(graph) == {} and log_rows(engine) == []
    dry = run(engine, fakes, yes=False, expand=True)
    assert dry[A1].outcome == CHANGE and copies(graph) == {}
    assert "copy adset -> PAUSED copy" in render(DAY, list(dry.values()), dry_run=True)


def test_expand_copies_the_adset_paused_once_per_day(engine: sa.Engine, fakes: Any) -> None:
    graph, _ = fakes
    load(engine, [action("facebook", "adset", A1, "expand", C1)])
    first = run(engine, fakes, yes=True, expand=True)
    made = copies(graph)
    assert list(made.values())[0]["copy_of"] == A1
    assert list(made.values())[0]["status"] == "PAUSED"
    assert list(made.values())[0]["campaign_id"] == C1
    copy_id = next(iter(made))
    assert first[A1].outcome == APPLIED and first[A1].after == copy_id
    post = [p for path, p in graph.requests_seen if path.endswith(f"{A1}/copies")]
    assert post == [{"deep_copy": "true", "status_option": "PAUSED"}]
    rows = log_rows(engine)
    assert [(r["field"], r["value_after"], r["status"], r["claim"]) for r in rows] == [
        ("copies", copy_id, "applied", 1)
    ]
    again = run(engine, fakes, yes=True, expand=True)
    assert again[A1].outcome == NO_CHANGE and "already copied" in again[A1].note
    assert len(copies(graph)) == 1 and len(log_rows(engine)) == 1


def test_expand_active_starts_the_copy(engine: sa.Engine, fakes: Any) -> None:
    graph, _ = fakes
    load(engine, [action("facebook", "adset", A1, "expand", C1)])
    clients = platforms(*fakes)
    clients["facebook"]._expand_active = True  # as [actions] expand_active = true wires it
    try:
        run_day(
            engine,
            DAY,
            clients,
            Settings(expand=True, expand_active=True),
            yes=True,
            applied_by="t",
        )
    finally:
        for c in clients.values():
            c.close()
    assert [v["status"] for v in copies(graph).values()] == ["ACTIVE"]
